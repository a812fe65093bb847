/* FAKE libcuda.so.1 for GPU-less shim tests (never a real driver). Built -Wl,-Bsymbolic so its own
 * cuGetProcAddress hands out its own functions, as the real driver does (docs/shim.md, "Loading and interposition").
 *
 * Env: FAKE_CUDA_DEVICES (default 1), FAKE_CUDA_MEM_BYTES per device (default 8 GiB), FAKE_CUDA_KERNEL_NS
 * (simulated duration of each launch on a virtual GPU timeline, default 0), FAKE_CUDA_ALLOC_SLEEP_MS (sleep
 * inside every device allocation), FAKE_CUDA_LOG (file that receives one line per symbol lookup),
 * FAKE_CUDA_FREE_YIELD (yield the CPU after every free, once the address can already be handed out again),
 * FAKE_CUDA_TRAMPOLINES=0 (cuGetProcAddress returns the exported symbols instead of internal entry points).
 * FAKE_CUDA_TIMELINE=<file> (one GPU timeline per device shared by every process using that file).
 * Device d has UUID bytes (d+1)*16 + k, k = 0..15.
 *
 * Unkind behaviours of the real driver it reproduces (docs/shim.md, "Tests and figures"): freed addresses and handles come back at
 * once (LIFO); several contexts per device (primary, cuCtxCreate), each owning its allocations, which die with
 * cuCtxDestroy, cuDevicePrimaryCtxReset or the last cuDevicePrimaryCtxRelease; stream-ordered allocations use
 * the stream's context, current or not; cuMemRelease of a mapped handle frees nothing until the last
 * cuMemUnmap; cuGetProcAddress hands out internal trampolines, not the exported addresses; and some symbols
 * are missing (cuLaunchCooperativeKernelMultiDevice, gone in CUDA 13); stream capture with the real error
 * codes, events bound to their context, spinning cuEventSynchronize by default, one GPU timeline shared by
 * processes (the compute section below; processor sharing between processes stands for round-robin slices);
 * the v1 cuDevicePrimaryCtxReset/Release still exported, cuGetProcAddress giving their _v2 only from 11000.
 * Kinder than the real one on purpose: its own locks survive fork (a child's hang is then the shim's), and
 * it counts live events (fake_cuda_live_events) so tests can see leaks.
 */
#define _GNU_SOURCE
#define CUDA_ENABLE_DEPRECATED 1
#include <cuda.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#undef cuGetProcAddress
#undef cuDeviceGetUuid
#undef cuEventElapsedTime
#undef cuMemAlloc
CUresult cuMemAlloc(unsigned int *p, unsigned int b); /* the v1 entry point (32-bit), still exported */
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
#define FAKE_CTX_STACK 8
static __thread CUcontext fake_ctx_stack[FAKE_CTX_STACK];
static __thread int fake_ctx_depth;
static FILE *fake_log;
static int fake_inited;

/* ---- Memory and contexts (memory engineer's section). Allocations by id (handles are base + id * 4096);
 * freed ids are handed out again last-in first-out, as the real driver reuses addresses. */
typedef struct fake_context {
    int dev, primary, refs, alive;
} fake_context_t;
static fake_context_t fake_primary[FAKE_MAX_DEV];

typedef struct fake_allocation {
    uint64_t size; /* UINT64_MAX: free */
    int dev;
    unsigned maps;     /* VMM handle: live mappings */
    int released;      /* VMM handle: released while mapped */
    fake_context_t *ctx; /* owner; NULL for VMM handles */
} fake_allocation_t;
static fake_allocation_t *fake_allocs;
static size_t *fake_free_ids, fake_nfree;
static size_t fake_next_id = 1, fake_cap;
#define FAKE_BASE 0x100000000000ULL
#define FAKE_VA_BASE 0x600000000000ULL
static uint64_t fake_va_next = FAKE_VA_BASE;
#define FAKE_MAX_MAPS 4096
static struct { uint64_t va, size; size_t id; } fake_maps[FAKE_MAX_MAPS];

static uint64_t fake_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

/* The real driver survives a fork of a multithreaded process: a child's calls return (with an error on real
 * hardware) instead of waiting on a lock some other parent thread held. The fake's two leaf locks are taken
 * around fork so its own locks never hang a child; a hang in a forked child is then the shim's. */
