/* Shim test program: reaches the driver one of three ways (docs/shim.md, "Tests and figures"), chosen at build time:
 *   APP_MODE 1  linked directly with -lcuda;
 *   APP_MODE 2  runtime-style: dlopen + dlsym("cuGetProcAddress_v2") + base-name lookups (versions 3020,
 *               4000, 7000, flags 0 and 2), then lookups through the cuGetProcAddress it returned;
 *   APP_MODE 3  legacy CUDA 11.x cuGetProcAddress (v1).
 * Then runs the commands given as arguments and prints one line per command:
 *   init | ctx <dev> | alloc <MiB> | pitch <w> <h> | managed <MiB> | async <MiB> | pool <MiB> | create <MiB> |
 *   array <w> <h> | array3d <w> <h> <d> | mipmap <w> <h> <levels> | free | freeall | info | total <dev> |
 *   launch <n> | launch_ptsz <n> | launch_ex <n> | coop <n> | graph <n> | pause | run <seconds> |
 *   bench_launch <n> | bench_alloc <n> <live> |
 *   threads <n> <iters> <MiB> (n threads alloc/free in the current context: "threads <refused> <bad frees>") |
 *   bench_threads <n> <pairs> (thread CPU ns per alloc/free pair) | ctxcreate <dev> | ctxdestroy |
 *   reset <dev> | release <dev> | reset1 <dev> | release1 <dev> (their v1 entry points) | noctx | stream |
 *   salloc <MiB> (async on that stream) |
 *   vmm <MiB> (create + reserve + map) | vrelease | vunmap | sym <name> (dlsym on libcuda.so.1: 1 found) |
 *   lookup <name> <version> <flags> (cuGetProcAddress; APP_MODE 2 and 3) |
 *   exec <commands...> (the rest runs in a new image of this program, same pid) |
 *   forkalloc <MiB> (a child allocates and exits, reaped) | forkzombie <MiB> (same, left a zombie) |
 *   forkbusy <forks> (3 threads alloc/free/launch while the main thread forks; each child frees, allocates and
 *   launches under a 3 s alarm: "forkbusy <children that hung>")
 */
#define _GNU_SOURCE
#define CUDA_ENABLE_DEPRECATED 1
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#undef cuGetProcAddress
#undef cuDevicePrimaryCtxReset
#undef cuDevicePrimaryCtxRelease
CUresult cuDevicePrimaryCtxReset(CUdevice dev);
CUresult cuDevicePrimaryCtxRelease(CUdevice dev);
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
    __typeof__(&cuCtxCreate_v4) ctx_create;
    __typeof__(&cuCtxDestroy_v2) ctx_destroy;
    __typeof__(&cuDevicePrimaryCtxReset_v2) reset;
    __typeof__(&cuDevicePrimaryCtxRelease_v2) prim_release;
    __typeof__(&cuDevicePrimaryCtxReset_v2) reset1;         /* the v1 entry points of runtimes before CUDA 11 */
    __typeof__(&cuDevicePrimaryCtxRelease_v2) prim_release1;
    __typeof__(&cuStreamCreate) stream_create;
    __typeof__(&cuMemAddressReserve) va_reserve;
    __typeof__(&cuMemMap) map;
    __typeof__(&cuMemUnmap) unmap;
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
    api.ctx_create = cuCtxCreate_v4; api.ctx_destroy = cuCtxDestroy_v2; api.reset = cuDevicePrimaryCtxReset_v2;
    api.prim_release = cuDevicePrimaryCtxRelease_v2; api.stream_create = cuStreamCreate;
    api.reset1 = cuDevicePrimaryCtxReset; api.prim_release1 = cuDevicePrimaryCtxRelease;
    api.va_reserve = cuMemAddressReserve; api.map = cuMemMap; api.unmap = cuMemUnmap;
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
    L(ctx_create, "cuCtxCreate", 12050, 0); L(ctx_destroy, "cuCtxDestroy", 4000, 0);
    L(reset, "cuDevicePrimaryCtxReset", 11000, 0); L(prim_release, "cuDevicePrimaryCtxRelease", 11000, 0);
    L(reset1, "cuDevicePrimaryCtxReset", 10000, 0); L(prim_release1, "cuDevicePrimaryCtxRelease", 10000, 0);
    L(stream_create, "cuStreamCreate", 2000, 0); L(va_reserve, "cuMemAddressReserve", 10020, 0);
    L(map, "cuMemMap", 10020, 0); L(unmap, "cuMemUnmap", 10020, 0);
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

