/* Memory limit: every device allocation path reserves its bytes in the shared usage file before calling the
 * driver, and gives them back on failure or free. Over the limit the hook returns CUDA_ERROR_OUT_OF_MEMORY
 * and the driver is never called. Sizes are the requested bytes (the driver's own rounding is not visible).
 *
 * Ordering: a free removes the table entry BEFORE the driver frees (and puts it back if the driver refuses),
 * because the driver hands a freed address out again at once; the charge is given back after the driver
 * succeeded. Every allocation records its context, so destroying or resetting a context drops exactly the
 * charges of the memory that died with it. VMM handles (vmm.c) keep their charge until released AND unmapped.
 */

#include "shim.h"


/* Where an allocation is charged: a config record (-1: device without one) and the context it dies with. */
typedef struct vc_target {
    int rec;
    uint64_t ctx;
} vc_target_t;

int vc_record_of_device(CUdevice dev) {
    return (dev >= 0 && dev < vc_state.device_count) ? vc_state.devices[dev].record : -1;
}

/* No context at all: CUDA's default device 0 (what the runtime would create a context on), never uncounted. */
static vc_target_t vc_default_target(void) { return (vc_target_t){vc_record_of_device(0), 0}; }

static vc_target_t vc_target_current(void) {
    CUcontext cur = NULL;
    CUdevice dev;
    if (vc_real.cuCtxGetCurrent(&cur) != CUDA_SUCCESS || !cur || vc_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS)
        return vc_default_target();
    return (vc_target_t){vc_record_of_device(dev), (uint64_t)(uintptr_t)cur};
}

/* The device of a context that may not be current (push, ask, pop). */
static vc_target_t vc_target_of_ctx(CUcontext ctx) {
    CUcontext cur = NULL, popped;
    CUdevice dev;
    if (vc_real.cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == ctx) return vc_target_current();
    if (!vc_real.cuCtxPushCurrent_v2 || vc_real.cuCtxPushCurrent_v2(ctx) != CUDA_SUCCESS)
        return vc_default_target();
    int ok = vc_real.cuCtxGetDevice(&dev) == CUDA_SUCCESS;
    vc_real.cuCtxPopCurrent_v2(&popped);
    return ok ? (vc_target_t){vc_record_of_device(dev), (uint64_t)(uintptr_t)ctx} : vc_default_target();
}

/* Stream-ordered allocations belong to the stream's context, current or not. */
static vc_target_t vc_target_stream(CUstream s) {
    CUcontext ctx = NULL;
    if (s && s != CU_STREAM_LEGACY && s != CU_STREAM_PER_THREAD && vc_real.cuStreamGetCtx &&
        vc_real.cuStreamGetCtx(s, &ctx) == CUDA_SUCCESS && ctx)
        return vc_target_of_ctx(ctx);
    return vc_target_current();
}

int vc_current_record(void) { return vc_target_current().rec; }

static uint64_t vc_limit_of(int rec) { return vc_state.config.gpus[rec].memory_limit; }

CUresult vc_mem_reserve(int rec, uint64_t bytes) {
    if (rec < 0) return CUDA_ERROR_OUT_OF_MEMORY;
    if (vc_usage_reserve(rec, bytes, vc_limit_of(rec)) == 0) return CUDA_SUCCESS;
    /* Before refusing, give back what dead processes of the container still hold. */
    if (vc_usage_reap() > 0 && vc_usage_reserve(rec, bytes, vc_limit_of(rec)) == 0) return CUDA_SUCCESS;
    vc_usage_count_refused(rec);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

void vc_mem_unreserve(int rec, uint64_t bytes) {
    if (rec >= 0) vc_usage_release(rec, bytes);
}

static void vc_commit(uint64_t key, const vc_alloc_t *a) {
    vc_alloc_t stale;
    int r = vc_table_put(key, a, &stale);
    if (r < 0) vc_log_error("allocation table full; %llu bytes untracked", (unsigned long long)a->size);
    /* The driver handed out a key the table still holds: that memory was freed behind the shim's back. */
    if (r == 1) vc_mem_unreserve(stale.rec, stale.size);
}

/* After the driver's free: give the charge back, or restore the entry if the driver refused. */
static void vc_settle_free(uint64_t key, const vc_alloc_t *a, CUresult r) {
    if (r == CUDA_SUCCESS) vc_mem_unreserve(a->rec, a->size);
    else vc_table_put(key, a, NULL);
}

/* The common shape of a counted allocation: reserve on the target, call the driver, record or roll back. */
#define VC_ALLOC(kind, fn, target_expr, bytes_expr, handle_expr, ...)                                      \
    do {                                                                                                    \
        CUresult vc_r = vc_ensure_init();                                                                   \
        if (vc_r != CUDA_SUCCESS) return vc_r;                                                              \
        if (!vc_real.fn) return CUDA_ERROR_NOT_FOUND;                                                       \
        vc_target_t vc_t = (target_expr);                                                                   \
        uint64_t vc_bytes = (bytes_expr);                                                                   \
        vc_r = vc_mem_reserve(vc_t.rec, vc_bytes);                                                          \
        if (vc_r != CUDA_SUCCESS) return vc_r;                                                              \
        vc_r = vc_real.fn(__VA_ARGS__);                                                                     \
        if (vc_r == CUDA_SUCCESS) {                                                                         \
            vc_alloc_t vc_a = {.size = vc_bytes, .ctx = vc_t.ctx, .rec = vc_t.rec};                         \
            vc_commit(vc_key(kind, (uint64_t)(handle_expr)), &vc_a);                                        \
        } else                                                                                              \
            vc_mem_unreserve(vc_t.rec, vc_bytes);                                                           \
        return vc_r;                                                                                        \
    } while (0)

/* The entry leaves the table before the driver can hand the address to another thread. */
#define VC_FREE(kind, fn, handle, ...)                                                                      \
    do {                                                                                                    \
        CUresult vc_r = vc_ensure_init();                                                                   \
        if (vc_r != CUDA_SUCCESS) return vc_r;                                                              \
        if (!vc_real.fn) return CUDA_ERROR_NOT_FOUND;                                                       \
        uint64_t vc_k = vc_key(kind, (uint64_t)(handle));                                                   \
        vc_alloc_t vc_a;                                                                                    \
        int vc_had = (handle) && vc_table_take(vc_k, &vc_a);                                                \
        vc_r = vc_real.fn(__VA_ARGS__);                                                                     \
        if (vc_had) vc_settle_free(vc_k, &vc_a, vc_r);                                                      \
        return vc_r;                                                                                        \
    } while (0)

VC_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) {
    VC_ALLOC(VC_KIND_PTR, cuMemAlloc_v2, vc_target_current(), bytes, *dptr, dptr, bytes);
}