static pthread_mutex_t fake_cap_mu;
static void fake_fork_lock(void) {
    pthread_mutex_lock(&fake_mu);
    pthread_mutex_lock(&fake_cap_mu);
}
static void fake_fork_unlock(void) {
    pthread_mutex_unlock(&fake_cap_mu);
    pthread_mutex_unlock(&fake_mu);
}
__attribute__((constructor)) static void fake_at_load(void) {
    pthread_atfork(fake_fork_lock, fake_fork_unlock, fake_fork_unlock);
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

static int fake_ctx_dev(CUcontext c) { return c ? ((fake_context_t *)c)->dev : -1; }
static void fake_free_ctx_allocs(fake_context_t *c);

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
    if (d < 0 || d >= fake_devices || d >= FAKE_MAX_DEV) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&fake_mu);
    fake_context_t *p = &fake_primary[d];
    *p = (fake_context_t){.dev = d, .primary = 1, .refs = p->refs + 1, .alive = 1};
    pthread_mutex_unlock(&fake_mu);
    *c = (CUcontext)p;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active) {
    if (d < 0 || d >= fake_devices || d >= FAKE_MAX_DEV) return CUDA_ERROR_INVALID_DEVICE;
    *flags = 0;
    *active = __atomic_load_n(&fake_primary[d].alive, __ATOMIC_RELAXED);
    return CUDA_SUCCESS;
}
static void fake_ctx_die(fake_context_t *c) {
    pthread_mutex_lock(&fake_mu);
    fake_free_ctx_allocs(c);
    c->alive = 0;
    c->refs = 0;
    pthread_mutex_unlock(&fake_mu);
    if (fake_ctx == (CUcontext)c) fake_ctx = NULL;
}
FAKE_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    if (d < 0 || d >= fake_devices || d >= FAKE_MAX_DEV || !fake_primary[d].alive) return CUDA_ERROR_INVALID_CONTEXT;
    if (__atomic_sub_fetch(&fake_primary[d].refs, 1, __ATOMIC_RELAXED) == 0) fake_ctx_die(&fake_primary[d]);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d) {
    if (d < 0 || d >= fake_devices || d >= FAKE_MAX_DEV) return CUDA_ERROR_INVALID_DEVICE;
    fake_ctx_die(&fake_primary[d]);
    return CUDA_SUCCESS;
}
/* The v1 entry points (before CUDA 11), still exported by the real driver for old runtimes. */
#undef cuDevicePrimaryCtxRelease
#undef cuDevicePrimaryCtxReset
CUresult cuDevicePrimaryCtxRelease(CUdevice d);
CUresult cuDevicePrimaryCtxReset(CUdevice d);
FAKE_EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return cuDevicePrimaryCtxRelease_v2(d); }
FAKE_EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice d) { return cuDevicePrimaryCtxReset_v2(d); }
FAKE_EXPORT CUresult cuCtxCreate_v4(CUcontext *c, CUctxCreateParams *params, unsigned int flags, CUdevice d) {
    (void)params; (void)flags;
    if (d < 0 || d >= fake_devices) return CUDA_ERROR_INVALID_DEVICE;
    fake_context_t *n = calloc(1, sizeof *n); /* never freed: a destroyed context stays invalid */
    *n = (fake_context_t){.dev = d, .refs = 1, .alive = 1};
    *c = fake_ctx = (CUcontext)n;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuCtxDestroy_v2(CUcontext c) {
    fake_context_t *x = (fake_context_t *)c;
    if (!x || !x->alive || x->primary) return CUDA_ERROR_INVALID_CONTEXT;
    fake_ctx_die(x);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuCtxSetCurrent(CUcontext c) { fake_ctx = c; return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuCtxGetCurrent(CUcontext *c) { *c = fake_ctx; return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext c) {
    if (fake_ctx_depth >= FAKE_CTX_STACK) return CUDA_ERROR_INVALID_VALUE;
    fake_ctx_stack[fake_ctx_depth++] = fake_ctx;
    fake_ctx = c;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *c) {
    if (c) *c = fake_ctx;
    fake_ctx = fake_ctx_depth ? fake_ctx_stack[--fake_ctx_depth] : NULL;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice *d) {
    if (!fake_ctx || !((fake_context_t *)fake_ctx)->alive) return CUDA_ERROR_INVALID_CONTEXT;
    *d = (CUdevice)fake_ctx_dev(fake_ctx);
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

static size_t fake_new_id(void) {
    if (fake_nfree) return fake_free_ids[--fake_nfree];
    if (fake_next_id >= fake_cap) {
        fake_cap = fake_cap ? fake_cap * 2 : 1 << 16;
        fake_allocs = realloc(fake_allocs, fake_cap * sizeof *fake_allocs);
        fake_free_ids = realloc(fake_free_ids, fake_cap * sizeof *fake_free_ids);
    }
    return fake_next_id++;
}

/* One allocation of `bytes` on device `d` owned by context `owner` (NULL: a VMM handle). */
static CUresult fake_alloc_on(uint64_t *handle, uint64_t bytes, int d, fake_context_t *owner) {
    if (d < 0 || d >= fake_devices) return CUDA_ERROR_INVALID_DEVICE;
    if (fake_alloc_sleep_ms) usleep((useconds_t)(fake_alloc_sleep_ms * 1000));
    pthread_mutex_lock(&fake_mu);
    if (fake_used[d] + bytes > fake_mem) {
        pthread_mutex_unlock(&fake_mu);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    size_t id = fake_new_id();
    fake_allocs[id] = (fake_allocation_t){.size = bytes, .dev = d, .ctx = owner};
    fake_used[d] += bytes;
    pthread_mutex_unlock(&fake_mu);
    *handle = FAKE_BASE + id * 4096;
    return CUDA_SUCCESS;
}

static CUresult fake_alloc(uint64_t *handle, uint64_t bytes) {
    fake_context_t *c = (fake_context_t *)fake_ctx;
    if (!c || !c->alive) return CUDA_ERROR_INVALID_CONTEXT;
    return fake_alloc_on(handle, bytes, c->dev, c);
}

static void fake_release_id(size_t id) { /* under fake_mu */
    fake_used[fake_allocs[id].dev] -= fake_allocs[id].size;
    fake_allocs[id].size = UINT64_MAX;
    fake_free_ids[fake_nfree++] = id;
}

static int fake_live_id(uint64_t handle, size_t *id) {
    *id = (size_t)((handle - FAKE_BASE) / 4096);
    return handle >= FAKE_BASE && *id < fake_next_id && fake_allocs[*id].size != UINT64_MAX;
}

static CUresult fake_free(uint64_t handle) {
    static int yield = -1;
    size_t id;
    if (yield < 0) yield = getenv("FAKE_CUDA_FREE_YIELD") != NULL;
    pthread_mutex_lock(&fake_mu);
    CUresult r = CUDA_ERROR_INVALID_VALUE;
    if (fake_live_id(handle, &id) && !fake_allocs[id].released) {
        if (fake_allocs[id].maps) fake_allocs[id].released = 1; /* VMM: freed at the last unmap */
        else fake_release_id(id);
        r = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&fake_mu);
    if (yield) sched_yield(); /* FAKE_CUDA_FREE_YIELD: the address is free before the caller runs on */
    return r;
}

static void fake_free_ctx_allocs(fake_context_t *c) { /* under fake_mu */
    for (size_t id = 1; id < fake_next_id; id++)
        if (fake_allocs[id].size != UINT64_MAX && fake_allocs[id].ctx == c) fake_release_id(id);
}

/* ---- Streams (memory engineer's section; extend fake_stream_t rather than replacing it): a stream remembers
 * the context it was created in; stream-ordered allocations use that context, current or not. */
typedef struct fake_stream {
    fake_context_t *ctx;
} fake_stream_t;
static fake_context_t *fake_stream_ctx(CUstream s) {
    if (s && s != CU_STREAM_LEGACY && s != CU_STREAM_PER_THREAD) return ((fake_stream_t *)s)->ctx;
    return (fake_context_t *)fake_ctx;
}
FAKE_EXPORT CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
    (void)flags;
    if (!fake_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    fake_stream_t *st = calloc(1, sizeof *st);
    st->ctx = (fake_context_t *)fake_ctx;
    *s = (CUstream)st;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuStreamGetCtx(CUstream s, CUcontext *c) {
    *c = (CUcontext)fake_stream_ctx(s);
    return *c ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}
FAKE_EXPORT CUresult cuStreamDestroy_v2(CUstream s) { free(s); return CUDA_SUCCESS; }
static CUresult fake_alloc_stream(uint64_t *handle, uint64_t bytes, CUstream s) {
    fake_context_t *c = fake_stream_ctx(s);
    if (!c || !c->alive) return CUDA_ERROR_INVALID_CONTEXT;
    return fake_alloc_on(handle, bytes, c->dev, c);
}

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t b) { return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemAlloc(unsigned int *p, unsigned int b) {
    uint64_t h;
    CUresult r = fake_alloc(&h, b);
    *p = (unsigned int)h;
    return r;
}
FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t w, size_t h, unsigned int e) {
    (void)e;
    *pitch = (w + 511) & ~(size_t)511;
    return fake_alloc((uint64_t *)p, *pitch * h);
}
FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *p, size_t b, unsigned int f) { (void)f; return fake_alloc((uint64_t *)p, b); }
FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t b, CUstream s) { return fake_alloc_stream((uint64_t *)p, b, s); }
FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t b, CUstream s) { return fake_alloc_stream((uint64_t *)p, b, s); }
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t b, CUmemoryPool pl, CUstream s) { (void)pl; return fake_alloc_stream((uint64_t *)p, b, s); }
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t b, CUmemoryPool pl, CUstream s) { (void)pl; return fake_alloc_stream((uint64_t *)p, b, s); }
FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return fake_free(p); }
FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return fake_free(p); }
FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { (void)s; return fake_free(p); }
FAKE_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t b, const CUmemAllocationProp *p, unsigned long long f) {
    (void)f;
    if (!p || p->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    return fake_alloc_on((uint64_t *)h, b, p->location.id, NULL); /* needs no current context */
}
FAKE_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return fake_free(h); }
FAKE_EXPORT CUresult cuMemAddressReserve(CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr, unsigned long long f) {
    (void)align; (void)addr; (void)f;
    *p = __atomic_fetch_add(&fake_va_next, (size + 0x1fffff) & ~(uint64_t)0x1fffff, __ATOMIC_RELAXED);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuMemAddressFree(CUdeviceptr p, size_t size) { (void)p; (void)size; return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuMemMap(CUdeviceptr p, size_t size, size_t offset, CUmemGenericAllocationHandle h, unsigned long long f) {
    (void)offset; (void)f;
    size_t id, slot;
    CUresult r = CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&fake_mu);
    for (slot = 0; slot < FAKE_MAX_MAPS && fake_maps[slot].size; slot++) {}
    if (slot < FAKE_MAX_MAPS && fake_live_id(h, &id) && !fake_allocs[id].released) {
        fake_maps[slot].va = p;
        fake_maps[slot].size = size;
        fake_maps[slot].id = id;
        fake_allocs[id].maps++;
        r = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&fake_mu);
    return r;
}
FAKE_EXPORT CUresult cuMemUnmap(CUdeviceptr p, size_t size) {
    pthread_mutex_lock(&fake_mu);
    for (size_t slot = 0; slot < FAKE_MAX_MAPS; slot++) {
        if (!fake_maps[slot].size || fake_maps[slot].va < p || fake_maps[slot].va >= p + size) continue;
        size_t id = fake_maps[slot].id;
        fake_maps[slot].size = 0;
        if (--fake_allocs[id].maps == 0 && fake_allocs[id].released) fake_release_id(id);
    }
    pthread_mutex_unlock(&fake_mu);
    return CUDA_SUCCESS;
}
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
    int d = fake_ctx_dev(fake_ctx);
    *f = fake_mem - fake_used[d];
    *t = fake_mem;
    return CUDA_SUCCESS;
}

