/* Compute limit: every launch path passes one thread-local counter; only every Nth launch (a checkpoint)
 * reaches the controller. A checkpoint records a CUDA event on the launch stream, turns completed events
 * into measured GPU busy time, charges the token bucket (throttle.c) and sleeps off any debt. N is sized so a
 * checkpoint covers about 2 ms of GPU work (1 for big kernels, up to 1024 for tiny ones), and only about
 * 8 ms of work (at least 2 checkpoints) may be in flight unmeasured, which bounds how far the GPU queue can
 * run ahead of the controller.
 *
 * Fast path: one TLS decrement and a predictable branch; no syscall, lock, getenv or shared-memory write.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "shim.h"
#include "throttle.h"

#define VC_RING 16
#define VC_UNTHROTTLED_BATCH 4096u
#define VC_PROBE_NS 500000000ULL

typedef struct vc_ckpt {
    uint64_t submit_ns;     /* CPU time the segment's first launch could start */
    uint64_t not_before_ns; /* the event had not completed yet at this CPU time */
    uint64_t launches;
} vc_ckpt_t;

typedef struct vc_compute {
    pthread_mutex_t mu;
    int on;
    int node; /* the per-GPU node file is mapped: split time-sliced overlap with co-located tenants */
    vc_throttle_t bucket;
    CUcontext ctx;
    CUevent events[VC_RING];
    vc_ckpt_t ckpt[VC_RING];
    unsigned next, outstanding; /* ring: outstanding entries end just before `next` */
    int have_done;              /* events[done] completed at done_ns */
    unsigned done;
    uint64_t done_ns, last_ckpt_ns, pending_launches, next_probe_ns;
} vc_compute_t;

static vc_compute_t vc_compute[VC_MAX_DEVICES];
static int vc_any_throttled;

static __thread int32_t vc_credit __attribute__((tls_model("initial-exec")));
static __thread uint32_t vc_granted __attribute__((tls_model("initial-exec")));

static uint64_t vc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void vc_compute_init(void) {
    uint64_t now = vc_now_ns();
    for (int d = 0; d < vc_state.device_count; d++) {
        const vc_device_t *dev = &vc_state.devices[d];
        vc_compute_t *c = &vc_compute[d];
        pthread_mutex_init(&c->mu, NULL);
        c->on = dev->record >= 0 && dev->core_limit < 100;
        vc_throttle_init(&c->bucket, dev->core_limit, now);
        c->last_ckpt_ns = now;
        c->node = c->on && vc_node_open(dev->record, now) == 0;
        vc_any_throttled |= c->on;
    }
}

static void vc_sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int vc_events_ready(vc_compute_t *c) {
    CUcontext cur = NULL;
    if (vc_real.cuCtxGetCurrent(&cur) != CUDA_SUCCESS || !cur) return 0;
    if (c->ctx == cur) return 1;
    if (c->ctx) return 0; /* events belong to another context: fall back to estimates */
    for (int i = 0; i < VC_RING; i++)
        if (vc_real.cuEventCreate(&c->events[i], CU_EVENT_DEFAULT) != CUDA_SUCCESS) return 0;
    c->ctx = cur;
    return 1;
}

/* Folds the oldest outstanding checkpoint into the bucket once its event has completed. Completion times
 * are chained on the GPU clock (cuEventElapsedTime from the previous completed checkpoint) and clamped to
 * what the CPU observed: not before the last "not ready" answer, not after the "done" answer. */
