/* FAKE libcuda.so.1 for GPU-less shim tests (never a real driver). Built -Wl,-Bsymbolic so its own
 * cuGetProcAddress hands out its own functions, as the real driver does (contracts §7.3).
 *
 * Env: FAKE_CUDA_DEVICES (default 1), FAKE_CUDA_MEM_BYTES per device (default 8 GiB), FAKE_CUDA_KERNEL_NS
 * (simulated duration of each launch on a virtual GPU timeline, default 0), FAKE_CUDA_ALLOC_SLEEP_MS (sleep
 * inside every device allocation), FAKE_CUDA_LOG (file that receives one line per symbol lookup).
 * Device d has UUID bytes (d+1)*16 + k, k = 0..15.
 */
#define _GNU_SOURCE
#define CUDA_ENABLE_DEPRECATED 1
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#undef cuGetProcAddress
#undef cuDeviceGetUuid
#undef cuEventElapsedTime
CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d);
CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b);
#define FAKE_EXPORT __attribute__((visibility("default")))
#define FAKE_MAX_DEV 8

static int fake_devices = 1;
static uint64_t fake_mem = 8ULL << 30, fake_kernel_ns, fake_alloc_sleep_ms;
static uint64_t fake_used[FAKE_MAX_DEV];
static uint64_t fake_gpu_free_at; /* virtual GPU timeline: when the queued work completes */
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static __thread CUcontext fake_ctx;
static FILE *fake_log;
static int fake_inited;

/* Allocation sizes by id (handles are base + id * 4096). */
static uint64_t *fake_sizes;
static int *fake_devs;
static size_t fake_next_id = 1, fake_cap;
#define FAKE_BASE 0x100000000000ULL

static uint64_t fake_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

FAKE_EXPORT CUresult cuInit(unsigned int flags) {
    (void)flags;
    fake_devices = (int)env_u64("FAKE_CUDA_DEVICES", 1);
    fake_mem = env_u64("FAKE_CUDA_MEM_BYTES", 8ULL << 30);
    fake_kernel_ns = env_u64("FAKE_CUDA_KERNEL_NS", 0);
    fake_alloc_sleep_ms = env_u64("FAKE_CUDA_ALLOC_SLEEP_MS", 0);
    fake_inited = 1;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuDeviceGetCount(int *n) { *n = fake_devices; return fake_inited ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED; }
FAKE_EXPORT CUresult cuDeviceGet(CUdevice *d, int i) { *d = i; return i < fake_devices ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }

FAKE_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *u, CUdevice d) {
    for (int k = 0; k < 16; k++) u->bytes[k] = (char)((d + 1) * 16 + k);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d) { return cuDeviceGetUuid_v2(u, d); }
FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice d) { (void)d; *b = fake_mem; return CUDA_SUCCESS; }

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
    *c = (CUcontext)(uintptr_t)(d + 1);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuCtxSetCurrent(CUcontext c) { fake_ctx = c; return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuCtxGetCurrent(CUcontext *c) { *c = fake_ctx; return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice *d) {
    if (!fake_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    *d = (CUdevice)((uintptr_t)fake_ctx - 1);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuCtxSynchronize(void) {
    uint64_t until = __atomic_load_n(&fake_gpu_free_at, __ATOMIC_RELAXED), now = fake_now();
    if (until > now) {
        struct timespec ts = {(time_t)((until - now) / 1000000000ULL), (long)((until - now) % 1000000000ULL)};
        nanosleep(&ts, NULL);
    }
    return CUDA_SUCCESS;
}

static CUresult fake_alloc(uint64_t *handle, uint64_t bytes) {
    if (!fake_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    int d = (int)((uintptr_t)fake_ctx - 1);
    if (fake_alloc_sleep_ms) usleep((useconds_t)(fake_alloc_sleep_ms * 1000));
    pthread_mutex_lock(&fake_mu);
    if (fake_used[d] + bytes > fake_mem) {
        pthread_mutex_unlock(&fake_mu);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (fake_next_id >= fake_cap) {
        fake_cap = fake_cap ? fake_cap * 2 : 1 << 16;
        fake_sizes = realloc(fake_sizes, fake_cap * sizeof *fake_sizes);
        fake_devs = realloc(fake_devs, fake_cap * sizeof *fake_devs);
    }
    size_t id = fake_next_id++;
    fake_sizes[id] = bytes;
    fake_devs[id] = d;
    fake_used[d] += bytes;
    pthread_mutex_unlock(&fake_mu);
    *handle = FAKE_BASE + id * 4096;
    return CUDA_SUCCESS;
}

static CUresult fake_free(uint64_t handle) {
    size_t id = (size_t)((handle - FAKE_BASE) / 4096);
    pthread_mutex_lock(&fake_mu);
    CUresult r = CUDA_ERROR_INVALID_VALUE;
    if (handle >= FAKE_BASE && id < fake_next_id && fake_sizes[id] != UINT64_MAX) {
        fake_used[fake_devs[id]] -= fake_sizes[id];
        fake_sizes[id] = UINT64_MAX;
        r = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&fake_mu);
    return r;
}

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t b) { return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t w, size_t h, unsigned int e) {
    (void)e;
    *pitch = (w + 511) & ~(size_t)511;
    return fake_alloc((uint64_t *)p, *pitch * h);
}
FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *p, size_t b, unsigned int f) { (void)f; return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t b, CUstream s) { (void)s; return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t b, CUstream s) { (void)s; return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t b, CUmemoryPool pl, CUstream s) { (void)pl; (void)s; return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t b, CUmemoryPool pl, CUstream s) { (void)pl; (void)s; return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return fake_free(p); }
FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return fake_free(p); }
FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { (void)s; return fake_free(p); }
FAKE_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t b, const CUmemAllocationProp *p, unsigned long long f) {
    (void)p; (void)f;
    return fake_alloc((uint64_t *)h, b);
}
FAKE_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return fake_free(h); }
FAKE_EXPORT CUresult cuArrayCreate_v2(CUarray *a, const CUDA_ARRAY_DESCRIPTOR *d) {
    return fake_alloc((uint64_t *)a, d->Width * (d->Height ? d->Height : 1) * d->NumChannels * 4);
}
FAKE_EXPORT CUresult cuArray3DCreate_v2(CUarray *a, const CUDA_ARRAY3D_DESCRIPTOR *d) {
    return fake_alloc((uint64_t *)a, d->Width * (d->Height ? d->Height : 1) * (d->Depth ? d->Depth : 1) * d->NumChannels * 4);
}
FAKE_EXPORT CUresult cuArrayDestroy(CUarray a) { return fake_free((uint64_t)(uintptr_t)a); }
FAKE_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *a, const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int l) {
    (void)l;
    return fake_alloc((uint64_t *)a, d->Width * (d->Height ? d->Height : 1) * d->NumChannels * 4 * 2);
}
FAKE_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray a) { return fake_free((uint64_t)(uintptr_t)a); }