/* ---- Launches, events, stream capture and graphs (compute engineer's section) -------------------------------
 * One simulated GPU per device: with FAKE_CUDA_TIMELINE=<file> it lives in that shared file, so every process
 * on the "node" shares the same GPU (processor sharing between processes with work queued, as round-robin
 * time-slicing between contexts does); without it, per process.
 * A launch adds FAKE_CUDA_KERNEL_NS x gridDimX of work (gridDimX 0 counts as 1). Real-driver rules kept:
 * - events belong to the context current at creation: recording one on another context's stream fails with
 *   CUDA_ERROR_INVALID_HANDLE, and every use after its context died with CUDA_ERROR_CONTEXT_IS_DESTROYED;
 * - cuEventSynchronize spins a core unless the event was created with CU_EVENT_BLOCKING_SYNC;
 * - stream capture (cuStreamBeginCapture_v2, created streams only): launches and event records on a
 *   capturing stream are captured, not run; an event last recorded in a capture fails queries with
 *   CUDA_ERROR_CAPTURED_EVENT; while a capture is active, a thread whose capture mode is not relaxed that
 *   owns a (non-relaxed) capture, or any such thread while another thread holds a GLOBAL-mode capture, gets
 *   CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED from cuEventQuery/cuEventSynchronize/cuStreamSynchronize and the
 *   captures are invalidated (cuStreamEndCapture then returns CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
 *   cuStreamIsCapturing on the legacy stream during such a capture returns CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
 * - a graph launch runs the whole captured work at once. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#undef cuStreamBeginCapture
CUresult cuStreamBeginCapture(CUstream s); /* the v1 entry point (global mode) */

