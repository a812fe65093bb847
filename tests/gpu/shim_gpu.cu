// GPU test program for the vcuda shim (runtime API, so it reaches the driver through cudart's
// cuGetProcAddress path). Modes, output as lines of "key value" pairs:
//   mem <chunk_mib>                 allocate chunks until refusal; print allocated MiB and cudaMemGetInfo
//   calibrate <kernel_us>           iterations for one kernel of about kernel_us alone on the GPU
//   burn <seconds> <iters> <batch> <streams> <graph>
//                                   launch fixed-work kernels for <seconds>, round-robin over <streams>
//                                   (1 = the legacy default stream); <graph> > 0 launches one captured graph
//                                   of <graph> kernels per batch instead. An event after every batch of
//                                   <batch> kernels gives, at the end, when each batch finished on the GPU:
//                                   printed as "bin <i> <kernels>", kernels done in [i/10, (i+1)/10) s of
//                                   CLOCK_MONOTONIC, so the runs of several processes line up.
//   launch <n>                      n empty kernel launches; ns per launch
#include <cuda_runtime.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#define CHECK(call)                                                                          \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

__global__ void work(float *out, int iters) {
    float a = threadIdx.x * 1e-3f, b = 1.0001f;
    for (int i = 0; i < iters; i++) a = a * b + 1e-7f;
    if (a == 12345.0f) out[blockIdx.x] = a;  // never true; keeps the loop
}

__global__ void empty() {}

static double now_s() {  // steady_clock is CLOCK_MONOTONIC on Linux, like Python's time.monotonic()
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static int blocks() {
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    return sms * 4;
}

static int mem_mode(size_t chunk_mib) {
    std::vector<void *> held;
    size_t total = 0;
    for (;;) {
        void *p = nullptr;
        if (cudaMalloc(&p, chunk_mib << 20) != cudaSuccess) break;
        held.push_back(p);
        total += chunk_mib;
        if (total > (1u << 20)) break;
    }
    cudaGetLastError();
    size_t f = 0, t = 0;
    CHECK(cudaMemGetInfo(&f, &t));
    printf("allocated_mib %zu free_mib %zu total_mib %zu\n", total, f >> 20, t >> 20);
    for (void *p : held) cudaFree(p);
    return 0;
}

static int calibrate_mode(double kernel_us) {
    float *out;
    CHECK(cudaMalloc(&out, 1 << 20));
    int n = blocks(), iters = 2000;
    for (int round = 0; round < 4; round++) {
        cudaEvent_t a, b;
        CHECK(cudaEventCreate(&a));
        CHECK(cudaEventCreate(&b));
        CHECK(cudaEventRecord(a));
        for (int i = 0; i < 5; i++) work<<<n, 256>>>(out, iters);
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        float ms = 0;
        CHECK(cudaEventElapsedTime(&ms, a, b));
        double per_us = ms * 1000.0 / 5;
        if (round < 3) iters = (int)fmax(1.0, iters * kernel_us / (per_us > 1 ? per_us : 1));
        else printf("iters %d us_per_kernel %.2f\n", iters, per_us);
    }
    return 0;
}

struct Burn {
    int iters, batch, graph, grid;
    float *out;
    std::vector<cudaStream_t> streams;
    cudaGraphExec_t exec = nullptr;
};

static void capture(Burn &b) {
    cudaGraph_t g;
    CHECK(cudaStreamBeginCapture(b.streams[0], cudaStreamCaptureModeGlobal));
    for (int i = 0; i < b.graph; i++) work<<<b.grid, 256, 0, b.streams[0]>>>(b.out, b.iters);
    CHECK(cudaStreamEndCapture(b.streams[0], &g));
    CHECK(cudaGraphInstantiate(&b.exec, g, 0));
}

static void launch_batch(Burn &b, cudaStream_t s) {
    if (b.exec) CHECK(cudaGraphLaunch(b.exec, s));
    else
        for (int i = 0; i < b.batch; i++) work<<<b.grid, 256, 0, s>>>(b.out, b.iters);
}

static int burn_mode(double seconds, int iters, int batch, int nstreams, int graph) {
    Burn b{iters, graph > 0 ? graph : batch, graph, blocks(), nullptr, {}};
    CHECK(cudaMalloc(&b.out, 1 << 20));
    bool legacy = nstreams <= 1 && graph <= 0;
    for (int i = 0; i < (nstreams > 1 ? nstreams : 1); i++) {
        cudaStream_t s = 0;
        if (!legacy) CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        b.streams.push_back(s);
    }
    if (graph > 0) capture(b);
    cudaEvent_t start;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventRecord(start, b.streams[0]));
    CHECK(cudaEventSynchronize(start));
    double t0 = now_s(), end = t0 + seconds;
    std::vector<cudaEvent_t> done;
    for (size_t n = 0; now_s() < end; n++) {
        cudaStream_t s = b.streams[n % b.streams.size()];
        launch_batch(b, s);
        cudaEvent_t e;
        CHECK(cudaEventCreate(&e));
        CHECK(cudaEventRecord(e, s));
        done.push_back(e);
    }
    CHECK(cudaDeviceSynchronize());
    std::map<long, long> bins;
    for (cudaEvent_t e : done) {
        float ms = 0;
        CHECK(cudaEventElapsedTime(&ms, start, e));
        bins[(long)floor((t0 + ms / 1000.0) * 10)] += b.batch;
    }
    printf("start %.6f end %.6f kernels %ld iters %d\n", t0, end, (long)done.size() * b.batch, iters);
    for (auto &kv : bins) printf("bin %ld %ld\n", kv.first, kv.second);
    return 0;
}

static int launch_mode(long n) {
    empty<<<1, 1>>>();
    CHECK(cudaDeviceSynchronize());
    double t0 = now_s();
    for (long i = 0; i < n; i++) empty<<<1, 1>>>();
    double t1 = now_s();
    CHECK(cudaDeviceSynchronize());
    printf("ns_per_launch %.2f\n", (t1 - t0) * 1e9 / n);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 20);
    if (argc >= 3 && !strcmp(argv[1], "mem")) return mem_mode(strtoul(argv[2], 0, 10));
    if (argc >= 3 && !strcmp(argv[1], "calibrate")) return calibrate_mode(atof(argv[2]));
    if (argc >= 7 && !strcmp(argv[1], "burn"))
        return burn_mode(atof(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    if (argc >= 3 && !strcmp(argv[1], "launch")) return launch_mode(atol(argv[2]));
    fprintf(stderr,
            "usage: shim_gpu mem <MiB> | calibrate <kernel_us> | burn <s> <iters> <batch> <streams> <graph>"
            " | launch <n>\n");
    return 2;
}
