/* Compute-limit test program (linked directly with the FAKE libcuda.so.1): contexts, streams, capture, graphs
 * and threads, driven by commands given as arguments; prints one line per command:
 *   init | ctx <dev> | ctx_create <dev> | reset <dev> | stream | capture <0 global|1 thread|2 relaxed> |
 *   end (ends the capture, instantiates the graph) | launch <n> | big <gridDimX> <n> | run <seconds> |
 *   graph_run <seconds> | capture_during <seconds> (another thread holds a global-mode capture meanwhile) |
 *   bench <n> (ns per launch) | steps <seconds> <pause ms> (100 launches, synchronize, pause; repeated) |
 *   rotate <contexts> <launches> (cuCtxCreate that many, launch in each in turn: "rotate <r> <live events>") |
 *   alternate <seconds> <gx0> <gx1> (one thread, launches alternating between devices 0 and 1 by
 *   cuCtxSetCurrent: "alternate <launches per device> <wall s>")
 * `run` prints "run <launches> <wall s> <cpu s>"; launches go to the current stream (NULL until `stream`).
 */
#define _GNU_SOURCE
#define CUDA_ENABLE_DEPRECATED 1
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static CUcontext ctx;
static CUstream stream;
static CUgraphExec exec;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static CUresult launch(unsigned gx) { return cuLaunchKernel(NULL, gx, 1, 1, 32, 1, 1, 0, stream, NULL, NULL); }

static void run_for(double seconds, int graph) {
    double t0 = now_s(), c0 = cpu_s();
    unsigned long long n = 0;
    while (now_s() - t0 < seconds) {
        if ((graph ? cuGraphLaunch(exec, stream) : launch(1)) != CUDA_SUCCESS) break;
        n++;
    }
    cuCtxSynchronize();
    printf("%s %llu %.6f %.6f\n", graph ? "graph_run" : "run", n, now_s() - t0, cpu_s() - c0);
}

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int capturing, done;
    CUresult result;
} other = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};

static void *capture_thread(void *arg) {
    (void)arg;
    CUstream s;
    CUgraph g;
    cuCtxSetCurrent(ctx);
    cuStreamCreate(&s, 0);
    CUresult r = cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
    for (int i = 0; i < 10 && r == CUDA_SUCCESS; i++) r = cuLaunchKernel(NULL, 1, 1, 1, 32, 1, 1, 0, s, NULL, NULL);
    pthread_mutex_lock(&other.mu);
    other.capturing = 1;
    pthread_cond_broadcast(&other.cv);
    while (!other.done) pthread_cond_wait(&other.cv, &other.mu);
    pthread_mutex_unlock(&other.mu);
    CUresult e = cuStreamEndCapture(s, &g);
    other.result = r != CUDA_SUCCESS ? r : e;
    return NULL;
}

static void capture_during(double seconds) {
    pthread_t t;
    pthread_create(&t, NULL, capture_thread, NULL);
    pthread_mutex_lock(&other.mu);
    while (!other.capturing) pthread_cond_wait(&other.cv, &other.mu);
    pthread_mutex_unlock(&other.mu);
    run_for(seconds, 0);
    pthread_mutex_lock(&other.mu);
    other.done = 1;
    pthread_cond_broadcast(&other.cv);
    pthread_mutex_unlock(&other.mu);
    pthread_join(t, NULL);
    printf("capture_thread %d\n", (int)other.result);
}

/* A training-loop shape: 100 launches, synchronize, `pause_ms` of CPU-side work; for `seconds`. */
static void steps(double seconds, long pause_ms) {
    double t0 = now_s();
    unsigned long long n = 0;
    struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
    while (now_s() - t0 < seconds) {
        for (int k = 0; k < 100; k++, n++) launch(1);
        cuCtxSynchronize();
        nanosleep(&pause, NULL);
    }
    printf("steps %llu %.6f\n", n, now_s() - t0);
}

long fake_cuda_live_events(void); /* the FAKE driver's count of events not destroyed */