/* The GPU: per device, processor sharing between the processes with work queued (each process is one context;
 * time-slicing with infinitely small slices, the model the shim's equal split assumes), in a file shared by
 * every process that names it in FAKE_CUDA_TIMELINE (process-private otherwise). Each process's executed
 * amount grows linearly between breakpoints, which are kept so an event's completion time is exact. */
#define FAKE_PS_PROCS 32
#define FAKE_PS_MARKS 64
typedef struct fake_ps_proc {
    uint64_t pid; /* 0 = free */
    uint64_t submitted, executed;
    uint64_t marks, mark_t[FAKE_PS_MARKS], mark_e[FAKE_PS_MARKS]; /* (time, executed) breakpoints */
} fake_ps_proc_t;
typedef struct fake_ps_dev {
    uint64_t lock, last_ns;
    fake_ps_proc_t procs[FAKE_PS_PROCS];
} fake_ps_dev_t;

static fake_ps_dev_t fake_local_gpus[FAKE_MAX_DEV];
static fake_ps_dev_t *fake_gpus = fake_local_gpus;
static pthread_once_t fake_timeline_once = PTHREAD_ONCE_INIT;
static int fake_my_slot[FAKE_MAX_DEV];

static void fake_timeline_open(void) {
    const char *path = getenv("FAKE_CUDA_TIMELINE");
    int fd = path && *path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666) : -1;
    for (int d = 0; d < FAKE_MAX_DEV; d++) fake_my_slot[d] = -1;
    if (fd < 0) return;
    size_t size = sizeof fake_local_gpus;
    if (ftruncate(fd, (off_t)size) == 0) {
        void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED) fake_gpus = m;
    }
    close(fd);
}