static int vc_complete_oldest(vc_compute_t *c, int rec, uint64_t *now, int block) {
    unsigned k = (c->next + VC_RING - c->outstanding) % VC_RING;
    CUresult q = vc_real.cuEventQuery(c->events[k]);
    if (q == CUDA_ERROR_NOT_READY) {
        c->ckpt[k].not_before_ns = *now;
        if (!block) return 0;
        q = vc_real.cuEventSynchronize(c->events[k]);
        *now = vc_now_ns();
    }
    uint64_t done_ns = *now;
    float ms = 0;
    if (q == CUDA_SUCCESS && c->have_done &&
        vc_real.cuEventElapsedTime_v2(&ms, c->events[c->done], c->events[k]) == CUDA_SUCCESS && ms >= 0)
        done_ns = c->done_ns + (uint64_t)((double)ms * 1e6);
    if (done_ns > *now) done_ns = *now;
    if (done_ns < c->ckpt[k].not_before_ns) done_ns = c->ckpt[k].not_before_ns;
    uint64_t busy = c->have_done ? vc_busy_segment(c->done_ns, c->ckpt[k].submit_ns, done_ns) : 0;
    if (busy > 0 && c->node) { /* charge only our part of time slices shared with other tenants */
        vc_span_t others[VC_OWN_MAX_SPANS];
        uint64_t start = done_ns - busy;
        vc_node_publish(rec, start, done_ns, *now);
        busy = vc_own_busy(start, done_ns, others, vc_node_others(rec, start, done_ns, *now, others, VC_OWN_MAX_SPANS));
    }
    vc_throttle_charge(&c->bucket, busy, c->ckpt[k].launches);
    if (rec >= 0) vc_usage_add_launches(rec, 0, 0, busy);
    c->done = k;
    c->done_ns = done_ns;
    c->have_done = 1;
    c->outstanding--;
    return 1;
}

/* Returns the clock after any wait for the GPU (the queue bound, or anchoring the first checkpoint). */
static uint64_t vc_record_checkpoint(vc_compute_t *c, int rec, CUstream stream, uint64_t now) {
    while (c->outstanding > 0 &&
           vc_complete_oldest(c, rec, &now,
                              !c->have_done || c->outstanding >= vc_throttle_max_outstanding(&c->bucket))) {
    }
    unsigned k = c->next;
    if (c->have_done && k == c->done) return now; /* ring exhausted by the anchor; skip this checkpoint */
    if (vc_real.cuEventRecord(c->events[k], stream) != CUDA_SUCCESS) {
        vc_throttle_charge(&c->bucket, c->pending_launches * c->bucket.avg_kernel_ns, 0);
    } else {
        c->ckpt[k] = (vc_ckpt_t){c->last_ckpt_ns, now, c->pending_launches};
        c->next = (k + 1) % VC_RING;
        c->outstanding++;
    }
    c->pending_launches = 0;
    return now;
}

/* With co-located tenants: before sleeping, wait for our queued work so that (a) it is charged now and (b) the
 * node file shows exactly when we went idle (others are then charged in full for that time). Then publish the
 * span of work we have in flight (or will submit after the wait), bounded by an estimate of its end. */
static void vc_publish_open(vc_compute_t *c, int rec, uint64_t *now, uint64_t *wait) {
    if (*wait > 0) {
        while (c->outstanding > 0 && vc_complete_oldest(c, rec, now, 1)) {
        }
        *wait = vc_throttle_wait_ns(&c->bucket, *now);
    }
    uint64_t since = *now + *wait;
    if (c->outstanding > 0) {
        unsigned k = (c->next + VC_RING - c->outstanding) % VC_RING;
        since = c->have_done && c->done_ns > c->ckpt[k].submit_ns ? c->done_ns : c->ckpt[k].submit_ns;
    }
    uint64_t segment = c->bucket.avg_kernel_ns * vc_throttle_batch(&c->bucket);
    if (segment < VC_THROTTLE_SEGMENT_NS) segment = VC_THROTTLE_SEGMENT_NS;
    /* Wall time of the queued work plus the next segment, doubled for sharing the GPU. */
    uint64_t until = *now + *wait + 2 * (c->outstanding + 1) * segment;
    vc_node_set_open(rec, since, until, *now);
}

static void vc_probe_share(vc_compute_t *c, int d, uint64_t now) {
    const vc_device_t *dev = &vc_state.devices[d];
    if (dev->soft_limit <= dev->core_limit || now < c->next_probe_ns) return;
    c->next_probe_ns = now + VC_PROBE_NS;
    int others = vc_nvml_others_active(dev->record);
    vc_throttle_set_share(&c->bucket, vc_throttle_pick_share(dev->core_limit, dev->soft_limit, others), now);
}

/* The controller step for device d; returns the time to wait before launching. */
static uint64_t vc_controller_step(int d, CUstream stream, uint64_t launches) {
    vc_compute_t *c = &vc_compute[d];
    uint64_t now = vc_now_ns();
    pthread_mutex_lock(&c->mu);
    c->pending_launches += launches;
    vc_probe_share(c, d, now);
    int rec = vc_state.devices[d].record, events = vc_events_ready(c);
    if (events) now = vc_record_checkpoint(c, rec, stream, now);
    uint64_t wait = vc_throttle_wait_ns(&c->bucket, now);
    if (c->node && events) vc_publish_open(c, rec, &now, &wait);
    c->last_ckpt_ns = now + wait; /* the next segment is submitted after the wait */
    vc_granted = vc_throttle_batch(&c->bucket);
    pthread_mutex_unlock(&c->mu);
    return wait;
}

