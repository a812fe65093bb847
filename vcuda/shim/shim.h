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
#include <sys/types.h>

#include "vcuda_contract.h"

/* cuda.h maps cuGetProcAddress to _v2; the shim exports both names with their own signatures. So for the
 * primary-context calls: runtimes before CUDA 11 reach their v1 symbols (same signature) by name. */
#undef cuGetProcAddress
#undef cuDevicePrimaryCtxReset
#undef cuDevicePrimaryCtxRelease
CUresult cuDevicePrimaryCtxReset(CUdevice dev);
CUresult cuDevicePrimaryCtxRelease(CUdevice dev);

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
CUresult cuStreamSynchronize_ptsz(CUstream s);

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
    X(cuMemMap)                                                                                             \
    X(cuMemUnmap)                                                                                           \
    X(cuCtxDestroy_v2)                                                                                      \
    X(cuDevicePrimaryCtxReset_v2)                                                                           \
    X(cuDevicePrimaryCtxRelease_v2)                                                                         \
    X(cuDevicePrimaryCtxReset)                                                                              \
    X(cuDevicePrimaryCtxRelease)                                                                            \
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
    X(cuGraphLaunch_ptsz)                                                                                   \
    X(cuCtxSynchronize)                                                                                     \
    X(cuCtxSetCurrent)                                                                                      \
    X(cuCtxPushCurrent_v2)                                                                                  \
    X(cuCtxPopCurrent_v2)                                                                                   \
    X(cuStreamSynchronize)                                                                                  \
    X(cuStreamSynchronize_ptsz)

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
    X(cuEventDestroy_v2)                                                                                    \
    X(cuStreamGetCtx)                                                                                       \
    X(cuDevicePrimaryCtxGetState)                                                                           \
    X(cuDevicePrimaryCtxRetain)                                                                             \
    X(cuStreamIsCapturing)                                                                                  \
    X(cuThreadExchangeStreamCaptureMode)

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
void vc_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vc_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* config.c */
uint32_t vc_crc32(const void *data, size_t len);
/* Reads and validates the config file; returns 0, or -1 with a reason in `why` (printed by the caller). */
int vc_config_read(const char *path, vcuda_config_t *out, char *why, size_t why_len);

/* init.c: per-process view of the container's limits, filled by vc_ensure_init(). */
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
/* `fixed`; in the TEST build only (-DVCUDA_TEST_BUILD), the env variable `env_name` when set (init.c). In the
 * shipped library it is the fixed path itself, so no override name is even in the binary. */
#ifdef VCUDA_TEST_BUILD
const char *vc_env_path(const char *env_name, const char *fixed);
#else
#define vc_env_path(env_name, fixed) (fixed)
#endif

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

/* proc.c: /proc facts about a pid (0 when gone or unknown). */
uint64_t vc_start_time(pid_t pid);
char vc_proc_state(pid_t pid);
/* 0 if the process is gone or a zombie. */
int vc_pid_alive(pid_t pid);

/* alloc_table.c: open-addressing hash of live allocations (tagged key -> vc_alloc_t). */
typedef struct vc_alloc {
    uint64_t size; /* bytes charged; for a VMM mapping, the mapped length */
    uint64_t ctx;  /* context the memory dies with (0: none, e.g. VMM handles and mappings) */
    void *vmm;     /* VMM handle and its mappings: the shared record that holds the charge (memory.c) */
    int32_t rec;   /* config record charged */
    int32_t pad;
} vc_alloc_t;
/* Inserts or replaces; returns 1 (and fills `replaced`) if the key was present, 0 if new, -1 out of memory. */
int vc_table_put(uint64_t key, const vc_alloc_t *v, vc_alloc_t *replaced);
/* Removes the key; returns 1 and fills `out` (may be NULL) if it was present. */
int vc_table_take(uint64_t key, vc_alloc_t *out);
int vc_table_get(uint64_t key, vc_alloc_t *out);
/* Removes every entry of context `ctx`, passing each to `drop`; returns how many. */
size_t vc_table_drop_ctx(uint64_t ctx, void (*drop)(uint64_t key, const vc_alloc_t *v));
size_t vc_table_count(void);
void vc_table_fork_lock(void);
void vc_table_fork_unlock(void);
/* vmm.c */
void vc_vmm_fork_lock(void);
void vc_vmm_fork_unlock(void);

/* memory.c (and vmm.c): table keys are driver handles tagged by kind (never 0). */
enum { VC_KIND_PTR = 1, VC_KIND_ARRAY = 2, VC_KIND_MIPMAP = 3, VC_KIND_HANDLE = 4, VC_KIND_MAP = 5 };
static inline uint64_t vc_key(int kind, uint64_t value) { return (value ^ ((uint64_t)kind << 60)) | 1ULL << 63; }
/* Config record of CUDA device `dev` (-1: no record, allocations refused). */
int vc_record_of_device(CUdevice dev);
int vc_current_record(void);
/* Returns CUDA_SUCCESS after reserving, or CUDA_ERROR_OUT_OF_MEMORY (counted as a refusal). */
CUresult vc_mem_reserve(int rec, uint64_t bytes);
void vc_mem_unreserve(int rec, uint64_t bytes);

/* nvml.c */
void *vc_nvml_hook_by_name(const char *name);

/* compute.c */
void vc_compute_init(void);
void vc_compute_fork_lock(void);
void vc_compute_fork_unlock(void);

/* node.c: this container's record file for a GPU (its compute budget, its processes' busy spans), and the
 * records of the containers the plugin placed on the same GPU, read-only (see docs/shim.md). */
struct vc_span;
/* Maps the container's record for config record `rec` and claims a process slot; 0 on success, -1 = none. */
int vc_node_open(int rec, uint64_t now);
/* The container's shared budget in the record (valid after vc_node_open succeeded). */
int64_t *vc_node_tokens(int rec);
uint64_t *vc_node_refill(int rec);
void vc_node_publish(int rec, uint64_t start, uint64_t end, uint64_t now);
void vc_node_set_open(int rec, uint64_t since, uint64_t until, uint64_t now);
/* Other contexts' busy spans overlapping [start, end): this container's other processes (the first
 * `*siblings`), then the placed neighbours' (open spans clipped at `now`); returns the count. */
unsigned vc_node_others(int rec, uint64_t start, uint64_t end, uint64_t now, struct vc_span *out, unsigned cap,
                        unsigned *siblings);
/* Sum of the placed neighbours' shares on that GPU (percent), from the plugin's placement list. */
uint32_t vc_node_neighbour_pct(int rec);

/* nvml.c: 1 when processes outside this container run on the GPU of config record `rec` (or unknown). */
int vc_nvml_others_active(int rec);

#endif /* VCUDA_SHIM_H */
