/* Memory limit: every device allocation path reserves its bytes in the shared usage file before calling the
 * driver, and gives them back on failure or free. Over the limit the hook returns CUDA_ERROR_OUT_OF_MEMORY
 * and the driver is never called. Sizes are the requested bytes (the driver's own rounding is not visible).
 */
#include "shim.h"

enum { VC_KIND_PTR = 1, VC_KIND_ARRAY = 2, VC_KIND_MIPMAP = 3, VC_KIND_HANDLE = 4 };

static inline uint64_t vc_key(int kind, uint64_t value) { return (value ^ ((uint64_t)kind << 60)) | 1ULL << 63; }

int vc_current_record(void) {
    CUdevice dev;
    if (vc_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS) return -2; /* no context: let the driver answer */
    if (dev < 0 || dev >= vc_state.device_count) return -1;
    return vc_state.devices[dev].record;
}

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

void vc_mem_commit(uint64_t key, uint64_t bytes, int rec) {
    if (vc_table_put(key, bytes, rec) != 0) vc_log_error("allocation table full; %llu bytes untracked",
                                                         (unsigned long long)bytes);
}

void vc_mem_forget(uint64_t key) {
    uint64_t size;
    int rec;
    if (vc_table_take(key, &size, &rec)) vc_mem_unreserve(rec, size);
}

/* The common shape of a counted allocation: reserve on `rec`, call the driver, record or roll back. */
#define VC_ALLOC(kind, rec_expr, bytes_expr, handle_expr, call)                                             \
    do {                                                                                                    \
        CUresult vc_r = vc_ensure_init();                                                                   \
        if (vc_r != CUDA_SUCCESS) return vc_r;                                                              \
        int vc_rec = (rec_expr);                                                                            \
        uint64_t vc_bytes = (bytes_expr);                                                                   \
        if (vc_rec == -2) return (call);                                                                    \
        vc_r = vc_mem_reserve(vc_rec, vc_bytes);                                                            \
        if (vc_r != CUDA_SUCCESS) return vc_r;                                                              \
        vc_r = (call);                                                                                      \
        if (vc_r == CUDA_SUCCESS)                                                                           \
            vc_mem_commit(vc_key(kind, (uint64_t)(handle_expr)), vc_bytes, vc_rec);                         \
        else                                                                                                \
            vc_mem_unreserve(vc_rec, vc_bytes);                                                             \
        return vc_r;                                                                                        \
    } while (0)

#define VC_FREE(kind, handle, call)                                                                         \
    do {                                                                                                    \
        CUresult vc_r = vc_ensure_init();                                                                   \
        if (vc_r != CUDA_SUCCESS) return vc_r;                                                              \
        vc_r = (call);                                                                                      \
        if (vc_r == CUDA_SUCCESS && (handle)) vc_mem_forget(vc_key(kind, (uint64_t)(handle)));              \
        return vc_r;                                                                                        \
    } while (0)

VC_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) {
    VC_ALLOC(VC_KIND_PTR, vc_current_record(), bytes, *dptr, vc_real.cuMemAlloc_v2(dptr, bytes));
}

static uint64_t vc_pitch_bytes(size_t width, size_t height) {
    uint64_t pitch = (width + 511) & ~(uint64_t)511; /* the driver pads rows; 512 B is its usual alignment */
    return pitch * height;
}

VC_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                      unsigned int elem) {
    VC_ALLOC(VC_KIND_PTR, vc_current_record(), vc_pitch_bytes(width, height), *dptr,
             vc_real.cuMemAllocPitch_v2(dptr, pitch, width, height, elem));
}

VC_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags) {
    VC_ALLOC(VC_KIND_PTR, vc_current_record(), bytes, *dptr, vc_real.cuMemAllocManaged(dptr, bytes, flags));
}

VC_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    VC_ALLOC(VC_KIND_PTR, vc_current_record(), bytes, *dptr, vc_real.cuMemAllocAsync(dptr, bytes, s));
}

VC_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    VC_ALLOC(VC_KIND_PTR, vc_current_record(), bytes, *dptr, vc_real.cuMemAllocAsync_ptsz(dptr, bytes, s));
}

VC_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool, CUstream s) {
    VC_ALLOC(VC_KIND_PTR, vc_current_record(), bytes, *dptr,
             vc_real.cuMemAllocFromPoolAsync(dptr, bytes, pool, s));
}

VC_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                                CUstream s) {
    VC_ALLOC(VC_KIND_PTR, vc_current_record(), bytes, *dptr,
             vc_real.cuMemAllocFromPoolAsync_ptsz(dptr, bytes, pool, s));
}

VC_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) { VC_FREE(VC_KIND_PTR, dptr, vc_real.cuMemFree_v2(dptr)); }

VC_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) {
    VC_FREE(VC_KIND_PTR, dptr, vc_real.cuMemFreeAsync(dptr, s));
}

VC_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
    VC_FREE(VC_KIND_PTR, dptr, vc_real.cuMemFreeAsync_ptsz(dptr, s));
}

static int vc_record_of_location(const CUmemAllocationProp *prop) {
    if (!prop || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return -2; /* host memory: not counted */
    int dev = prop->location.id;
    return (dev >= 0 && dev < vc_state.device_count) ? vc_state.devices[dev].record : -1;
}

VC_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t bytes,
                               const CUmemAllocationProp *prop, unsigned long long flags) {
    VC_ALLOC(VC_KIND_HANDLE, vc_record_of_location(prop), bytes, *handle,
             vc_real.cuMemCreate(handle, bytes, prop, flags));
}

VC_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    VC_FREE(VC_KIND_HANDLE, handle, vc_real.cuMemRelease(handle));
}

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
    VC_ALLOC(VC_KIND_ARRAY, vc_current_record(), vc_array_bytes(desc), (uintptr_t)*arr,
             vc_real.cuArrayCreate_v2(arr, desc));
}

VC_EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc) {
    VC_ALLOC(VC_KIND_ARRAY, vc_current_record(), vc_array3d_bytes(desc, 1), (uintptr_t)*arr,
             vc_real.cuArray3DCreate_v2(arr, desc));
}

VC_EXPORT CUresult cuArrayDestroy(CUarray arr) {
    VC_FREE(VC_KIND_ARRAY, (uintptr_t)arr, vc_real.cuArrayDestroy(arr));
}

VC_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc,
                                          unsigned int levels) {
    VC_ALLOC(VC_KIND_MIPMAP, vc_current_record(), vc_array3d_bytes(desc, levels), (uintptr_t)*arr,
             vc_real.cuMipmappedArrayCreate(arr, desc, levels));
}

VC_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray arr) {
    VC_FREE(VC_KIND_MIPMAP, (uintptr_t)arr, vc_real.cuMipmappedArrayDestroy(arr));
}

/* free = min(limit - container usage, physical free); total = limit. */
VC_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    size_t f = 0, t = 0;
    r = vc_real.cuMemGetInfo_v2(&f, &t);
    int rec = vc_current_record();
    if (r != CUDA_SUCCESS || rec == -2) {
        if (free_bytes) *free_bytes = f;
        if (total_bytes) *total_bytes = t;
        return r;
    }
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