/* Slow path, reached once per batch of launches per thread. */
static CUresult vc_checkpoint(CUstream stream) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) {
        vc_credit = 0;
        return r;
    }
    uint64_t launches = vc_granted;
    CUdevice d = -1;
    int have_dev = vc_real.cuCtxGetDevice(&d) == CUDA_SUCCESS && d >= 0 && d < vc_state.device_count;
    int rec = have_dev ? vc_state.devices[d].record : -1;
    vc_granted = VC_UNTHROTTLED_BATCH;
    uint64_t wait = 0;
    if (have_dev && vc_compute[d].on) wait = vc_controller_step(d, stream, launches);
    if (wait > 0) vc_sleep_ns(wait);
    if (rec >= 0) vc_usage_add_launches(rec, launches, wait, 0);
    vc_credit = (int32_t)vc_granted - 1;
    return CUDA_SUCCESS;
}

/* Each hook is a decrement, a branch and a tail call; the checkpoint lives in a separate cold function so
 * the fast path saves no registers and copies no stack arguments. */
#define VC_LAUNCH_HOOK(name, stream, params, args)                                                         \
    __attribute__((noinline, cold)) static CUresult name##_slow params {                                    \
        CUresult vc_r = vc_checkpoint(stream);                                                              \
        if (vc_r != CUDA_SUCCESS) return vc_r;                                                              \
        return vc_real.name args;                                                                           \
    }                                                                                                       \
    VC_EXPORT CUresult name params {                                                                        \
        if (VC_LIKELY(--vc_credit >= 0)) return vc_real.name args;                                          \
        return name##_slow args;                                                                            \
    }

#define VC_PTSZ(s) ((s) ? (s) : CU_STREAM_PER_THREAD)
#define VC_KERNEL_PARAMS                                                                                    \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,     \
     unsigned int bz, unsigned int shmem, CUstream s, void **params, void **extra)
#define VC_KERNEL_ARGS (f, gx, gy, gz, bx, by, bz, shmem, s, params, extra)
#define VC_COOP_PARAMS                                                                                      \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,     \
     unsigned int bz, unsigned int shmem, CUstream s, void **params)
#define VC_COOP_ARGS (f, gx, gy, gz, bx, by, bz, shmem, s, params)
#define VC_EX_PARAMS (const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
#define VC_EX_ARGS (config, f, params, extra)
#define VC_EX_STREAM (config ? config->hStream : NULL)

VC_LAUNCH_HOOK(cuLaunchKernel, s, VC_KERNEL_PARAMS, VC_KERNEL_ARGS)
VC_LAUNCH_HOOK(cuLaunchKernel_ptsz, VC_PTSZ(s), VC_KERNEL_PARAMS, VC_KERNEL_ARGS)
VC_LAUNCH_HOOK(cuLaunchKernelEx, VC_EX_STREAM, VC_EX_PARAMS, VC_EX_ARGS)
VC_LAUNCH_HOOK(cuLaunchKernelEx_ptsz, VC_PTSZ(VC_EX_STREAM), VC_EX_PARAMS, VC_EX_ARGS)
VC_LAUNCH_HOOK(cuLaunchCooperativeKernel, s, VC_COOP_PARAMS, VC_COOP_ARGS)
VC_LAUNCH_HOOK(cuLaunchCooperativeKernel_ptsz, VC_PTSZ(s), VC_COOP_PARAMS, VC_COOP_ARGS)
VC_LAUNCH_HOOK(cuLaunchCooperativeKernelMultiDevice, (list && n ? list[0].hStream : NULL),
               (CUDA_LAUNCH_PARAMS * list, unsigned int n, unsigned int flags), (list, n, flags))
VC_LAUNCH_HOOK(cuGraphLaunch, s, (CUgraphExec exec, CUstream s), (exec, s))
VC_LAUNCH_HOOK(cuGraphLaunch_ptsz, VC_PTSZ(s), (CUgraphExec exec, CUstream s), (exec, s))