static fake_ps_dev_t *fake_gpu_lock(int d) {
    pthread_once(&fake_timeline_once, fake_timeline_open);
    fake_ps_dev_t *g = &fake_gpus[d];
    uint64_t free_ = 0;
    while (!__atomic_compare_exchange_n(&g->lock, &free_, (uint64_t)getpid(), 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        free_ = 0;
        sched_yield();
    }
    return g;
}
static void fake_gpu_unlock(fake_ps_dev_t *g) { __atomic_store_n(&g->lock, 0, __ATOMIC_RELEASE); }

static void fake_mark(fake_ps_proc_t *p, uint64_t t) {
    p->mark_t[p->marks % FAKE_PS_MARKS] = t;
    p->mark_e[p->marks % FAKE_PS_MARKS] = p->executed;
    p->marks++;
}

/* Runs the GPU up to `now`: the processes with work queued share it equally. */
static void fake_advance(fake_ps_dev_t *g, uint64_t now) {
    uint64_t t = g->last_ns, dt = now > t ? now - t : 0;
    g->last_ns = now > t ? now : t;
    while (dt > 0) {
        uint64_t active = 0, least = UINT64_MAX;
        for (int i = 0; i < FAKE_PS_PROCS; i++) {
            fake_ps_proc_t *p = &g->procs[i];
            if (p->pid && p->submitted > p->executed) {
                active++;
                if (p->submitted - p->executed < least) least = p->submitted - p->executed;
            }
        }
        if (!active) return;
        uint64_t step = least * active <= dt ? least : dt / active, span = least * active <= dt ? least * active : dt;
        if (step == 0) return;
        t += span;
        dt -= span;
        for (int i = 0; i < FAKE_PS_PROCS; i++) {
            fake_ps_proc_t *p = &g->procs[i];
            if (p->pid && p->submitted > p->executed) {
                p->executed += step;
                fake_mark(p, t);
            }
        }
    }
}

/* This process's entry on device d (claimed on first use; entries of dead processes are reused). */
static fake_ps_proc_t *fake_me(fake_ps_dev_t *g, int d) {
    if (fake_my_slot[d] >= 0 && g->procs[fake_my_slot[d]].pid == (uint64_t)getpid()) return &g->procs[fake_my_slot[d]];
    for (int i = 0; i < FAKE_PS_PROCS; i++) {
        fake_ps_proc_t *p = &g->procs[i];
        if (!p->pid || (kill((pid_t)p->pid, 0) != 0 && errno == ESRCH)) {
            memset(p, 0, sizeof *p);
            p->pid = (uint64_t)getpid();
            fake_my_slot[d] = i;
            return p;
        }
    }
    return &g->procs[0];
}

/* When the work up to position `pos` of process entry p completed (p->executed >= pos). */
static uint64_t fake_done_at(const fake_ps_proc_t *p, uint64_t pos, uint64_t now) {
    uint64_t first = p->marks > FAKE_PS_MARKS ? p->marks - FAKE_PS_MARKS : 0;
    for (uint64_t j = first; j < p->marks; j++) {
        uint64_t t1 = p->mark_t[j % FAKE_PS_MARKS], e1 = p->mark_e[j % FAKE_PS_MARKS];
        if (e1 < pos) continue;
        if (j == first) return t1;
        uint64_t t0 = p->mark_t[(j - 1) % FAKE_PS_MARKS], e0 = p->mark_e[(j - 1) % FAKE_PS_MARKS];
        return e1 > e0 ? t0 + (uint64_t)((double)(pos - e0) * (double)(t1 - t0) / (double)(e1 - e0)) : t1;
    }
    return now;
}

/* Queues `work` ns on device d; returns the amount of this process's work still queued. */
static uint64_t fake_enqueue(int d, uint64_t work) {
    fake_ps_dev_t *g = fake_gpu_lock(d);
    uint64_t now = fake_now();
    fake_advance(g, now);
    fake_ps_proc_t *p = fake_me(g, d);
    if (p->submitted == p->executed) fake_mark(p, now); /* a busy period starts now */
    p->submitted += work;
    uint64_t backlog = p->submitted - p->executed;
    fake_gpu_unlock(g);
    uint64_t end = now + backlog;
    if (end > fake_gpu_free_at) __atomic_store_n(&fake_gpu_free_at, end, __ATOMIC_RELAXED); /* cuCtxSynchronize */
    return backlog;
}

/* Position and completion of this process's queued work on device d. */
static int fake_position(int d, uint64_t pos, uint64_t *done_at, uint64_t *backlog) {
    fake_ps_dev_t *g = fake_gpu_lock(d);
    uint64_t now = fake_now();
    fake_advance(g, now);
    fake_ps_proc_t *p = fake_me(g, d);
    int done = p->executed >= pos;
    if (done && done_at) *done_at = fake_done_at(p, pos, now);
    if (backlog) *backlog = pos > p->executed ? pos - p->executed : 0;
    fake_gpu_unlock(g);
    return done;
}

static uint64_t fake_submitted(int d) {
    fake_ps_dev_t *g = fake_gpu_lock(d);
    uint64_t s = fake_me(g, d)->submitted;
    fake_gpu_unlock(g);
    return s;
}

/* Capture state (streams created by cuStreamCreate only; fake_stream_t is the memory section's). */
typedef struct fake_capture {
    CUstream stream;
    CUstreamCaptureStatus status;
    CUstreamCaptureMode mode;
    uint64_t work_ns;
    pthread_t thread;
} fake_capture_t;
#define FAKE_MAX_CAPTURES 16
static fake_capture_t fake_captures[FAKE_MAX_CAPTURES];
static pthread_mutex_t fake_cap_mu = PTHREAD_MUTEX_INITIALIZER;
static __thread CUstreamCaptureMode fake_thread_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

static fake_capture_t *fake_capture_of(CUstream s) { /* under fake_cap_mu */
    for (int i = 0; i < FAKE_MAX_CAPTURES; i++)
        if (fake_captures[i].stream == s && s) return &fake_captures[i];
    return NULL;
}

/* 1 when this thread may not make potentially unsafe calls now (documented rule above). */
static int fake_prohibited(void) { /* under fake_cap_mu */
    if (fake_thread_mode == CU_STREAM_CAPTURE_MODE_RELAXED) return 0;
    for (int i = 0; i < FAKE_MAX_CAPTURES; i++) {
        fake_capture_t *c = &fake_captures[i];
        if (!c->stream || c->status != CU_STREAM_CAPTURE_STATUS_ACTIVE) continue;
        int mine = pthread_equal(c->thread, pthread_self());
        if ((mine && c->mode != CU_STREAM_CAPTURE_MODE_RELAXED) ||
            (!mine && c->mode == CU_STREAM_CAPTURE_MODE_GLOBAL && fake_thread_mode == CU_STREAM_CAPTURE_MODE_GLOBAL))
            return 1;
    }
    return 0;
}

/* A potentially unsafe call: refused, and it breaks the captures in progress, as the real driver does. */
static CUresult fake_unsafe_call(CUstream s) {
    pthread_mutex_lock(&fake_cap_mu);
    fake_capture_t *own = fake_capture_of(s);
    int bad = fake_prohibited() || (own && own->status != CU_STREAM_CAPTURE_STATUS_NONE);
    if (bad)
        for (int i = 0; i < FAKE_MAX_CAPTURES; i++)
            if (fake_captures[i].stream && fake_captures[i].status == CU_STREAM_CAPTURE_STATUS_ACTIVE &&
                fake_captures[i].mode != CU_STREAM_CAPTURE_MODE_RELAXED)
                fake_captures[i].status = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
    pthread_mutex_unlock(&fake_cap_mu);
    return bad ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}

/* Adds `work` to the capture of stream s; returns 1 if s is capturing (the work is not run now). */
static int fake_captured(CUstream s, uint64_t work) {
    pthread_mutex_lock(&fake_cap_mu);
    fake_capture_t *c = fake_capture_of(s);
    int capturing = c && c->status != CU_STREAM_CAPTURE_STATUS_NONE;
    if (capturing) c->work_ns += work;
    pthread_mutex_unlock(&fake_cap_mu);
    return capturing;
}

FAKE_EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode) {
    CUstreamCaptureMode old = fake_thread_mode;
    fake_thread_mode = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode) {
    if (!s || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    pthread_mutex_lock(&fake_cap_mu);
    fake_capture_t *c = fake_capture_of(s);
    for (int i = 0; !c && i < FAKE_MAX_CAPTURES; i++)
        if (!fake_captures[i].stream) c = &fake_captures[i];
    CUresult r = !c ? CUDA_ERROR_OUT_OF_MEMORY
                 : c->stream && c->status != CU_STREAM_CAPTURE_STATUS_NONE ? CUDA_ERROR_ILLEGAL_STATE : CUDA_SUCCESS;
    if (r == CUDA_SUCCESS)
        *c = (fake_capture_t){s, CU_STREAM_CAPTURE_STATUS_ACTIVE, mode, 0, pthread_self()};
    pthread_mutex_unlock(&fake_cap_mu);
    return r;
}
FAKE_EXPORT CUresult cuStreamBeginCapture(CUstream s) { return cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_GLOBAL); }

