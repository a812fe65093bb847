/* Interposition: the exported dlsym, the real driver's entry points, and cuGetProcAddress(_v2).
 *
 * The CUDA runtime obtains cuGetProcAddress_v2 with dlsym on its libcuda handle and then resolves every
 * entry point through it (the cudart-style path of tests/integration/test_shim_loading.py), so both paths must hand out the shim's hooks. A driver lookup is
 * always forwarded first; the pointer the driver chose (for that version and flags, e.g. a _ptsz variant)
 * is then swapped for the hook wrapping exactly that real function, so the ABI always matches.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "shim.h"

vc_real_t vc_real;

typedef struct vc_hook {
    const char *name;
    void *hook;
    void **real; /* slot in vc_real */
} vc_hook_t;

static vc_hook_t vc_hooks[] = {
#define VC_ENTRY(n) {#n, (void *)&n, (void **)&vc_real.n},
    VC_CUDA_HOOKS(VC_ENTRY)
#undef VC_ENTRY
};
#define VC_HOOK_COUNT (sizeof vc_hooks / sizeof vc_hooks[0])

static void *(*vc_dlsym_fn)(void *, const char *);

/* dlsym is called by sanitizer runtimes before they are initialised: keep its path uninstrumented. */
#define VC_NO_ASAN __attribute__((no_sanitize_address, no_sanitize_thread))

VC_NO_ASAN static void vc_find_real_dlsym(void) {
    static const char *const versions[] = {"GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_2.17", "GLIBC_2.0", NULL};
    for (int i = 0; versions[i] && !vc_dlsym_fn; i++)
        vc_dlsym_fn = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", versions[i]);
}

VC_NO_ASAN void *vc_real_dlsym(void *handle, const char *name) {
    if (VC_UNLIKELY(!vc_dlsym_fn)) vc_find_real_dlsym();
    return vc_dlsym_fn ? vc_dlsym_fn(handle, name) : NULL;
}

static void *vc_driver_symbol(void *handle, const char *name) {
    void *p = handle ? vc_real_dlsym(handle, name) : NULL;
    return p ? p : vc_real_dlsym(RTLD_NEXT, name);
}

static void vc_load_once(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NODELETE);
    if (!h) h = dlopen("libcuda.so", RTLD_NOW | RTLD_NODELETE);
    vc_real.handle = h;
    for (size_t i = 0; i < VC_HOOK_COUNT; i++) *vc_hooks[i].real = vc_driver_symbol(h, vc_hooks[i].name);
#define VC_USED(n) vc_real.n = (__typeof__(vc_real.n))vc_driver_symbol(h, #n);
    VC_CUDA_USED(VC_USED)
#undef VC_USED
    if (!vc_real.cuDeviceGetUuid_v2) vc_real.cuDeviceGetUuid_v2 = (__typeof__(vc_real.cuDeviceGetUuid_v2))
        vc_driver_symbol(h, "cuDeviceGetUuid");
    if (!vc_real.cuEventElapsedTime_v2) vc_real.cuEventElapsedTime_v2 =
        (__typeof__(vc_real.cuEventElapsedTime_v2))vc_driver_symbol(h, "cuEventElapsedTime");
    vc_log_debug("driver %s loaded", h ? "libcuda.so.1" : "(not found)");
}

void vc_load_driver(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, vc_load_once);
}

static vc_hook_t *vc_hook_named(const char *name) {
    for (size_t i = 0; i < VC_HOOK_COUNT; i++)
        if (strcmp(vc_hooks[i].name, name) == 0) return &vc_hooks[i];
    return NULL;
}

void *vc_hook_by_name(const char *name) {
    vc_hook_t *h = vc_hook_named(name);
    return h ? h->hook : NULL;
}

/* Families (names without _v2 / _ptsz) whose hooks count or report device memory: a variant of one of them
 * that no hook can stand for (the v1 cuMemAlloc) is a bypass of the limit, worth a warning. */
static const char *const vc_memory_families[] = {
    "cuMemAlloc", "cuMemAllocPitch", "cuMemAllocManaged", "cuMemAllocAsync", "cuMemAllocFromPoolAsync",
    "cuMemCreate", "cuArrayCreate", "cuArray3DCreate", "cuMipmappedArrayCreate", "cuMemGetInfo",
    "cuDeviceTotalMem", NULL,
};

static int vc_counts_memory(const char *base) {
    for (int i = 0; vc_memory_families[i]; i++)
        if (strcmp(vc_memory_families[i], base) == 0) return 1;
    return 0;
}

