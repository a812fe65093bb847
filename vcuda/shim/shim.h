/* kube-vgpu vcuda shim: internal declarations shared by the shim's source files.
 *
 * Layout and names come only from the generated vcuda_contract.h; CUDA types from cuda.h (CUDA 13 headers
 * of the nvidia-cuda-runtime wheel). Nothing here is exported except the hooked CUDA/NVML symbols and dlsym.
 */
#ifndef VCUDA_SHIM_H
#define VCUDA_SHIM_H

/* The shim hooks deprecated entry points on purpose (old applications still call them). */
#define CUDA_ENABLE_DEPRECATED 1
#include <cuda.h>
#include <stddef.h>
#include <stdint.h>

#include "vcuda_contract.h"

/* cuda.h maps cuGetProcAddress to _v2; the shim exports both names with their own signatures. */
#undef cuGetProcAddress

#define VC_EXPORT __attribute__((visibility("default")))
#define VC_HIDDEN __attribute__((visibility("hidden")))
#define VC_LIKELY(x) __builtin_expect(!!(x), 1)
#define VC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define VC_MAX_DEVICES 64
#if defined(__x86_64__) || defined(__i386__)
#define VC_PAUSE() __builtin_ia32_pause()
#else
#define VC_PAUSE() __asm__ volatile("yield")
#endif

/* Prototypes cuda.h only declares in per-thread-stream builds, and the legacy v1 cuGetProcAddress. */
CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags);
CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                             unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params,
                             void **extra);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params, void **extra);
CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
                                        CUstream s, void **params);
CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream s);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s);
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool, CUstream s);
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s);

/* Every driver symbol the shim replaces. X(name) expands once per hook. */
#define VC_CUDA_HOOKS(X)                                                                                    \
    X(cuInit)                                                                                               \
    X(cuGetProcAddress)                                                                                     \
    X(cuGetProcAddress_v2)                                                                                  \
    X(cuMemGetInfo_v2)                                                                                      \
    X(cuDeviceTotalMem_v2)                                                                                  \
    X(cuMemAlloc_v2)                                                                                        \
    X(cuMemAllocPitch_v2)                                                                                   \
    X(cuMemAllocManaged)                                                                                    \
    X(cuMemAllocAsync)                                                                                      \
    X(cuMemAllocAsync_ptsz)                                                                                 \
    X(cuMemAllocFromPoolAsync)                                                                              \
    X(cuMemAllocFromPoolAsync_ptsz)                                                                         \
    X(cuMemFree_v2)                                                                                         \
    X(cuMemFreeAsync)                                                                                       \
    X(cuMemFreeAsync_ptsz)                                                                                  \
    X(cuMemCreate)                                                                                          \
    X(cuMemRelease)                                                                                         \
    X(cuArrayCreate_v2)                                                                                     \
    X(cuArray3DCreate_v2)                                                                                   \
    X(cuArrayDestroy)                                                                                       \
    X(cuMipmappedArrayCreate)                                                                               \
    X(cuMipmappedArrayDestroy)                                                                              \
    X(cuLaunchKernel)                                                                                       \
    X(cuLaunchKernel_ptsz)                                                                                  \
    X(cuLaunchKernelEx)                                                                                     \
    X(cuLaunchKernelEx_ptsz)                                                                                \
    X(cuLaunchCooperativeKernel)                                                                            \
    X(cuLaunchCooperativeKernel_ptsz)                                                                       \
    X(cuLaunchCooperativeKernelMultiDevice)                                                                 \
    X(cuGraphLaunch)                                                                                        \
    X(cuGraphLaunch_ptsz)

/* Driver symbols the shim calls but does not replace. */
#define VC_CUDA_USED(X)                                                                                     \
    X(cuDeviceGetCount)                                                                                     \
    X(cuDeviceGetUuid_v2)                                                                                   \
    X(cuCtxGetDevice)                                                                                       \
    X(cuCtxGetCurrent)                                                                                      \
    X(cuEventCreate)                                                                                        \
    X(cuEventRecord)                                                                                        \
    X(cuEventQuery)                                                                                         \
    X(cuEventSynchronize)                                                                                   \
    X(cuEventElapsedTime_v2)                                                                                \
    X(cuEventDestroy_v2)

CUresult cuEventElapsedTime_v2(float *ms, CUevent start, CUevent end);

