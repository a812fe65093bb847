/* FAKE libnvidia-ml.so.1 for the shim's NVML hook tests (never a real NVML). One GPU whose UUID matches
 * fake CUDA device 0, FAKE_NVML_MEM_BYTES of memory (default 8 GiB, 1 GiB used by "others"), and
 * FAKE_NVML_PROCS compute processes (default 0). Built -Wl,-Bsymbolic like the fake driver. */
#include <stdlib.h>
#include <string.h>

#define E __attribute__((visibility("default")))
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
static const char uuid[] = "GPU-10111213-1415-1617-1819-1a1b1c1d1e1f";
static int dev_token;

static unsigned long long mem(void) {
    const char *v = getenv("FAKE_NVML_MEM_BYTES");
    return v ? strtoull(v, NULL, 10) : 8ULL << 30;
}
E int nvmlInit_v2(void) { return 0; }
E int nvmlInitWithFlags(unsigned int f) { (void)f; return 0; }
E int nvmlShutdown(void) { return 0; }
E const char *nvmlErrorString(int r) { return r ? "fake NVML error" : "Success"; }
E int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 1; return 0; }
E int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) { *h = &dev_token; return i == 0 ? 0 : 2; }
E int nvmlDeviceGetHandleByUUID(const char *u, void **h) { *h = &dev_token; return strcmp(u, uuid) ? 6 : 0; }
E int nvmlDeviceGetUUID(void *h, char *buf, unsigned int n) {
    (void)h;
    if (n < sizeof uuid) return 7;
    memcpy(buf, uuid, sizeof uuid);
    return 0;
}
E int nvmlDeviceGetMemoryInfo(void *h, nvmlMemory_t *m) {
    (void)h;
    m->total = mem();
    m->used = 1ULL << 30;
    m->free = m->total - m->used;
    return 0;
}
E int nvmlDeviceGetMemoryInfo_v2(void *h, nvmlMemory_v2_t *m) {
    (void)h;
    m->total = mem();
    m->reserved = 0;
    m->used = 1ULL << 30;
    m->free = m->total - m->used;
    return 0;
}
E int nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *count, void *infos) {
    (void)h;
    (void)infos;
    const char *v = getenv("FAKE_NVML_PROCS");
    unsigned int n = v ? (unsigned int)atoi(v) : 0;
    int r = n > *count ? 7 : 0;
    *count = n;
    return r;
}
