/* Shim test program: reaches the driver one of three ways (contracts §7.5), chosen at build time:
 *   APP_MODE 1  linked directly with -lcuda;
 *   APP_MODE 2  runtime-style: dlopen + dlsym("cuGetProcAddress_v2") + base-name lookups (versions 3020,
 *               4000, 7000, flags 0 and 2), then lookups through the cuGetProcAddress it returned;
 *   APP_MODE 3  legacy CUDA 11.x cuGetProcAddress (v1).
 * Then runs the commands given as arguments and prints one line per command:
 *   init | ctx <dev> | alloc <MiB> | pitch <w> <h> | managed <MiB> | async <MiB> | pool <MiB> | create <MiB> |
 *   array <w> <h> | array3d <w> <h> <d> | mipmap <w> <h> <levels> | free | freeall | info | total <dev> |
 *   launch <n> | launch_ptsz <n> | launch_ex <n> | coop <n> | graph <n> | pause | run <seconds> |
 *   bench_launch <n> | bench_alloc <n> <live>
 */
#define _GNU_SOURCE
#define CUDA_ENABLE_DEPRECATED 1
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#undef cuGetProcAddress
CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags);

#ifndef APP_MODE
#define APP_MODE 1
#endif

typedef CUresult (*gpa2_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*gpa1_t)(const char *, void **, int, cuuint64_t);

static struct {
    __typeof__(&cuInit) init;
    __typeof__(&cuDevicePrimaryCtxRetain) retain;
    __typeof__(&cuCtxSetCurrent) set_current;
    __typeof__(&cuMemAlloc_v2) alloc;
    __typeof__(&cuMemAllocPitch_v2) pitch;
    __typeof__(&cuMemAllocManaged) managed;
    __typeof__(&cuMemAllocAsync) alloc_async;
    __typeof__(&cuMemAllocFromPoolAsync) alloc_pool;
    __typeof__(&cuMemFree_v2) free;
    __typeof__(&cuMemFreeAsync) free_async;
    __typeof__(&cuMemCreate) create;
    __typeof__(&cuMemRelease) release;
    __typeof__(&cuArrayCreate_v2) array;
    __typeof__(&cuArray3DCreate_v2) array3d;
    __typeof__(&cuArrayDestroy) array_destroy;
    __typeof__(&cuMipmappedArrayCreate) mipmap;
    __typeof__(&cuMipmappedArrayDestroy) mipmap_destroy;
    __typeof__(&cuMemGetInfo_v2) info;
    __typeof__(&cuDeviceTotalMem_v2) total;
    __typeof__(&cuLaunchKernel) launch;
    __typeof__(&cuLaunchKernel) launch_ptsz;
    __typeof__(&cuLaunchKernelEx) launch_ex;
    __typeof__(&cuLaunchCooperativeKernel) coop;
    __typeof__(&cuGraphLaunch) graph;
    __typeof__(&cuCtxSynchronize) sync;
} api;

#if APP_MODE == 1
CUresult cuLaunchKernel_ptsz(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
                             unsigned int, unsigned int, CUstream, void **, void **);
static void load_api(void) {
    api.init = cuInit; api.retain = cuDevicePrimaryCtxRetain; api.set_current = cuCtxSetCurrent;
    api.alloc = cuMemAlloc_v2; api.pitch = cuMemAllocPitch_v2; api.managed = cuMemAllocManaged;
    api.alloc_async = cuMemAllocAsync; api.alloc_pool = cuMemAllocFromPoolAsync; api.free = cuMemFree_v2;
    api.free_async = cuMemFreeAsync; api.create = cuMemCreate; api.release = cuMemRelease;
    api.array = cuArrayCreate_v2; api.array3d = cuArray3DCreate_v2; api.array_destroy = cuArrayDestroy;
    api.mipmap = cuMipmappedArrayCreate; api.mipmap_destroy = cuMipmappedArrayDestroy;
    api.info = cuMemGetInfo_v2; api.total = cuDeviceTotalMem_v2; api.launch = cuLaunchKernel;
    api.launch_ptsz = cuLaunchKernel_ptsz; api.launch_ex = cuLaunchKernelEx; api.coop = cuLaunchCooperativeKernel;
    api.graph = cuGraphLaunch; api.sync = cuCtxSynchronize;
}
#else
static gpa2_t gpa2;
static gpa1_t gpa1;

static void *lookup(const char *name, int version, cuuint64_t flags) {
    void *fn = NULL;
    CUdriverProcAddressQueryResult st;
    CUresult r = APP_MODE == 2 ? gpa2(name, &fn, version, flags, &st) : gpa1(name, &fn, version, flags);
    if (r != CUDA_SUCCESS || !fn) {
        printf("lookup-failed %s\n", name);
        exit(3);
    }
    return fn;
}

