/* Lazy, once-only initialisation: real driver, config, device mapping by UUID, usage file, throttle.
 * A process that never calls into CUDA never reaches this file. Failure is sticky and fails closed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shim.h"

vc_state_t vc_state;
static CUresult vc_init_result = CUDA_ERROR_NOT_INITIALIZED;

/* Path overrides from the environment exist only in the TEST build (-DVCUDA_TEST_BUILD, libvcuda-test.so).
 * The shipped library reads its fixed paths whatever the environment says: a tenant sets its own env, and
 * must not choose its own config (limits) or usage file (docs/security.md). */
#ifdef VCUDA_TEST_BUILD
const char *vc_env_path(const char *env_name, const char *fixed) {
    const char *p = getenv(env_name);
    return (p && *p) ? p : fixed;
}
#endif

const char *vc_config_path(void) { return vc_env_path(VCUDA_ENV_CONFIG_PATH, VCUDA_CONFIG_PATH); }

const char *vc_usage_path(char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", VCUDA_USAGE_DIR, VCUDA_USAGE_FILE);
    return vc_env_path(VCUDA_ENV_USAGE_PATH, buf);
}

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" hex part of a CUDA UUID, lower case. */
static void vc_format_uuid(const unsigned char b[16], char out[37]) {
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static int vc_find_record(const char *hex) {
    for (uint32_t i = 0; i < vc_state.config.gpu_count; i++) {
        const char *u = vc_state.config.gpus[i].uuid;
        const char *dash = strchr(u, '-'); /* skip "GPU-" / "MIG-" */
        if (dash && strcasecmp(dash + 1, hex) == 0) return (int)i;
    }
    return -1;
}

CUresult vc_map_devices(void) {
    int count = 0;
    CUresult r = vc_real.cuDeviceGetCount ? vc_real.cuDeviceGetCount(&count) : CUDA_ERROR_NOT_FOUND;
    if (r != CUDA_SUCCESS) return r;
    if (count > VC_MAX_DEVICES) count = VC_MAX_DEVICES;
    vc_state.device_count = count;
    for (int d = 0; d < count; d++) {
        CUuuid id;
        char hex[37];
        vc_device_t *dev = &vc_state.devices[d];
        dev->record = -1;
        if (vc_real.cuDeviceGetUuid_v2(&id, d) != CUDA_SUCCESS) continue;
        vc_format_uuid((const unsigned char *)id.bytes, hex);
        dev->record = vc_find_record(hex);
        if (dev->record < 0) {
            vc_log_error("CUDA device %d (GPU-%s) is not in the container's config: allocations refused", d, hex);
            continue;
        }
        const vcuda_gpu_record_t *g = &vc_state.config.gpus[dev->record];
        dev->memory_limit = g->memory_limit;
        dev->core_limit = g->core_limit;
        dev->soft_limit = g->soft_limit;
        vc_log_debug("device %d = %s: %llu bytes, core %u%%, soft %u%%", d, g->uuid,
                     (unsigned long long)g->memory_limit, g->core_limit, g->soft_limit);
    }
    return CUDA_SUCCESS;
}

/* fork in a multithreaded process: the child has only the forking thread, so a shim lock another thread held
 * at that moment would never be released there, and the child's first allocation, free or checkpoint would
 * wait forever. Every process-local lock is taken before fork (in the order the shim nests them: VMM mutex,
 * device mutexes, table spinlock) and released after it in parent and child. Registered after the real cuInit,
 * so a driver that forks a helper during its own initialisation is not affected. */
static void vc_fork_prepare(void) {
    vc_vmm_fork_lock();
    vc_compute_fork_lock();
    vc_table_fork_lock();
}

static void vc_fork_release(void) {
    vc_table_fork_unlock();
    vc_compute_fork_unlock();
    vc_vmm_fork_unlock();
}

static CUresult vc_init_steps(void) {
    char why[512];
    vc_load_driver();
    if (!vc_real.cuInit) {
        vc_log_error("cannot find the real CUDA driver (libcuda.so.1)");
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    CUresult r = vc_real.cuInit(0);
    if (r != CUDA_SUCCESS) return r;
    if (vc_config_read(vc_config_path(), &vc_state.config, why, sizeof why) != 0) {
        vc_log_error("refusing to initialise CUDA: %s", why);
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    r = vc_map_devices();
    if (r != CUDA_SUCCESS) return r;
    char buf[512];
    const char *usage = vc_usage_path(buf, sizeof buf);
    if (vc_usage_open(usage, vc_state.config.gpu_count) != 0) {
        vc_log_error("refusing to initialise CUDA: usage file %s unusable", usage);
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    vc_compute_init();
    pthread_atfork(vc_fork_prepare, vc_fork_release, vc_fork_release);
    return CUDA_SUCCESS;
}

static void vc_init_once(void) {
    vc_init_result = vc_init_steps();
    __atomic_store_n(&vc_state.ready, vc_init_result == CUDA_SUCCESS ? 1 : -1, __ATOMIC_RELEASE);
}

CUresult vc_ensure_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (VC_LIKELY(__atomic_load_n(&vc_state.ready, __ATOMIC_ACQUIRE) == 1)) return CUDA_SUCCESS;
    pthread_once(&once, vc_init_once);
    return vc_init_result;
}

VC_EXPORT CUresult cuInit(unsigned int flags) {
    (void)flags;
    return vc_ensure_init();
}
