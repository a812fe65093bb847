/* Library life cycle, the lock, config (re)loading and system-level queries of the FAKE NVML. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fake.h"

fake_node g_node;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_refcount;
static char g_wanted_path[4096];   /* set by fakeNvmlSetConfigPath; empty: env FAKE_NVML_CONFIG */
static char g_loaded_path[4096];
static struct stat g_loaded_stat;

/* Not part of NVML: lets one process switch node descriptions; the next nvmlInit loads the new one. */
void fakeNvmlSetConfigPath(const char *path) {
    pthread_mutex_lock(&g_lock);
    snprintf(g_wanted_path, sizeof g_wanted_path, "%s", path ? path : "");
    pthread_mutex_unlock(&g_lock);
}

nvmlReturn_t fake_enter(void) {
    pthread_mutex_lock(&g_lock);
    if (g_refcount == 0) return NVML_ERROR_UNINITIALIZED;
    fake_control_poll(1);
    return NVML_SUCCESS;
}

void fake_leave(void) { pthread_mutex_unlock(&g_lock); }

nvmlReturn_t fake_copy(char *dst, const char *src, unsigned int length) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

void fake_fix_handles(fake_node *node) {
    for (int i = 0; i < FAKE_MAX_GPUS; i++) {
        fake_gpu *gpu = &node->gpus[i];
        gpu->handle = (struct nvmlDevice_st){i, -1, -1};
        for (int g = 0; g < FAKE_MAX_GI; g++) {
            gpu->gis[g].handle = (struct nvmlGpuInstance_st){i, g};
            for (int c = 0; c < FAKE_MAX_CI; c++) {
                gpu->gis[g].cis[c].handle = (struct nvmlComputeInstance_st){i, g, c};
                gpu->gis[g].cis[c].device = (struct nvmlDevice_st){i, g, c};
            }
        }
    }
}

static const char *config_path(void) {
    if (g_wanted_path[0]) return g_wanted_path;
    return getenv("FAKE_NVML_CONFIG");
}

static int same_file(const char *path, const struct stat *st) {
    return !strcmp(path, g_loaded_path) && st->st_ino == g_loaded_stat.st_ino &&
           st->st_size == g_loaded_stat.st_size && st->st_mtim.tv_sec == g_loaded_stat.st_mtim.tv_sec &&
           st->st_mtim.tv_nsec == g_loaded_stat.st_mtim.tv_nsec;
}

/* Loads the description unless the same unchanged file is already loaded (MIG changes then survive). */
static nvmlReturn_t load_if_changed(void) {
    const char *path = config_path();
    struct stat st;
    if (!path || !path[0] || stat(path, &st) != 0) {
        fprintf(stderr, "fake NVML: no node description (set FAKE_NVML_CONFIG): %s\n", path ? path : "");
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    if (same_file(path, &st)) return NVML_SUCCESS;
    fake_node *node = calloc(1, sizeof *node);
    if (fake_load_config(path, node) != 0) {
        free(node);
        return NVML_ERROR_UNKNOWN;
    }
    g_node = *node;
    free(node);
    fake_fix_handles(&g_node);
    snprintf(g_loaded_path, sizeof g_loaded_path, "%s", path);
    g_loaded_stat = st;
    fake_events_reset();
    char control[4200];
    const char *env = getenv("FAKE_NVML_CONTROL");
    snprintf(control, sizeof control, "%s.ctl", path);
    fake_control_reset(env && env[0] && !g_wanted_path[0] ? env : control);
    fake_control_poll(0); /* replay earlier changes; XIDs from before this init are not delivered */
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t rc = load_if_changed();
    if (rc == NVML_SUCCESS) g_refcount++;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t rc = NVML_ERROR_UNINITIALIZED;
    if (g_refcount > 0) {
        g_refcount--;
        rc = NVML_SUCCESS;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient resources";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t driver_version(char *version, unsigned int length) {
    return fake_copy(version, g_node.driver_version, length);
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    FAKE_API(driver_version(version, length));
}

static nvmlReturn_t nvml_version(char *version, unsigned int length) {
    char text[96];
    snprintf(text, sizeof text, "%d.%s", g_node.cuda_version / 1000, g_node.driver_version);
    return fake_copy(version, text, length);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    FAKE_API(nvml_version(version, length));
}

static nvmlReturn_t cuda_version(int *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    *out = g_node.cuda_version;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { FAKE_API(cuda_version(v)); }
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { FAKE_API(cuda_version(v)); }

/* Resolves a device handle (physical or MIG) to its physical GPU; a lost GPU answers GPU_IS_LOST. */
nvmlReturn_t fake_gpu_of(nvmlDevice_t device, fake_gpu **gpu) {
    if (!device || device->gpu < 0 || device->gpu >= g_node.count) return NVML_ERROR_INVALID_ARGUMENT;
    fake_gpu *g = &g_node.gpus[device->gpu];
    if (device->gi >= 0) {
        if (device->gi >= FAKE_MAX_GI || device->ci < 0 || device->ci >= FAKE_MAX_CI) return NVML_ERROR_INVALID_ARGUMENT;
        if (!g->gis[device->gi].used || !g->gis[device->gi].cis[device->ci].used) return NVML_ERROR_NOT_FOUND;
    }
    if (g->lost) return NVML_ERROR_GPU_IS_LOST;
    *gpu = g;
    return NVML_SUCCESS;
}

fake_gpu *fake_gpu_by_uuid(const char *uuid) {
    for (int i = 0; i < g_node.count; i++)
        if (uuid && !strcmp(g_node.gpus[i].uuid, uuid)) return &g_node.gpus[i];
    return NULL;
}