static uint64_t vc_pitch_bytes(size_t width, size_t height) {
    uint64_t pitch = (width + 511) & ~(uint64_t)511; /* the driver pads rows; 512 B is its usual alignment */
    return pitch * height;
}

VC_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                      unsigned int elem) {
    VC_ALLOC(VC_KIND_PTR, cuMemAllocPitch_v2, vc_target_current(), vc_pitch_bytes(width, height), *dptr, dptr,
             pitch, width, height, elem);
}

VC_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags) {
    VC_ALLOC(VC_KIND_PTR, cuMemAllocManaged, vc_target_current(), bytes, *dptr, dptr, bytes, flags);
}

VC_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    VC_ALLOC(VC_KIND_PTR, cuMemAllocAsync, vc_target_stream(s), bytes, *dptr, dptr, bytes, s);
}

VC_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    VC_ALLOC(VC_KIND_PTR, cuMemAllocAsync_ptsz, vc_target_stream(s), bytes, *dptr, dptr, bytes, s);
}

VC_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool, CUstream s) {
    VC_ALLOC(VC_KIND_PTR, cuMemAllocFromPoolAsync, vc_target_stream(s), bytes, *dptr, dptr, bytes, pool, s);
}

VC_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                                CUstream s) {
    VC_ALLOC(VC_KIND_PTR, cuMemAllocFromPoolAsync_ptsz, vc_target_stream(s), bytes, *dptr, dptr, bytes, pool, s);
}

VC_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) { VC_FREE(VC_KIND_PTR, cuMemFree_v2, dptr, dptr); }

VC_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) {
    VC_FREE(VC_KIND_PTR, cuMemFreeAsync, dptr, dptr, s);
}

VC_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
    VC_FREE(VC_KIND_PTR, cuMemFreeAsync_ptsz, dptr, dptr, s);
}

/* ---- Contexts: memory allocated in a context dies with it (cuCtxDestroy, primary-context reset, or the last
 * release of a primary context); so do its charges. */
static void vc_drop_entry(uint64_t key, const vc_alloc_t *a) {
    (void)key;
    vc_mem_unreserve(a->rec, a->size);
}

static void vc_forget_ctx(CUcontext ctx) {
    size_t n = vc_table_drop_ctx((uint64_t)(uintptr_t)ctx, vc_drop_entry);
    if (n) vc_log_debug("context %p gone: %zu allocations given back", (void *)ctx, n);
}

/* The device's primary context if it is active (retain + release leave its reference count as it was). */
static CUcontext vc_active_primary(CUdevice dev) {
    unsigned int flags;
    int active = 0;
    CUcontext ctx = NULL;
    CUresult (*release)(CUdevice) = vc_real.cuDevicePrimaryCtxRelease_v2 ? vc_real.cuDevicePrimaryCtxRelease_v2
                                                                         : vc_real.cuDevicePrimaryCtxRelease;
    if (!vc_real.cuDevicePrimaryCtxGetState || !vc_real.cuDevicePrimaryCtxRetain || !release ||
        vc_real.cuDevicePrimaryCtxGetState(dev, &flags, &active) != CUDA_SUCCESS || !active ||
        vc_real.cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS)
        return NULL;
    release(dev);
    return ctx;
}