FAKE_EXPORT CUresult cuMemGetInfo_v2(size_t *f, size_t *t) {
    if (!fake_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    int d = (int)((uintptr_t)fake_ctx - 1);
    *f = fake_mem - fake_used[d];
    *t = fake_mem;
    return CUDA_SUCCESS;
}

/* Launches append FAKE_CUDA_KERNEL_NS of work to one virtual GPU timeline. */
static CUresult fake_launch(void) {
    if (!fake_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (fake_kernel_ns) {
        uint64_t now = fake_now();
        pthread_mutex_lock(&fake_mu);
        uint64_t start = fake_gpu_free_at > now ? fake_gpu_free_at : now;
        __atomic_store_n(&fake_gpu_free_at, start + fake_kernel_ns, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&fake_mu);
        /* Like the real driver, a launch blocks while the queue already holds ~1024 kernels. */
        uint64_t backlog = start + fake_kernel_ns - now, room = 1024 * fake_kernel_ns;
        if (backlog > room) {
            uint64_t ns = backlog - room;
            struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
            nanosleep(&ts, NULL);
        }
    }
    return CUDA_SUCCESS;
}
#define FAKE_LAUNCH_ARGS CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, \
    unsigned int by, unsigned int bz, unsigned int sh, CUstream s
FAKE_EXPORT CUresult cuLaunchKernel(FAKE_LAUNCH_ARGS, void **p, void **e) { (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s; (void)p; (void)e; return fake_launch(); }
FAKE_EXPORT CUresult cuLaunchKernel_ptsz(FAKE_LAUNCH_ARGS, void **p, void **e) { (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s; (void)p; (void)e; return fake_launch(); }
FAKE_EXPORT CUresult cuLaunchCooperativeKernel(FAKE_LAUNCH_ARGS, void **p) { (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s; (void)p; return fake_launch(); }
FAKE_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(FAKE_LAUNCH_ARGS, void **p) { (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s; (void)p; return fake_launch(); }
FAKE_EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *l, unsigned int n, unsigned int fl) { (void)l; (void)n; (void)fl; return fake_launch(); }
FAKE_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **p, void **e) { (void)c; (void)f; (void)p; (void)e; return fake_launch(); }
FAKE_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **p, void **e) { (void)c; (void)f; (void)p; (void)e; return fake_launch(); }
FAKE_EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s) { (void)g; (void)s; return fake_launch(); }
FAKE_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) { (void)g; (void)s; return fake_launch(); }

/* Events carry the virtual GPU time at which the work queued before them completes. */
FAKE_EXPORT CUresult cuEventCreate(CUevent *e, unsigned int f) {
    (void)f;
    *e = (CUevent)calloc(1, sizeof(uint64_t));
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventDestroy_v2(CUevent e) { free(e); return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuEventRecord(CUevent e, CUstream s) {
    (void)s;
    uint64_t now = fake_now(), busy = __atomic_load_n(&fake_gpu_free_at, __ATOMIC_RELAXED);
    *(uint64_t *)e = busy > now ? busy : now;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventQuery(CUevent e) { return fake_now() >= *(uint64_t *)e ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY; }
FAKE_EXPORT CUresult cuEventSynchronize(CUevent e) {
    uint64_t at = *(uint64_t *)e, now = fake_now();
    if (at > now) {
        struct timespec ts = {(time_t)((at - now) / 1000000000ULL), (long)((at - now) % 1000000000ULL)};
        nanosleep(&ts, NULL);
    }
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) {
    *ms = (float)((double)((int64_t)(*(uint64_t *)b - *(uint64_t *)a)) / 1e6);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) { return cuEventElapsedTime_v2(ms, a, b); }

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
FAKE_EXPORT CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);

#define FAKE_SYMBOLS(X)                                                                                      \
    X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetUuid) X(cuDeviceGetUuid_v2) \
    X(cuDeviceTotalMem_v2) X(cuDevicePrimaryCtxRetain) X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxGetDevice) \
    X(cuCtxSynchronize) X(cuMemAlloc_v2) X(cuMemAllocPitch_v2) X(cuMemAllocManaged) X(cuMemAllocAsync)       \
    X(cuMemAllocAsync_ptsz) X(cuMemAllocFromPoolAsync) X(cuMemAllocFromPoolAsync_ptsz) X(cuMemFree_v2)        \
    X(cuMemFreeAsync) X(cuMemFreeAsync_ptsz) X(cuMemCreate) X(cuMemRelease) X(cuArrayCreate_v2)               \
    X(cuArray3DCreate_v2) X(cuArrayDestroy) X(cuMipmappedArrayCreate) X(cuMipmappedArrayDestroy)              \
    X(cuMemGetInfo_v2) X(cuLaunchKernel) X(cuLaunchKernel_ptsz) X(cuLaunchCooperativeKernel)                  \
    X(cuLaunchCooperativeKernel_ptsz) X(cuLaunchCooperativeKernelMultiDevice) X(cuLaunchKernelEx)             \
    X(cuLaunchKernelEx_ptsz) X(cuGraphLaunch) X(cuGraphLaunch_ptsz) X(cuEventCreate) X(cuEventDestroy_v2)     \
    X(cuEventRecord) X(cuEventQuery) X(cuEventSynchronize) X(cuEventElapsedTime) X(cuEventElapsedTime_v2)     \
    X(cuGetProcAddress) X(cuGetProcAddress_v2)

static const struct {
    const char *name;
    void *fn;
} fake_table[] = {
#define FAKE_ENTRY(n) {#n, (void *)&n},
    FAKE_SYMBOLS(FAKE_ENTRY)
#undef FAKE_ENTRY
};

static void *fake_find(const char *name) {
    for (size_t i = 0; i < sizeof fake_table / sizeof fake_table[0]; i++)
        if (strcmp(fake_table[i].name, name) == 0) return fake_table[i].fn;
    return NULL;
}

/* Base name + version + flags -> the symbol the real driver would pick: _ptsz for per-thread lookups, the
 * _v2 family from CUDA 3.2 (cuGetProcAddress_v2 from 12.0), else the base symbol. */
static void *fake_resolve(const char *sym, int version, cuuint64_t flags) {
    char name[160];
    void *fn = NULL;
    if (strcmp(sym, "cuGetProcAddress") == 0)
        fn = version >= 12000 ? fake_find("cuGetProcAddress_v2") : fake_find("cuGetProcAddress");
    else if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) {
        snprintf(name, sizeof name, "%s_ptsz", sym);
        fn = fake_find(name);
    }
    if (!fn && version >= 3020 && strcmp(sym, "cuGetProcAddress") != 0) {
        snprintf(name, sizeof name, "%s_v2", sym);
        fn = fake_find(name);
    }
    if (!fn) fn = fake_find(sym);
    if (!fake_log && getenv("FAKE_CUDA_LOG")) fake_log = fopen(getenv("FAKE_CUDA_LOG"), "a");
    if (fake_log) {
        fprintf(fake_log, "lookup %s %d %llu -> %s\n", sym, version, (unsigned long long)flags, fn ? "found" : "missing");
        fflush(fake_log);
    }
    return fn;
}

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *status) {
    *pfn = fake_resolve(sym, version, flags);
    if (status) *status = *pfn ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

FAKE_EXPORT CUresult cuGetProcAddress(const char *sym, void **pfn, int version, cuuint64_t flags) {
    *pfn = fake_resolve(sym, version, flags);
    return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