/* The CUDA version from which the driver hands out a family's _v2 entry point (cuda.h's mappings). */
static int vc_v2_since(const char *base) {
    if (strcmp(base, "cuGetProcAddress") == 0) return 12000;
    if (strncmp(base, "cuDevicePrimaryCtx", 18) == 0) return 11000;
    if (strcmp(base, "cuCtxDestroy") == 0) return 4000;
    return 3020;
}

/* The hook standing for what the driver answers to (symbol, version, flags), chosen by NAME: the driver may
 * return an internal entry point (a trampoline) rather than the exported symbol, so pointers prove nothing
 * (docs/shim.md; tests/fakes/driver/fake_cuda.c does the same). NULL when no hook has that entry point's ABI (e.g. a v1 entry point before CUDA 3.2). */
static vc_hook_t *vc_hook_for(const char *sym, int version, cuuint64_t flags) {
    char name[128];
    vc_hook_t *h;
    if ((flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) &&
        snprintf(name, sizeof name, "%s_ptsz", sym) < (int)sizeof name && (h = vc_hook_named(name)))
        return h;
    if (snprintf(name, sizeof name, "%s_v2", sym) < (int)sizeof name && (h = vc_hook_named(name)) &&
        version >= vc_v2_since(sym))
        return h;
    return vc_hook_named(sym);
}

static void *vc_substitute(void *real, const char *sym, int version, cuuint64_t flags) {
    vc_hook_t *h = vc_hook_for(sym, version, flags);
    if (!h) {
        if (vc_counts_memory(sym))
            vc_log_warn("cuGetProcAddress(%s, version %d): this entry point cannot be hooked; what the "
                        "application does through it is NOT limited", sym, version);
        return real;
    }
    /* A driver without the exported symbol: the hook calls the pointer the driver chose. */
    void *none = NULL;
    __atomic_compare_exchange_n(h->real, &none, real, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return h->hook;
}

VC_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                       CUdriverProcAddressQueryResult *status) {
    vc_load_driver();
    if (!vc_real.cuGetProcAddress_v2) return CUDA_ERROR_NOT_FOUND;
    CUresult r = vc_real.cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, status);
    if (r == CUDA_SUCCESS && pfn && *pfn && symbol) *pfn = vc_substitute(*pfn, symbol, cudaVersion, flags);
    return r;
}

VC_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags) {
    vc_load_driver();
    if (!vc_real.cuGetProcAddress) return CUDA_ERROR_NOT_FOUND;
    CUresult r = vc_real.cuGetProcAddress(symbol, pfn, cudaVersion, flags);
    if (r == CUDA_SUCCESS && pfn && *pfn && symbol) *pfn = vc_substitute(*pfn, symbol, cudaVersion, flags);
    return r;
}

/* A cu* name the shim does not hook: a variant of a hooked family (e.g. the v1 cuMemAlloc) bypasses the limit. */
static void vc_warn_unhooked(const char *name) {
    char base[128];
    size_t n = strlen(name);
    if (n >= sizeof base) return;
    memcpy(base, name, n + 1);
    char *suffix = strstr(base, "_v");
    if (suffix) *suffix = 0;
    if (vc_counts_memory(base))
        vc_log_warn("dlsym(%s): this entry point cannot be hooked; what the application does through it is NOT "
                    "limited", name);
}

/* Every dlsym in the process comes here; only cu* and nvml* names cost more than two byte compares. A hook is
 * handed out only for a symbol the driver (for nvml*, the library asked) has: for one it lacks, the answer is
 * NULL, as without the shim. */
VC_EXPORT VC_NO_ASAN void *dlsym(void *handle, const char *name) {
    if (name[0] == 'c' && name[1] == 'u') {
        vc_hook_t *h = vc_hook_named(name);
        if (h) {
            vc_load_driver();
            return __atomic_load_n(h->real, __ATOMIC_ACQUIRE) ? h->hook : NULL;
        }
        void *p = vc_real_dlsym(handle, name);
        if (p) vc_warn_unhooked(name);
        return p;
    } else if (name[0] == 'n' && strncmp(name, "nvml", 4) == 0) {
        /* Only where the asked library has the symbol (an NVML before R510 has no _v2): else NULL, as without us. */
        void *hook = vc_nvml_hook_by_name(name), *real = vc_real_dlsym(handle, name);
        return hook && real ? hook : real;
    }
    return vc_real_dlsym(handle, name);
}