VC_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    if (!vc_real.cuCtxDestroy_v2) return CUDA_ERROR_NOT_FOUND;
    r = vc_real.cuCtxDestroy_v2(ctx);
    if (r == CUDA_SUCCESS && ctx) vc_forget_ctx(ctx);
    return r;
}

/* `real` is the driver's _v2 or v1 entry point (runtimes before CUDA 11 call the v1 ones; same signature). A reset
 * destroys the primary context; a release destroys it only with its last reference, so after a release the
 * charges go only when the context is no longer the active primary. */
static CUresult vc_primary_end(CUresult (*real)(CUdevice), CUdevice dev, int release) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    if (!real) return CUDA_ERROR_NOT_FOUND;
    CUcontext ctx = vc_active_primary(dev);
    r = real(dev);
    if (r == CUDA_SUCCESS && ctx && !(release && vc_active_primary(dev) == ctx)) vc_forget_ctx(ctx);
    return r;
}

VC_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
    return vc_primary_end(vc_real.cuDevicePrimaryCtxReset_v2, dev, 0);
}

VC_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    return vc_primary_end(vc_real.cuDevicePrimaryCtxRelease_v2, dev, 1);
}

VC_EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice dev) {
    return vc_primary_end(vc_real.cuDevicePrimaryCtxReset, dev, 0);
}

VC_EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev) {
    return vc_primary_end(vc_real.cuDevicePrimaryCtxRelease, dev, 1);
}

/* ---- Arrays and mipmapped arrays: sized from their descriptors. */
static uint64_t vc_format_bytes(CUarray_format f) {
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: return 4;
    default: return 16; /* block-compressed and packed formats: a safe upper bound per element */
    }
}

static uint64_t vc_max1(uint64_t v) { return v ? v : 1; }

static uint64_t vc_array3d_bytes(const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int levels) {
    if (!d) return 0;
    uint64_t total = 0, w = vc_max1(d->Width), h = vc_max1(d->Height), z = vc_max1(d->Depth);
    for (unsigned int l = 0; l < vc_max1(levels); l++) {
        total += w * h * z * d->NumChannels * vc_format_bytes(d->Format);
        w = vc_max1(w / 2);
        h = vc_max1(h / 2);
        if (!(d->Flags & CUDA_ARRAY3D_LAYERED)) z = vc_max1(z / 2);
    }
    return total;
}

static uint64_t vc_array_bytes(const CUDA_ARRAY_DESCRIPTOR *d) {
    return d ? vc_max1(d->Width) * vc_max1(d->Height) * d->NumChannels * vc_format_bytes(d->Format) : 0;
}

VC_EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *desc) {
    VC_ALLOC(VC_KIND_ARRAY, cuArrayCreate_v2, vc_target_current(), vc_array_bytes(desc), (uintptr_t)*arr, arr,
             desc);
}

VC_EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc) {
    VC_ALLOC(VC_KIND_ARRAY, cuArray3DCreate_v2, vc_target_current(), vc_array3d_bytes(desc, 1), (uintptr_t)*arr,
             arr, desc);
}

VC_EXPORT CUresult cuArrayDestroy(CUarray arr) { VC_FREE(VC_KIND_ARRAY, cuArrayDestroy, (uintptr_t)arr, arr); }

VC_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc,
                                          unsigned int levels) {
    VC_ALLOC(VC_KIND_MIPMAP, cuMipmappedArrayCreate, vc_target_current(), vc_array3d_bytes(desc, levels),
             (uintptr_t)*arr, arr, desc, levels);
}

VC_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray arr) {
    VC_FREE(VC_KIND_MIPMAP, cuMipmappedArrayDestroy, (uintptr_t)arr, arr);
}

/* free = min(limit - container usage, physical free); total = limit. */
VC_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    size_t f = 0, t = 0;
    r = vc_real.cuMemGetInfo_v2(&f, &t);
    if (r != CUDA_SUCCESS) {
        if (free_bytes) *free_bytes = f;
        if (total_bytes) *total_bytes = t;
        return r;
    }
    int rec = vc_current_record();
    uint64_t limit = rec >= 0 ? vc_limit_of(rec) : 0, used = rec >= 0 ? vc_usage_used(rec) : 0;
    uint64_t room = used < limit ? limit - used : 0;
    if (free_bytes) *free_bytes = room < f ? room : f;
    if (total_bytes) *total_bytes = limit;
    return CUDA_SUCCESS;
}

VC_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    r = vc_real.cuDeviceTotalMem_v2(bytes, dev);
    if (r == CUDA_SUCCESS && bytes && dev >= 0 && dev < vc_state.device_count) {
        int rec = vc_state.devices[dev].record;
        *bytes = rec >= 0 ? vc_limit_of(rec) : 0;
    }
    return r;
}