/* ---- Threads, contexts, streams, VMM (memory tests). */
static CUcontext cur_ctx, created_ctx;
static CUstream cur_stream;
static CUmemGenericAllocationHandle vmm_handle;
static CUdeviceptr vmm_va;
static size_t vmm_size;

typedef struct worker {
    pthread_t tid;
    long iters;
    size_t bytes;
    long refused, bad_frees;
    uint64_t cpu_ns;
} worker_t;

static uint64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static pthread_barrier_t start_line;

static void *alloc_free_loop(void *arg) {
    worker_t *w = arg;
    CUdeviceptr p;
    api.set_current(cur_ctx);
    pthread_barrier_wait(&start_line);
    uint64_t t0 = thread_cpu_ns();
    for (long k = 0; k < w->iters; k++) {
        if (api.alloc(&p, w->bytes) != CUDA_SUCCESS) { w->refused++; continue; }
        if (api.free(p) != CUDA_SUCCESS) w->bad_frees++;
    }
    w->cpu_ns = thread_cpu_ns() - t0;
    return NULL;
}

/* n threads of alloc/free; returns the sums in *total (refused, bad frees) and the mean CPU ns per pair. */
static double run_workers(int n, long iters, size_t bytes, worker_t *total) {
    worker_t w[64] = {0};
    double ns = 0;
    if (n > 64) n = 64;
    pthread_barrier_init(&start_line, NULL, (unsigned)n);
    for (int t = 0; t < n; t++) {
        w[t].iters = iters;
        w[t].bytes = bytes;
        pthread_create(&w[t].tid, NULL, alloc_free_loop, &w[t]);
    }
    for (int t = 0; t < n; t++) {
        pthread_join(w[t].tid, NULL);
        total->refused += w[t].refused;
        total->bad_frees += w[t].bad_frees;
        ns += (double)w[t].cpu_ns / (double)iters / n;
    }
    pthread_barrier_destroy(&start_line);
    return ns;
}

static void vmm_cmd(const char *cmd, char **argv, int *i) {
    CUresult r;
    if (!strcmp(cmd, "vmm")) {
        CUmemAllocationProp prop = {0};
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        vmm_size = strtoull(argv[++*i], NULL, 10) << 20;
        r = api.create(&vmm_handle, vmm_size, &prop, 0);
        if (r == CUDA_SUCCESS) r = api.va_reserve(&vmm_va, vmm_size, 0, 0, 0);
        if (r == CUDA_SUCCESS) r = api.map(vmm_va, vmm_size, 0, vmm_handle, 0);
    } else if (!strcmp(cmd, "vrelease")) r = api.release(vmm_handle);
    else r = api.unmap(vmm_va, vmm_size);
    printf("%s %d\n", cmd, (int)r);
}

static int lookup_cmd(char **argv, int *i) {
    const char *name = argv[++*i];
    int version = atoi(argv[++*i]);
    cuuint64_t flags = strtoull(argv[++*i], NULL, 10);
    void *fn = NULL;
#if APP_MODE == 1
    (void)name; (void)version; (void)flags; (void)fn;
    printf("lookup -1\n");
#else
    CUdriverProcAddressQueryResult st;
    CUresult r = APP_MODE == 2 ? gpa2(name, &fn, version, flags, &st) : gpa1(name, &fn, version, flags);
    printf("lookup %d\n", (int)r);
#endif
    return 0;
}

/* A child that allocates `MiB` in the current context and exits without freeing; reaped or left a zombie. */
static void fork_cmd(const char *cmd, char **argv, int *i) {
    size_t bytes = strtoull(argv[++*i], NULL, 10) << 20;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        CUdeviceptr p;
        printf("child %d\n", (int)api.alloc(&p, bytes));
        fflush(stdout);
        _exit(0);
    }
    int status = -1;
    siginfo_t info;
    if (!strcmp(cmd, "forkalloc")) waitpid(pid, &status, 0);
    else status = waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT); /* exited, not reaped */
    printf("%s %d\n", cmd, status);
}

/* Forks while other threads are inside the shim's allocation paths (holding its locks, at random points). A
 * child's first CUDA calls must return, not wait forever on a lock whose holder did not survive the fork. */
static int busy_stop;