#define L(field, name, ver, flags) *(void **)&api.field = lookup(name, ver, flags)
static void load_api(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h) { printf("dlopen-failed %s\n", dlerror()); exit(3); }
    if (APP_MODE == 2) {
        gpa2 = (gpa2_t)dlsym(h, "cuGetProcAddress_v2");
        /* cudart re-resolves cuGetProcAddress through itself; later lookups go through that pointer. */
        gpa2 = (gpa2_t)lookup("cuGetProcAddress", 12000, 0);
    } else {
        gpa1 = (gpa1_t)dlsym(h, "cuGetProcAddress");
        gpa1 = (gpa1_t)lookup("cuGetProcAddress", 11030, 0);
    }
    L(init, "cuInit", 2000, 0); L(retain, "cuDevicePrimaryCtxRetain", 7000, 0); L(set_current, "cuCtxSetCurrent", 4000, 0);
    L(alloc, "cuMemAlloc", 3020, 0); L(pitch, "cuMemAllocPitch", 3020, 0); L(managed, "cuMemAllocManaged", 6000, 0);
    L(alloc_async, "cuMemAllocAsync", 11020, 0); L(alloc_pool, "cuMemAllocFromPoolAsync", 11020, 2);
    L(free, "cuMemFree", 3020, 0); L(free_async, "cuMemFreeAsync", 11020, 2); L(create, "cuMemCreate", 10020, 0);
    L(release, "cuMemRelease", 10020, 0); L(array, "cuArrayCreate", 3020, 0); L(array3d, "cuArray3DCreate", 3020, 0);
    L(array_destroy, "cuArrayDestroy", 2000, 0); L(mipmap, "cuMipmappedArrayCreate", 5000, 0);
    L(mipmap_destroy, "cuMipmappedArrayDestroy", 5000, 0); L(info, "cuMemGetInfo", 3020, 0);
    L(total, "cuDeviceTotalMem", 3020, 0); L(launch, "cuLaunchKernel", 4000, 0);
    L(launch_ptsz, "cuLaunchKernel", 7000, 2); L(launch_ex, "cuLaunchKernelEx", 11060, 0);
    L(coop, "cuLaunchCooperativeKernel", 9000, 0); L(graph, "cuGraphLaunch", 10000, 2); L(sync, "cuCtxSynchronize", 2000, 0);
}
#endif

#define MAX_LIVE 20000
static CUdeviceptr live[MAX_LIVE];
static int live_kind[MAX_LIVE]; /* 0 ptr, 1 async, 2 handle, 3 array, 4 mipmap */
static int nlive;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void keep(CUresult r, CUdeviceptr p, int kind) {
    if (r == CUDA_SUCCESS && nlive < MAX_LIVE) { live[nlive] = p; live_kind[nlive++] = kind; }
}

static CUresult release_one(int i) {
    switch (live_kind[i]) {
    case 1: return api.free_async(live[i], NULL);
    case 2: return api.release((CUmemGenericAllocationHandle)live[i]);
    case 3: return api.array_destroy((CUarray)(uintptr_t)live[i]);
    case 4: return api.mipmap_destroy((CUmipmappedArray)(uintptr_t)live[i]);
    default: return api.free(live[i]);
    }
}

