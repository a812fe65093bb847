/* Interposition: the exported dlsym, the real driver's entry points, and cuGetProcAddress(_v2).
 *
 * The CUDA runtime obtains cuGetProcAddress_v2 with dlsym on its libcuda handle and then resolves every
 * entry point through it (contracts §7.2), so both paths must hand out the shim's hooks. A driver lookup is
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
#define VC_NO_ASAN __attribute__((no_sanitize_address))

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

void *vc_hook_by_name(const char *name) {
    for (size_t i = 0; i < VC_HOOK_COUNT; i++)
        if (strcmp(vc_hooks[i].name, name) == 0) return vc_hooks[i].hook;
    return NULL;
}

/* Names without a version suffix the driver may answer for a per-thread-stream lookup with a _ptsz symbol. */
static int vc_variant_name(const char *sym, cuuint64_t flags, const char *suffix, char *out, size_t cap) {
    const char *ptsz = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ? "_ptsz" : "";
    int n = snprintf(out, cap, "%s%s%s", sym, ptsz, suffix);
    return n > 0 && (size_t)n < cap;
}

/* The hook standing for the real pointer the driver returned; the real pointer itself if none applies. */
static void *vc_substitute(void *real, const char *sym, cuuint64_t flags) {
    for (size_t i = 0; i < VC_HOOK_COUNT; i++)
        if (*vc_hooks[i].real == real) return vc_hooks[i].hook;
    /* Driver pointer not among the exported ones: adopt it only into an empty slot of the same name. */
    static const char *const suffixes[] = {"_v3", "_v2", ""};
    char name[128];
    for (int s = 0; s < 3; s++) {
        if (!vc_variant_name(sym, flags, suffixes[s], name, sizeof name)) continue;
        for (size_t i = 0; i < VC_HOOK_COUNT; i++) {
            if (strcmp(vc_hooks[i].name, name) != 0) continue;
            if (*vc_hooks[i].real == NULL) {
                __atomic_store_n(vc_hooks[i].real, real, __ATOMIC_RELEASE);
                return vc_hooks[i].hook;
            }
            vc_log_debug("cuGetProcAddress(%s): driver pointer differs from %s, not hooked", sym, name);
            return real;
        }
    }
    return real;
}

VC_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                       CUdriverProcAddressQueryResult *status) {
    vc_load_driver();
    if (!vc_real.cuGetProcAddress_v2) return CUDA_ERROR_NOT_FOUND;
    CUresult r = vc_real.cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, status);
    if (r == CUDA_SUCCESS && pfn && *pfn && symbol) *pfn = vc_substitute(*pfn, symbol, flags);
    return r;
}

VC_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags) {
    vc_load_driver();
    if (!vc_real.cuGetProcAddress) return CUDA_ERROR_NOT_FOUND;
    CUresult r = vc_real.cuGetProcAddress(symbol, pfn, cudaVersion, flags);
    if (r == CUDA_SUCCESS && pfn && *pfn && symbol) *pfn = vc_substitute(*pfn, symbol, flags);
    return r;
}

/* Every dlsym in the process comes here; only cu* and nvml* names cost more than two byte compares. */
VC_EXPORT VC_NO_ASAN void *dlsym(void *handle, const char *name) {
    if (name[0] == 'c' && name[1] == 'u') {
        void *hook = vc_hook_by_name(name);
        if (hook) {
            vc_load_driver();
            return hook;
        }
    } else if (name[0] == 'n' && strncmp(name, "nvml", 4) == 0) {
        void *hook = vc_nvml_hook_by_name(name);
        if (hook) return hook;
    }
    return vc_real_dlsym(handle, name);
}
