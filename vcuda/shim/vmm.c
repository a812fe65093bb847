/* Virtual memory management (cuMemCreate / cuMemMap / cuMemUnmap / cuMemRelease): a handle's charge lives in a
 * record shared by the handle's table entry and the entries of its mappings; it is given back when the handle
 * is released AND its last mapping is gone (the driver frees the memory only then). Map, unmap and release
 * keep their bookkeeping and the driver call under one mutex, so a handle or address the driver hands out
 * again is never confused with the old one. Host-located memory is not device memory and is not counted. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "shim.h"

#define VC_VMM_STEP ((uint64_t)2 << 20) /* smallest VMM granularity: unmap walks gaps in these steps */

typedef struct vc_vmm {
    uint64_t size;
    int rec;
    uint32_t maps;
    int released;
} vc_vmm_t;

static pthread_mutex_t vc_vmm_mu = PTHREAD_MUTEX_INITIALIZER;

void vc_vmm_fork_lock(void) { pthread_mutex_lock(&vc_vmm_mu); }
void vc_vmm_fork_unlock(void) { pthread_mutex_unlock(&vc_vmm_mu); }

static void vc_vmm_unref(vc_vmm_t *h) {
    if (h->maps || !h->released) return;
    vc_mem_unreserve(h->rec, h->size);
    free(h);
}

/* The record a VMM allocation is charged to; -2 for host memory (not counted). */
static int vc_record_of_location(const CUmemAllocationProp *prop) {
    if (!prop || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return -2;
    return vc_record_of_device(prop->location.id);
}

VC_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t bytes,
                               const CUmemAllocationProp *prop, unsigned long long flags) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    if (!vc_real.cuMemCreate) return CUDA_ERROR_NOT_FOUND;
    int rec = vc_record_of_location(prop);
    if (rec == -2) return vc_real.cuMemCreate(handle, bytes, prop, flags);
    vc_vmm_t *h = calloc(1, sizeof *h);
    if (!h) return CUDA_ERROR_OUT_OF_MEMORY;
    *h = (vc_vmm_t){.size = bytes, .rec = rec};
    r = vc_mem_reserve(rec, bytes);
    if (r == CUDA_SUCCESS) r = vc_real.cuMemCreate(handle, bytes, prop, flags);
    else h->rec = -1; /* nothing reserved */
    if (r != CUDA_SUCCESS) {
        vc_mem_unreserve(h->rec, bytes);
        free(h);
        return r;
    }
    vc_alloc_t a = {.size = bytes, .vmm = h, .rec = rec};
    pthread_mutex_lock(&vc_vmm_mu);
    vc_alloc_t stale;
    if (vc_table_put(vc_key(VC_KIND_HANDLE, *handle), &a, &stale) == 1) { /* released behind the shim's back */
        ((vc_vmm_t *)stale.vmm)->released = 1;
        vc_vmm_unref(stale.vmm);
    }
    pthread_mutex_unlock(&vc_vmm_mu);
    return CUDA_SUCCESS;
}

VC_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    if (!vc_real.cuMemRelease) return CUDA_ERROR_NOT_FOUND;
    uint64_t key = vc_key(VC_KIND_HANDLE, handle);
    vc_alloc_t a;
    pthread_mutex_lock(&vc_vmm_mu);
    int had = vc_table_take(key, &a);
    r = vc_real.cuMemRelease(handle);
    if (had && r != CUDA_SUCCESS) vc_table_put(key, &a, NULL);
    if (had && r == CUDA_SUCCESS) {
        ((vc_vmm_t *)a.vmm)->released = 1;
        vc_vmm_unref(a.vmm); /* still mapped: the charge stays until the last unmap */
    }
    pthread_mutex_unlock(&vc_vmm_mu);
    return r;
}

VC_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                            unsigned long long flags) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    if (!vc_real.cuMemMap) return CUDA_ERROR_NOT_FOUND;
    vc_alloc_t a;
    pthread_mutex_lock(&vc_vmm_mu);
    int had = vc_table_get(vc_key(VC_KIND_HANDLE, handle), &a);
    r = vc_real.cuMemMap(ptr, size, offset, handle, flags);
    if (had && r == CUDA_SUCCESS) {
        vc_alloc_t m = {.size = size, .vmm = a.vmm, .rec = a.rec};
        vc_alloc_t stale;
        ((vc_vmm_t *)a.vmm)->maps++;
        if (vc_table_put(vc_key(VC_KIND_MAP, ptr), &m, &stale) == 1) { /* unmapped behind the shim's back */
            ((vc_vmm_t *)stale.vmm)->maps--;
            vc_vmm_unref(stale.vmm);
        }
    }
    pthread_mutex_unlock(&vc_vmm_mu);
    return r;
}

typedef struct vc_unmapped {
    uint64_t va;
    vc_alloc_t m;
} vc_unmapped_t;

/* Takes the mappings that start inside [ptr, ptr + size) out of the table; returns how many (in *out). */
static size_t vc_take_mappings(uint64_t ptr, uint64_t size, vc_unmapped_t **out) {
    size_t n = 0, cap = 0;
    vc_unmapped_t *list = NULL;
    for (uint64_t va = ptr; va < ptr + size;) {
        vc_alloc_t m;
        if (!vc_table_take(vc_key(VC_KIND_MAP, va), &m)) {
            va += VC_VMM_STEP - (va % VC_VMM_STEP);
            continue;
        }
        if (n == cap) {
            vc_unmapped_t *grown = realloc(list, (cap = cap ? cap * 2 : 8) * sizeof *list);
            if (!grown) { /* keep the charge: put it back, stop here */
                vc_table_put(vc_key(VC_KIND_MAP, va), &m, NULL);
                break;
            }
            list = grown;
        }
        list[n++] = (vc_unmapped_t){va, m};
        va += m.size ? m.size : VC_VMM_STEP;
    }
    *out = list;
    return n;
}

VC_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) return r;
    if (!vc_real.cuMemUnmap) return CUDA_ERROR_NOT_FOUND;
    vc_unmapped_t *list;
    pthread_mutex_lock(&vc_vmm_mu);
    size_t n = vc_take_mappings(ptr, size, &list);
    r = vc_real.cuMemUnmap(ptr, size);
    for (size_t i = 0; i < n; i++) {
        if (r != CUDA_SUCCESS) {
            vc_table_put(vc_key(VC_KIND_MAP, list[i].va), &list[i].m, NULL);
            continue;
        }
        vc_vmm_t *h = list[i].m.vmm;
        h->maps--;
        vc_vmm_unref(h);
    }
    pthread_mutex_unlock(&vc_vmm_mu);
    free(list);
    return r;
}