typedef struct vc_real {
#define VC_FIELD(n) __typeof__(&n) n;
    VC_CUDA_HOOKS(VC_FIELD)
    VC_CUDA_USED(VC_FIELD)
#undef VC_FIELD
    void *handle;
} vc_real_t;

/* The real driver's entry points, filled once by vc_load_driver(). */
extern vc_real_t vc_real;

/* loader.c */
void vc_load_driver(void);
void *vc_real_dlsym(void *handle, const char *name);
void *vc_hook_by_name(const char *name);

/* log.c: stderr messages prefixed "kube-vgpu vcuda: "; level read once at load. */
void vc_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vc_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* config.c */
uint32_t vc_crc32(const void *data, size_t len);
/* Reads and validates the config file; returns 0, or -1 with a reason in `why` (printed by the caller). */
int vc_config_read(const char *path, vcuda_config_t *out, char *why, size_t why_len);

/* state.c: per-process view of the container's limits, filled by vc_ensure_init(). */
typedef struct vc_device {
    int record;                /* config record index, -1 if the device has no record (allocations refused) */
    uint64_t memory_limit;     /* bytes */
    uint32_t core_limit;       /* percent */
    uint32_t soft_limit;       /* percent */
} vc_device_t;

typedef struct vc_state {
    int ready;                 /* 1 after a successful init, -1 after a failed one (fail closed) */
    int device_count;
    vc_device_t devices[VC_MAX_DEVICES];
    vcuda_config_t config;
} vc_state_t;

extern vc_state_t vc_state;
/* Idempotent, thread-safe: loads the driver, the config and the usage file. Returns CUDA_SUCCESS or an error. */
CUresult vc_ensure_init(void);
/* Maps CUDA devices to config records by UUID; called after the real cuInit succeeded. */
CUresult vc_map_devices(void);
const char *vc_config_path(void);

/* usage.c: the shared usage file (cross-process accounting, robust lock, dead-process reclaim). */
int vc_usage_open(const char *path, uint32_t gpu_count);
/* Reserves `bytes` on config record `rec` against `limit`; 0 on success, -1 if over the limit. */
int vc_usage_reserve(int rec, uint64_t bytes, uint64_t limit);
void vc_usage_release(int rec, uint64_t bytes);
uint64_t vc_usage_used(int rec);
void vc_usage_count_refused(int rec);
void vc_usage_add_launches(int rec, uint64_t launches, uint64_t throttled_ns, uint64_t busy_ns);
/* Reclaims the slots of dead processes; returns the number reclaimed. */
int vc_usage_reap(void);
void vc_usage_close(void);
const vcuda_usage_t *vc_usage_view(const char *path);
int vc_usage_live_slots(void);
const char *vc_usage_path(char *buf, size_t cap);

/* alloc_table.c: open-addressing hash of live allocations (key -> size, device record). */
int vc_table_put(uint64_t key, uint64_t size, int rec);
/* Removes the key; returns 1 and fills size and rec if it was present. */
int vc_table_take(uint64_t key, uint64_t *size, int *rec);
size_t vc_table_count(void);

/* memory.c */
int vc_current_record(void);
/* Returns CUDA_SUCCESS after reserving, or CUDA_ERROR_OUT_OF_MEMORY (counted as a refusal). */
CUresult vc_mem_reserve(int rec, uint64_t bytes);
void vc_mem_commit(uint64_t key, uint64_t bytes, int rec);
void vc_mem_unreserve(int rec, uint64_t bytes);
void vc_mem_forget(uint64_t key);

/* nvml.c */
void *vc_nvml_hook_by_name(const char *name);

/* compute.c */
void vc_compute_init(void);

/* node.c: the per-GPU node file shared by all tenants of a GPU (optional; see docs/shim.md). */
struct vc_span;
/* Maps `<node dir>/<uuid of config record rec>.bin` and claims a slot; 0 on success, -1 = lone tenant. */
int vc_node_open(int rec, uint64_t now);
void vc_node_publish(int rec, uint64_t start, uint64_t end, uint64_t now);
void vc_node_set_open(int rec, uint64_t since, uint64_t until, uint64_t now);
/* Other tenants' busy spans overlapping [start, end) (open spans clipped at `now`); returns the count. */
unsigned vc_node_others(int rec, uint64_t start, uint64_t end, uint64_t now, struct vc_span *out, unsigned cap);

/* nvml.c: 1 when processes outside this container run on the GPU of config record `rec` (or unknown). */
int vc_nvml_others_active(int rec);

#endif /* VCUDA_SHIM_H */