typedef struct fake_graph {
    uint64_t work_ns;
} fake_graph_t;

FAKE_EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *graph) {
    pthread_mutex_lock(&fake_cap_mu);
    fake_capture_t *c = fake_capture_of(s);
    CUresult r = !c || c->status == CU_STREAM_CAPTURE_STATUS_NONE ? CUDA_ERROR_ILLEGAL_STATE
                 : c->status == CU_STREAM_CAPTURE_STATUS_INVALIDATED ? CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
                                                                     : CUDA_SUCCESS;
    *graph = NULL;
    if (r == CUDA_SUCCESS) {
        fake_graph_t *g = calloc(1, sizeof *g);
        g->work_ns = c->work_ns;
        *graph = (CUgraph)g;
    }
    if (c) memset(c, 0, sizeof *c);
    pthread_mutex_unlock(&fake_cap_mu);
    return r;
}

FAKE_EXPORT CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *status) {
    pthread_mutex_lock(&fake_cap_mu);
    fake_capture_t *c = fake_capture_of(s);
    int legacy = !s || s == CU_STREAM_LEGACY;
    CUresult r = legacy && fake_prohibited() ? CUDA_ERROR_STREAM_CAPTURE_IMPLICIT : CUDA_SUCCESS;
    *status = c ? c->status : CU_STREAM_CAPTURE_STATUS_NONE;
    pthread_mutex_unlock(&fake_cap_mu);
    return r;
}

static uint64_t fake_backlog(int d) {
    uint64_t backlog = 0;
    fake_position(d, fake_submitted(d), NULL, &backlog);
    return backlog;
}

static void fake_sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    nanosleep(&ts, NULL);
}

FAKE_EXPORT CUresult cuStreamSynchronize(CUstream s) {
    CUresult r = fake_unsafe_call(s);
    fake_context_t *c = fake_stream_ctx(s);
    for (uint64_t b; r == CUDA_SUCCESS && c && (b = fake_backlog(c->dev)) > 0;)
        fake_sleep_ns(b < 2000000 ? b : 2000000);
    return r;
}

FAKE_EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph g, unsigned long long flags) {
    (void)flags;
    if (!g) return CUDA_ERROR_INVALID_VALUE;
    fake_graph_t *e = calloc(1, sizeof *e);
    *e = *(fake_graph_t *)g;
    *exec = (CUgraphExec)e;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuGraphDestroy(CUgraph g) { free(g); return CUDA_SUCCESS; }
FAKE_EXPORT CUresult cuGraphExecDestroy(CUgraphExec e) { free(e); return CUDA_SUCCESS; }

/* Runs `work` on stream s now, or adds it to s's capture. Like the real driver, a launch blocks while the
 * device queue already holds ~1024 kernels. */
static CUresult fake_submit(CUstream s, uint64_t work) {
    if (!fake_ctx || !((fake_context_t *)fake_ctx)->alive) return CUDA_ERROR_INVALID_CONTEXT;
    if (fake_captured(s, work) || work == 0) return CUDA_SUCCESS;
    int d = fake_ctx_dev(fake_ctx);
    uint64_t room = 1024 * (fake_kernel_ns ? fake_kernel_ns : 1);
    for (uint64_t b = fake_enqueue(d, work); b > room; b = fake_backlog(d))
        fake_sleep_ns(b - room < 2000000 ? b - room : 2000000);
    return CUDA_SUCCESS;
}
static CUresult fake_launch(CUstream s, unsigned int gx) { return fake_submit(s, fake_kernel_ns * (gx ? gx : 1)); }

#define FAKE_LAUNCH_ARGS CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, \
    unsigned int by, unsigned int bz, unsigned int sh, CUstream s
FAKE_EXPORT CUresult cuLaunchKernel(FAKE_LAUNCH_ARGS, void **p, void **e) { (void)f; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)p; (void)e; return fake_launch(s, gx); }
FAKE_EXPORT CUresult cuLaunchKernel_ptsz(FAKE_LAUNCH_ARGS, void **p, void **e) { (void)f; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)p; (void)e; return fake_launch(s, gx); }
FAKE_EXPORT CUresult cuLaunchCooperativeKernel(FAKE_LAUNCH_ARGS, void **p) { (void)f; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)p; return fake_launch(s, gx); }
FAKE_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(FAKE_LAUNCH_ARGS, void **p) { (void)f; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)p; return fake_launch(s, gx); }
FAKE_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **p, void **e) { (void)f; (void)p; (void)e; return fake_launch(c ? c->hStream : NULL, c ? c->gridDimX : 1); }
FAKE_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **p, void **e) { (void)f; (void)p; (void)e; return fake_launch(c ? c->hStream : NULL, c ? c->gridDimX : 1); }
/* A NULL exec (older tests) runs as one kernel. */
FAKE_EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s) { return g ? fake_submit(s, ((fake_graph_t *)g)->work_ns) : fake_launch(s, 1); }
FAKE_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) { return cuGraphLaunch(g, s); }

