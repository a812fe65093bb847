// GPU test program for the vcuda shim (runtime API, so it reaches the driver through cudart's
// cuGetProcAddress path). Modes, one line of "key value" pairs each:
//   mem <chunk_mib>              allocate chunks until refusal; print allocated MiB and cudaMemGetInfo
//   burn <seconds> <kernel_us>   launch fixed-work kernels (~kernel_us each when alone) for <seconds>
//   launch <n>                   n empty kernel launches; ns per launch
#include <cuda_runtime.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

__global__ void work(float *out, int iters) {
    float a = threadIdx.x * 1e-3f, b = 1.0001f;
    for (int i = 0; i < iters; i++) a = a * b + 1e-7f;
    if (a == 12345.0f) out[blockIdx.x] = a;  // never true; keeps the loop
}

__global__ void empty() {}

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
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
    cudaMemGetInfo(&f, &t);
    printf("allocated_mib %zu free_mib %zu total_mib %zu\n", total, f >> 20, t >> 20);
    for (void *p : held) cudaFree(p);
    return 0;
}

static int burn_mode(double seconds, double kernel_us) {
    int dev = 0, sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    float *out;
    cudaMalloc(&out, 1 << 20);
    int blocks = sms * 4, iters = 2000;
    // Calibrate the iteration count so one kernel takes about kernel_us on an idle GPU.
    for (int round = 0; round < 3; round++) {
        cudaEvent_t a, b;
        cudaEventCreate(&a);
        cudaEventCreate(&b);
        cudaEventRecord(a);
        for (int i = 0; i < 5; i++) work<<<blocks, 256>>>(out, iters);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        double per_us = ms * 1000.0 / 5;
        iters = (int)(iters * kernel_us / (per_us > 1 ? per_us : 1));
        if (iters < 1) iters = 1;
    }
    cudaDeviceSynchronize();
    double t0 = now_s(), end = t0 + seconds;
    long n = 0;
    while (now_s() < end) {
        for (int i = 0; i < 8; i++) work<<<blocks, 256>>>(out, iters);
        n += 8;
    }
    cudaDeviceSynchronize();
    double el = now_s() - t0;
    printf("kernels %ld elapsed %.4f iters %d rate %.3f\n", n, el, iters, n / el);
    return cudaGetLastError() == cudaSuccess ? 0 : 1;
}

static int launch_mode(long n) {
    empty<<<1, 1>>>();
    cudaDeviceSynchronize();
    double t0 = now_s();
    for (long i = 0; i < n; i++) empty<<<1, 1>>>();
    double t1 = now_s();
    cudaDeviceSynchronize();
    printf("ns_per_launch %.2f\n", (t1 - t0) * 1e9 / n);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "mem")) return mem_mode(strtoul(argv[2], 0, 10));
    if (argc >= 4 && !strcmp(argv[1], "burn")) return burn_mode(atof(argv[2]), atof(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "launch")) return launch_mode(atol(argv[2]));
    fprintf(stderr, "usage: shim_gpu mem <MiB> | burn <s> <kernel_us> | launch <n>\n");
    return 2;
}