static int launch_n(const char *how, long n) {
    CUresult r = CUDA_SUCCESS;
    CUlaunchConfig cfg = {0};
    for (long i = 0; i < n && r == CUDA_SUCCESS; i++) {
        if (!strcmp(how, "launch")) r = api.launch(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
        else if (!strcmp(how, "launch_ptsz")) r = api.launch_ptsz(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
        else if (!strcmp(how, "launch_ex")) r = api.launch_ex(&cfg, NULL, NULL, NULL);
        else if (!strcmp(how, "coop")) r = api.coop(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL);
        else r = api.graph(NULL, NULL);
    }
    return r;
}

static void alloc_cmd(const char *cmd, char **argv, int *i) {
    CUresult r;
    CUdeviceptr p = 0;
    size_t mib = strtoull(argv[++*i], NULL, 10) << 20;
    if (!strcmp(cmd, "alloc")) { r = api.alloc(&p, mib); keep(r, p, 0); }
    else if (!strcmp(cmd, "managed")) { r = api.managed(&p, mib, CU_MEM_ATTACH_GLOBAL); keep(r, p, 0); }
    else if (!strcmp(cmd, "async")) { r = api.alloc_async(&p, mib, NULL); keep(r, p, 1); }
    else if (!strcmp(cmd, "pool")) { r = api.alloc_pool(&p, mib, NULL, NULL); keep(r, p, 1); }
    else {
        CUmemAllocationProp prop = {0};
        CUmemGenericAllocationHandle h = 0;
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = 0;
        r = api.create(&h, mib, &prop, 0);
        keep(r, (CUdeviceptr)h, 2);
    }
    printf("%s %d\n", cmd, (int)r);
}

static void array_cmd(const char *cmd, char **argv, int *i) {
    CUresult r;
    CUarray a = NULL;
    CUmipmappedArray m = NULL;
    CUDA_ARRAY3D_DESCRIPTOR d3 = {0};
    d3.Format = CU_AD_FORMAT_FLOAT;
    d3.NumChannels = 1;
    d3.Width = strtoull(argv[++*i], NULL, 10);
    d3.Height = strtoull(argv[++*i], NULL, 10);
    if (!strcmp(cmd, "array")) {
        CUDA_ARRAY_DESCRIPTOR d = {d3.Width, d3.Height, CU_AD_FORMAT_FLOAT, 1};
        r = api.array(&a, &d);
        keep(r, (CUdeviceptr)(uintptr_t)a, 3);
    } else if (!strcmp(cmd, "array3d")) {
        d3.Depth = strtoull(argv[++*i], NULL, 10);
        r = api.array3d(&a, &d3);
        keep(r, (CUdeviceptr)(uintptr_t)a, 3);
    } else {
        unsigned levels = (unsigned)strtoul(argv[++*i], NULL, 10);
        r = api.mipmap(&m, &d3, levels);
        keep(r, (CUdeviceptr)(uintptr_t)m, 4);
    }
    printf("%s %d\n", cmd, (int)r);
}

static void bench_alloc(long n, long live_n) {
    CUdeviceptr p;
    for (long k = 0; k < live_n; k++) { if (api.alloc(&p, 4096) == CUDA_SUCCESS) keep(CUDA_SUCCESS, p, 0); }
    uint64_t t0 = now_ns();
    for (long k = 0; k < n; k++) {
        api.alloc(&p, 1 << 20);
        api.free(p);
    }
    printf("bench_alloc %.2f\n", (double)(now_ns() - t0) / (double)n);
}

static void run_for(double seconds) {
    /* Launch continuously for `seconds`; print launches and the fake GPU's busy share of wall time. */
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9), launches = 0;
    while (now_ns() < end) {
        if (api.launch(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL) != CUDA_SUCCESS) break;
        launches++;
    }
    api.sync();
    printf("run %llu %.6f\n", (unsigned long long)launches, (double)(now_ns() - t0) / 1e9);
}

static int command(char **argv, int *i) {
    const char *cmd = argv[*i];
    CUresult r;
    if (!strcmp(cmd, "init")) { printf("init %d\n", (int)api.init(0)); }
    else if (!strcmp(cmd, "ctx")) {
        CUcontext c;
        r = api.retain(&c, atoi(argv[++*i]));
        if (r == CUDA_SUCCESS) r = api.set_current(c);
        printf("ctx %d\n", (int)r);
    } else if (!strcmp(cmd, "alloc") || !strcmp(cmd, "managed") || !strcmp(cmd, "async") || !strcmp(cmd, "pool") || !strcmp(cmd, "create")) alloc_cmd(cmd, argv, i);
    else if (!strcmp(cmd, "array") || !strcmp(cmd, "array3d") || !strcmp(cmd, "mipmap")) array_cmd(cmd, argv, i);
    else if (!strcmp(cmd, "pitch")) {
        CUdeviceptr p;
        size_t pitch, w = strtoull(argv[*i + 1], NULL, 10), h = strtoull(argv[*i + 2], NULL, 10);
        *i += 2;
        r = api.pitch(&p, &pitch, w, h, 4);
        keep(r, p, 0);
        printf("pitch %d\n", (int)r);
    } else if (!strcmp(cmd, "free")) { printf("free %d\n", nlive ? (int)release_one(--nlive) : -1); }
    else if (!strcmp(cmd, "freeall")) { int bad = 0; while (nlive) bad |= release_one(--nlive) != CUDA_SUCCESS; printf("freeall %d\n", bad); }
    else if (!strcmp(cmd, "info")) { size_t f = 0, t = 0; r = api.info(&f, &t); printf("info %d %zu %zu\n", (int)r, f, t); }
    else if (!strcmp(cmd, "total")) { size_t t = 0; r = api.total(&t, atoi(argv[++*i])); printf("total %d %zu\n", (int)r, t); }
    else if (!strcmp(cmd, "pause")) { printf("paused\n"); fflush(stdout); char line[16]; if (!fgets(line, sizeof line, stdin)) return 1; }
    else if (!strcmp(cmd, "run")) run_for(atof(argv[++*i]));
    else if (!strcmp(cmd, "bench_launch")) {
        long n = atol(argv[++*i]);
        uint64_t t0 = now_ns();
        launch_n("launch", n);
        printf("bench_launch %.3f\n", (double)(now_ns() - t0) / (double)n);
    } else if (!strcmp(cmd, "bench_alloc")) { long n = atol(argv[*i + 1]), l = atol(argv[*i + 2]); *i += 2; bench_alloc(n, l); }
    else if (!strncmp(cmd, "launch", 6) || !strcmp(cmd, "coop") || !strcmp(cmd, "graph")) {
        long n = atol(argv[++*i]);
        printf("%s %d\n", cmd, launch_n(cmd, n));
    } else { printf("unknown %s\n", cmd); return 2; }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    load_api();
    for (int i = 1; i < argc; i++)
        if (command(argv, &i) != 0) return 2;
    return 0;
}