typedef struct fake_event {
    uint64_t pos;         /* this process's submitted work when recorded */
    uint64_t recorded_at, at; /* when recorded; when complete (valid once `done`) */
    int done;
    unsigned flags;
    int captured;         /* last recorded in a capture */
    fake_context_t *ctx;  /* owning context */
} fake_event_t;

static CUresult fake_event_usable(fake_event_t *e) {
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    if (!e->ctx || !e->ctx->alive) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    return e->captured ? CUDA_ERROR_CAPTURED_EVENT : CUDA_SUCCESS;
}

/* Events created and not destroyed (those of a destroyed context included): tests look for leaks. */
static long fake_events_live;
FAKE_EXPORT long fake_cuda_live_events(void) { return __atomic_load_n(&fake_events_live, __ATOMIC_RELAXED); }

FAKE_EXPORT CUresult cuEventCreate(CUevent *e, unsigned int f) {
    if (!fake_ctx || !((fake_context_t *)fake_ctx)->alive) return CUDA_ERROR_INVALID_CONTEXT;
    fake_event_t *ev = calloc(1, sizeof *ev);
    __atomic_add_fetch(&fake_events_live, 1, __ATOMIC_RELAXED);
    ev->flags = f;
    ev->done = 1;
    ev->ctx = (fake_context_t *)fake_ctx;
    *e = (CUevent)ev;
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventDestroy_v2(CUevent e) {
    if (e) __atomic_sub_fetch(&fake_events_live, 1, __ATOMIC_RELAXED);
    free(e);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventRecord(CUevent e, CUstream s) {
    fake_event_t *ev = (fake_event_t *)e;
    if (!ev) return CUDA_ERROR_INVALID_HANDLE;
    if (!ev->ctx->alive) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (fake_stream_ctx(s) != ev->ctx) return CUDA_ERROR_INVALID_HANDLE;
    ev->captured = fake_captured(s, 0);
    if (!ev->captured) {
        ev->pos = fake_submitted(ev->ctx->dev);
        ev->recorded_at = fake_now();
        ev->done = 0;
    }
    return CUDA_SUCCESS;
}
/* Completion, without the capture rules. */
static int fake_event_done(fake_event_t *ev) {
    if (!ev->done && fake_position(ev->ctx->dev, ev->pos, &ev->at, NULL)) {
        if (ev->at < ev->recorded_at) ev->at = ev->recorded_at;
        ev->done = 1;
    }
    return ev->done;
}
FAKE_EXPORT CUresult cuEventQuery(CUevent e) {
    CUresult r = fake_unsafe_call(NULL);
    if (r == CUDA_SUCCESS) r = fake_event_usable((fake_event_t *)e);
    if (r != CUDA_SUCCESS) return r;
    return fake_event_done((fake_event_t *)e) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}
FAKE_EXPORT CUresult cuEventSynchronize(CUevent e) {
    fake_event_t *ev = (fake_event_t *)e;
    CUresult r = fake_unsafe_call(NULL);
    if (r == CUDA_SUCCESS) r = fake_event_usable(ev);
    if (r != CUDA_SUCCESS) return r;
    while (!fake_event_done(ev)) /* the default spins; blocking-sync sleeps */
        if (ev->flags & CU_EVENT_BLOCKING_SYNC) fake_sleep_ns(50000);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) {
    fake_event_t *x = (fake_event_t *)a, *y = (fake_event_t *)b;
    CUresult r = fake_event_usable(x);
    if (r == CUDA_SUCCESS) r = fake_event_usable(y);
    if (r != CUDA_SUCCESS) return r;
    if (!fake_event_done(x) || !fake_event_done(y)) return CUDA_ERROR_NOT_READY;
    *ms = (float)((double)((int64_t)(y->at - x->at)) / 1e6);
    return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) { return cuEventElapsedTime_v2(ms, a, b); }
/* ---- end of the compute engineer's section ------------------------------------------------------------------ */

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
FAKE_EXPORT CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);

/* compute engineer's section */
#define FAKE_COMPUTE_SYMBOLS(X)                                                                              \
    X(cuThreadExchangeStreamCaptureMode) X(cuStreamBeginCapture) X(cuStreamBeginCapture_v2) X(cuStreamEndCapture) \
    X(cuStreamIsCapturing) X(cuStreamSynchronize) X(cuGraphInstantiateWithFlags) X(cuGraphDestroy)           \
    X(cuGraphExecDestroy)

#define FAKE_SYMBOLS(X)                                                                                      \
    X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetUuid) X(cuDeviceGetUuid_v2) \
    X(cuDeviceTotalMem_v2) X(cuDevicePrimaryCtxRetain) X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxGetDevice) \
    X(cuCtxSynchronize) X(cuMemAlloc_v2) X(cuMemAllocPitch_v2) X(cuMemAllocManaged) X(cuMemAllocAsync)       \
    X(cuMemAllocAsync_ptsz) X(cuMemAllocFromPoolAsync) X(cuMemAllocFromPoolAsync_ptsz) X(cuMemFree_v2)        \
    X(cuMemFreeAsync) X(cuMemFreeAsync_ptsz) X(cuMemCreate) X(cuMemRelease) X(cuArrayCreate_v2)               \
    X(cuArray3DCreate_v2) X(cuArrayDestroy) X(cuMipmappedArrayCreate) X(cuMipmappedArrayDestroy)              \
    X(cuMemGetInfo_v2) X(cuLaunchKernel) X(cuLaunchKernel_ptsz) X(cuLaunchCooperativeKernel)                  \
    X(cuLaunchCooperativeKernel_ptsz) X(cuLaunchKernelEx)             \
    X(cuLaunchKernelEx_ptsz) X(cuGraphLaunch) X(cuGraphLaunch_ptsz) X(cuEventCreate) X(cuEventDestroy_v2)     \
    X(cuEventRecord) X(cuEventQuery) X(cuEventSynchronize) X(cuEventElapsedTime) X(cuEventElapsedTime_v2)     \
    X(cuGetProcAddress) X(cuGetProcAddress_v2) X(cuDevicePrimaryCtxGetState) X(cuDevicePrimaryCtxRelease_v2)       \
    X(cuDevicePrimaryCtxReset_v2) X(cuDevicePrimaryCtxRelease) X(cuDevicePrimaryCtxReset) X(cuCtxCreate_v4) X(cuCtxDestroy_v2) X(cuCtxPushCurrent_v2) X(cuCtxPopCurrent_v2) \
    X(cuStreamCreate) X(cuStreamGetCtx) X(cuStreamDestroy_v2) X(cuMemAddressReserve) X(cuMemAddressFree)       \
    X(cuMemMap) X(cuMemUnmap) X(cuMemAlloc)                                                                    \
    FAKE_COMPUTE_SYMBOLS(X)

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

