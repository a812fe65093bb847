/* NVML hooks: memory queries report the container's limit, so nvidia-smi and pynvml inside the container see
 * total = limit, used = the container's accounted usage, free = min(limit - used, physical free). They read
 * the config on their own (no CUDA initialisation needed) and pass through unchanged for GPUs outside it.
 * Also answers the compute controller's "is anyone else on this GPU?" probe for soft limits. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "shim.h"

typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

#define VC_NVML_SUCCESS 0
#define VC_NVML_ERROR_UNINITIALIZED 1
#define VC_NVML_ERROR_INSUFFICIENT_SIZE 7

VC_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory);
VC_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory);

static struct {
    void *handle;
    nvmlReturn_t (*get_memory)(nvmlDevice_t, nvmlMemory_t *);
    nvmlReturn_t (*get_memory_v2)(nvmlDevice_t, nvmlMemory_v2_t *);
    nvmlReturn_t (*get_uuid)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*init)(void);
    nvmlReturn_t (*by_uuid)(const char *, nvmlDevice_t *);
    nvmlReturn_t (*procs)(nvmlDevice_t, unsigned int *, void *);
    int config_ok;
    vcuda_config_t config;
} vc_nvml;

static void vc_nvml_load(void) {
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_NODELETE);
    vc_nvml.handle = h;
#define VC_SYM(field, name) *(void **)&vc_nvml.field = h ? vc_real_dlsym(h, name) : vc_real_dlsym(RTLD_NEXT, name);
    VC_SYM(get_memory, "nvmlDeviceGetMemoryInfo")
    VC_SYM(get_memory_v2, "nvmlDeviceGetMemoryInfo_v2")
    VC_SYM(get_uuid, "nvmlDeviceGetUUID")
    VC_SYM(init, "nvmlInit_v2")
    VC_SYM(by_uuid, "nvmlDeviceGetHandleByUUID")
    VC_SYM(procs, "nvmlDeviceGetComputeRunningProcesses_v3")
#undef VC_SYM
    char why[512];
    vc_nvml.config_ok = vc_config_read(vc_config_path(), &vc_nvml.config, why, sizeof why) == 0;
    if (!vc_nvml.config_ok) vc_log_error("NVML memory figures not limited: %s", why);
}

static void vc_nvml_once(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, vc_nvml_load);
}

static int vc_nvml_record(nvmlDevice_t device) {
    char uuid[VCUDA_UUID_BYTES];
    if (!vc_nvml.config_ok || !vc_nvml.get_uuid || vc_nvml.get_uuid(device, uuid, sizeof uuid) != 0) return -1;
    for (uint32_t i = 0; i < vc_nvml.config.gpu_count; i++)
        if (strcasecmp(vc_nvml.config.gpus[i].uuid, uuid) == 0) return (int)i;
    return -1;
}

/* Limit, container usage and clamped free for record `rec`, given the physical free bytes. */
static void vc_nvml_view(int rec, unsigned long long phys_free, unsigned long long *total,
                         unsigned long long *free_b, unsigned long long *used) {
    char buf[512];
    const vcuda_usage_t *u = vc_usage_view(vc_usage_path(buf, sizeof buf));
    uint64_t limit = vc_nvml.config.gpus[rec].memory_limit;
    uint64_t in_use = u ? __atomic_load_n(&u->memory_used[rec], __ATOMIC_RELAXED) : 0;
    uint64_t room = in_use < limit ? limit - in_use : 0;
    *total = limit;
    *used = in_use < limit ? in_use : limit;
    *free_b = room < phys_free ? room : phys_free;
}

VC_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    vc_nvml_once();
    if (!vc_nvml.get_memory) return VC_NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t r = vc_nvml.get_memory(device, memory);
    int rec = r == VC_NVML_SUCCESS && memory ? vc_nvml_record(device) : -1;
    if (rec >= 0) vc_nvml_view(rec, memory->free, &memory->total, &memory->free, &memory->used);
    return r;
}

VC_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    vc_nvml_once();
    if (!vc_nvml.get_memory_v2) return VC_NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t r = vc_nvml.get_memory_v2(device, memory);
    int rec = r == VC_NVML_SUCCESS && memory ? vc_nvml_record(device) : -1;
    if (rec >= 0) {
        vc_nvml_view(rec, memory->free, &memory->total, &memory->free, &memory->used);
        memory->reserved = 0;
    }
    return r;
}

void *vc_nvml_hook_by_name(const char *name) {
    if (strcmp(name, "nvmlDeviceGetMemoryInfo") == 0) return (void *)&nvmlDeviceGetMemoryInfo;
    if (strcmp(name, "nvmlDeviceGetMemoryInfo_v2") == 0) return (void *)&nvmlDeviceGetMemoryInfo_v2;
    return NULL;
}

int vc_nvml_others_active(int rec) {
    vc_nvml_once();
    nvmlDevice_t dev;
    unsigned int count = 0;
    if (rec < 0 || !vc_nvml.init || !vc_nvml.by_uuid || !vc_nvml.procs || vc_nvml.init() != 0 ||
        vc_nvml.by_uuid(vc_state.config.gpus[rec].uuid, &dev) != 0)
        return 1; /* unknown: assume a neighbour, i.e. stay at the hard share */
    nvmlReturn_t r = vc_nvml.procs(dev, &count, NULL);
    if (r != VC_NVML_SUCCESS && r != VC_NVML_ERROR_INSUFFICIENT_SIZE) return 1;
    return (int)count > vc_usage_live_slots();
}