static void *busy_loop(void *arg) {
    CUdeviceptr p;
    (void)arg;
    api.set_current(cur_ctx);
    while (!__atomic_load_n(&busy_stop, __ATOMIC_RELAXED)) {
        if (api.alloc(&p, 1 << 20) == CUDA_SUCCESS) api.free(p);
        api.launch(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
    }
    return NULL;
}

static void fork_busy(int forks) {
    pthread_t t[3];
    int hung = 0;
    __atomic_store_n(&busy_stop, 0, __ATOMIC_RELAXED);
    for (int k = 0; k < 3; k++) pthread_create(&t[k], NULL, busy_loop, NULL);
    fflush(stdout);
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid == 0) {
            CUdeviceptr p;
            alarm(3);
            api.free((CUdeviceptr)0x1000);
            if (api.alloc(&p, 1 << 20) == CUDA_SUCCESS) api.free(p);
            api.launch(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        hung += WIFSIGNALED(status);
    }
    __atomic_store_n(&busy_stop, 1, __ATOMIC_RELAXED);
    for (int k = 0; k < 3; k++) pthread_join(t[k], NULL);
    printf("forkbusy %d\n", hung);
}

static int memory_command(const char *cmd, char **argv, int *i) {
    CUresult r;
    worker_t total = {0};
    if (!strcmp(cmd, "threads")) {
        int n = atoi(argv[++*i]);
        long iters = atol(argv[++*i]);
        size_t bytes = strtoull(argv[++*i], NULL, 10) << 20;
        run_workers(n, iters, bytes, &total);
        printf("threads %ld %ld\n", total.refused, total.bad_frees);
    } else if (!strcmp(cmd, "bench_threads")) {
        int n = atoi(argv[++*i]);
        long pairs = atol(argv[++*i]);
        double ns = run_workers(n, pairs, 1 << 20, &total);
        printf("bench_threads %.2f %ld\n", ns, total.refused);
    } else if (!strcmp(cmd, "ctxcreate")) {
        r = api.ctx_create(&created_ctx, NULL, 0, atoi(argv[++*i]));
        printf("ctxcreate %d\n", (int)r);
    } else if (!strcmp(cmd, "ctxdestroy")) printf("ctxdestroy %d\n", (int)api.ctx_destroy(created_ctx));
    else if (!strcmp(cmd, "reset")) printf("reset %d\n", (int)api.reset(atoi(argv[++*i])));
    else if (!strcmp(cmd, "release")) printf("release %d\n", (int)api.prim_release(atoi(argv[++*i])));
    else if (!strcmp(cmd, "reset1")) printf("reset1 %d\n", (int)api.reset1(atoi(argv[++*i])));
    else if (!strcmp(cmd, "release1")) printf("release1 %d\n", (int)api.prim_release1(atoi(argv[++*i])));
    else if (!strcmp(cmd, "noctx")) printf("noctx %d\n", (int)api.set_current(NULL));
    else if (!strcmp(cmd, "stream")) printf("stream %d\n", (int)api.stream_create(&cur_stream, 0));
    else if (!strcmp(cmd, "salloc")) {
        CUdeviceptr p = 0;
        r = api.alloc_async(&p, strtoull(argv[++*i], NULL, 10) << 20, cur_stream);
        keep(r, p, 1);
        printf("salloc %d\n", (int)r);
    } else if (!strcmp(cmd, "vmm") || !strcmp(cmd, "vrelease") || !strcmp(cmd, "vunmap")) vmm_cmd(cmd, argv, i);
    else if (!strcmp(cmd, "sym")) {
        const char *name = argv[++*i];
        void *h = dlopen("libcuda.so.1", RTLD_NOW);
        printf("sym %s %d\n", name, h && dlsym(h, name) ? 1 : 0);
    } else if (!strcmp(cmd, "lookup")) return lookup_cmd(argv, i);
    else if (!strcmp(cmd, "forkalloc") || !strcmp(cmd, "forkzombie")) fork_cmd(cmd, argv, i);
    else if (!strcmp(cmd, "forkbusy")) fork_busy(atoi(argv[++*i]));
    else if (!strcmp(cmd, "exec")) {
        argv[*i] = argv[0]; /* the new image gets the remaining commands */
        fflush(stdout);
        execv("/proc/self/exe", &argv[*i]);
        printf("exec-failed\n");
        return 1;
    } else return 1;
    return 0;
}

static int command(char **argv, int *i) {
    const char *cmd = argv[*i];
    CUresult r;
    if (!strcmp(cmd, "init")) { printf("init %d\n", (int)api.init(0)); }
    else if (!strcmp(cmd, "ctx")) {
        CUcontext c;
        r = api.retain(&c, atoi(argv[++*i]));
        if (r == CUDA_SUCCESS) r = api.set_current(c);
        cur_ctx = c;
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
    } else if (memory_command(cmd, argv, i) != 0) { printf("unknown %s\n", cmd); return 2; }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    load_api();
    for (int i = 1; i < argc; i++)
        if (command(argv, &i) != 0) return 2;
    return 0;
}