/* ---- Internal entry points (memory engineer's section): like the real driver, cuGetProcAddress returns
 * trampolines whose addresses differ from the exported symbols of the same functions. */
#define FAKE_TRAMPOLINES(X)                                                                                  \
    X(cuMemAlloc_v2, (CUdeviceptr * p, size_t b), (p, b))                                                     \
    X(cuMemFree_v2, (CUdeviceptr p), (p))                                                                     \
    X(cuMemGetInfo_v2, (size_t * f, size_t * t), (f, t))                                                      \
    X(cuMemAllocAsync, (CUdeviceptr * p, size_t b, CUstream s), (p, b, s))                                    \
    X(cuMemCreate, (CUmemGenericAllocationHandle * h, size_t b, const CUmemAllocationProp *pr, unsigned long long f), (h, b, pr, f)) \
    X(cuMemRelease, (CUmemGenericAllocationHandle h), (h))                                                    \
    X(cuMemMap, (CUdeviceptr p, size_t s, size_t o, CUmemGenericAllocationHandle h, unsigned long long f), (p, s, o, h, f)) \
    X(cuMemUnmap, (CUdeviceptr p, size_t s), (p, s))                                                          \
    X(cuCtxDestroy_v2, (CUcontext c), (c))                                                                    \
    X(cuDevicePrimaryCtxReset_v2, (CUdevice d), (d))                                                          \
    X(cuLaunchKernel, (FAKE_LAUNCH_ARGS, void **p, void **e), (f, gx, gy, gz, bx, by, bz, sh, s, p, e))

#define FAKE_TRAMPOLINE(n, params, args) \
    __attribute__((noinline)) static CUresult fake_tramp_##n params { return n args; }
FAKE_TRAMPOLINES(FAKE_TRAMPOLINE)
#undef FAKE_TRAMPOLINE

static void *fake_internal(const char *name, void *exported) {
    static int off = -1;
    if (off < 0) off = getenv("FAKE_CUDA_TRAMPOLINES") && !strcmp(getenv("FAKE_CUDA_TRAMPOLINES"), "0");
    if (off || !exported) return exported;
#define FAKE_PICK(n, params, args) if (!strcmp(name, #n)) return (void *)&fake_tramp_##n;
    FAKE_TRAMPOLINES(FAKE_PICK)
#undef FAKE_PICK
    return exported;
}

/* Base name + version + flags -> the symbol the real driver would pick: _ptsz for per-thread lookups, the
 * _v2 family from CUDA 3.2 (cuGetProcAddress_v2 from 12.0; cuCtxCreate_v4 from 12.5; cuDevicePrimaryCtx*_v2
 * from 11.0), else the base symbol; then its internal entry point. */
static void *fake_resolve(const char *sym, int version, cuuint64_t flags) {
    char name[160];
    void *fn = NULL;
    if (strcmp(sym, "cuGetProcAddress") == 0)
        fn = version >= 12000 ? fake_find("cuGetProcAddress_v2") : fake_find("cuGetProcAddress");
    else if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) {
        snprintf(name, sizeof name, "%s_ptsz", sym);
        fn = fake_find(name);
    }
    if (!fn && version >= 12050 && strcmp(sym, "cuCtxCreate") == 0) fn = fake_find("cuCtxCreate_v4");
    int v2_since = strncmp(sym, "cuDevicePrimaryCtx", 18) == 0 ? 11000 : 3020;
    if (!fn && version >= v2_since && strcmp(sym, "cuGetProcAddress") != 0) {
        snprintf(name, sizeof name, "%s_v2", sym);
        fn = fake_find(name);
    }
    if (!fn) fn = fake_find(sym);
    if (!fake_log && getenv("FAKE_CUDA_LOG")) fake_log = fopen(getenv("FAKE_CUDA_LOG"), "a");
    if (fake_log) {
        fprintf(fake_log, "lookup %s %d %llu -> %s\n", sym, version, (unsigned long long)flags, fn ? "found" : "missing");
        fflush(fake_log);
    }
    if (fn) {
        for (size_t i = 0; i < sizeof fake_table / sizeof fake_table[0]; i++)
            if (fake_table[i].fn == fn) return fake_internal(fake_table[i].name, fn);
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