/* Launches spread over `n` contexts of device 0 in turn, as a program with many (green) contexts does. */
static void rotate(int n, long launches) {
    CUcontext c[16];
    CUresult r = CUDA_SUCCESS;
    if (n > 16) n = 16;
    for (int k = 0; k < n && r == CUDA_SUCCESS; k++) r = cuCtxCreate(&c[k], NULL, 0, 0);
    for (long k = 0; k < launches && r == CUDA_SUCCESS; k++) {
        r = cuCtxSetCurrent(c[k % n]);
        if (r == CUDA_SUCCESS) r = cuLaunchKernel(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
    }
    printf("rotate %d %ld\n", (int)r, fake_cuda_live_events());
}

/* One thread driving two GPUs in turn (kernels of gx0 and gx1 units), as single-threaded model parallelism. */
static void alternate(double seconds, unsigned gx0, unsigned gx1) {
    CUcontext c[2];
    double t0 = now_s();
    unsigned long long n = 0;
    for (int d = 0; d < 2; d++) cuDevicePrimaryCtxRetain(&c[d], d);
    while (now_s() - t0 < seconds) {
        cuCtxSetCurrent(c[0]);
        if (cuLaunchKernel(NULL, gx0, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL) != CUDA_SUCCESS) break;
        cuCtxSetCurrent(c[1]);
        if (cuLaunchKernel(NULL, gx1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL) != CUDA_SUCCESS) break;
        n++;
    }
    for (int d = 0; d < 2; d++) {
        cuCtxSetCurrent(c[d]);
        cuCtxSynchronize();
    }
    printf("alternate %llu %.6f\n", n, now_s() - t0);
}

static void bench(long n) {
    double t0 = now_s();
    for (long i = 0; i < n; i++) launch(1);
    printf("bench %.3f\n", (now_s() - t0) * 1e9 / (double)n);
}

static int command(char **argv, int *i) {
    const char *cmd = argv[*i];
    CUresult r;
    CUgraph g = NULL;
    if (!strcmp(cmd, "init")) printf("init %d\n", (int)cuInit(0));
    else if (!strcmp(cmd, "ctx")) {
        r = cuDevicePrimaryCtxRetain(&ctx, atoi(argv[++*i]));
        printf("ctx %d\n", (int)(r == CUDA_SUCCESS ? cuCtxSetCurrent(ctx) : r));
    } else if (!strcmp(cmd, "ctx_create")) printf("ctx_create %d\n", (int)cuCtxCreate(&ctx, NULL, 0, atoi(argv[++*i])));
    else if (!strcmp(cmd, "reset")) {
        int d = atoi(argv[++*i]);
        r = cuDevicePrimaryCtxReset(d);
        if (r == CUDA_SUCCESS) r = cuDevicePrimaryCtxRetain(&ctx, d);
        printf("reset %d\n", (int)(r == CUDA_SUCCESS ? cuCtxSetCurrent(ctx) : r));
        stream = NULL;
    } else if (!strcmp(cmd, "stream")) printf("stream %d\n", (int)cuStreamCreate(&stream, 0));
    else if (!strcmp(cmd, "capture"))
        printf("capture %d\n", (int)cuStreamBeginCapture_v2(stream, (CUstreamCaptureMode)atoi(argv[++*i])));
    else if (!strcmp(cmd, "end")) {
        r = cuStreamEndCapture(stream, &g);
        printf("end %d\n", (int)(r == CUDA_SUCCESS ? cuGraphInstantiate(&exec, g, 0) : r));
    } else if (!strcmp(cmd, "launch")) {
        long n = atol(argv[++*i]);
        r = CUDA_SUCCESS;
        for (long k = 0; k < n && r == CUDA_SUCCESS; k++) r = launch(1);
        printf("launch %d\n", (int)r);
    } else if (!strcmp(cmd, "big")) {
        unsigned gx = (unsigned)atoi(argv[++*i]);
        long n = atol(argv[++*i]);
        r = CUDA_SUCCESS;
        for (long k = 0; k < n && r == CUDA_SUCCESS; k++) r = launch(gx);
        printf("big %d\n", (int)r);
    } else if (!strcmp(cmd, "run")) run_for(atof(argv[++*i]), 0);
    else if (!strcmp(cmd, "graph_run")) run_for(atof(argv[++*i]), 1);
    else if (!strcmp(cmd, "capture_during")) capture_during(atof(argv[++*i]));
    else if (!strcmp(cmd, "bench")) bench(atol(argv[++*i]));
    else if (!strcmp(cmd, "alternate")) {
        double sec = atof(argv[++*i]);
        unsigned gx0 = (unsigned)atoi(argv[++*i]);
        alternate(sec, gx0, (unsigned)atoi(argv[++*i]));
    } else if (!strcmp(cmd, "rotate")) {
        int n = atoi(argv[++*i]);
        rotate(n, atol(argv[++*i]));
    }
    else if (!strcmp(cmd, "steps")) {
        double sec = atof(argv[++*i]);
        steps(sec, atol(argv[++*i]));
    }
    else {
        printf("unknown %s\n", cmd);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++)
        if (command(argv, &i) != 0) return 2;
    return 0;
}
