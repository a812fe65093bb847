/* Compute limit: every launch path passes one thread-local counter; only every Nth launch (a checkpoint)
 * reaches the controller (throttle.c), which measures GPU busy time with CUDA events, charges the
 * container's budget for this GPU and decides how long to sleep. N is sized so a checkpoint covers about 2 ms
 * of GPU work (1 for big kernels, up to 1024 for tiny ones).
 *
 * Fast path: one TLS decrement and a predictable branch; no syscall, lock, getenv or shared-memory write.
 * Slow path rules: events are per context (a ring per context, recreated when the driver says its events are
 * gone); a stream under capture is never touched (its launches run, and are charged, when the graph is
 * launched); event calls run in the relaxed capture mode so another thread's capture is not invalidated;
 * waits use blocking-sync events outside the device lock; the sleep happens outside the lock.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "shim.h"
#include "throttle.h"

#define VC_UNTHROTTLED_BATCH 4096u
#define VC_PROBE_NS 500000000ULL
#define VC_CTX_RINGS 4
#define VC_MAX_WAITS (2 * VC_RING + 4)
#define VC_MAX_REBUILDS 256u /* each leaks 16 events the driver rejected */
#define VC_RING_IDLE_NS 1000000000ULL /* a context's ring is given to another only after 1 s unused */

typedef struct vc_ctxring {
    CUcontext ctx;    /* NULL = unused */
    uint64_t used;    /* LRU stamp */
    uint64_t used_ns; /* last checkpoint in this context */
    CUevent events[VC_RING];
    vc_ring_t ring;
} vc_ctxring_t;

typedef struct vc_compute {
    pthread_mutex_t mu;
    int on;
    int node; /* the container's record file is mapped: shared budget, sibling and neighbour spans */
    int rec;
    vc_ctl_t ctl;
    vc_discount_t discount;
    vc_ctxring_t rings[VC_CTX_RINGS];
    uint64_t stamp, next_probe_ns;
    unsigned rebuilds; /* rings of a live context recreated after their events failed */
} vc_compute_t;

typedef struct vc_self {
    vc_compute_t *c;
    vc_ctxring_t *cr;
    CUstream stream;
} vc_self_t;

static vc_compute_t vc_compute[VC_MAX_DEVICES];

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
        c->rec = dev->record;
        c->on = dev->record >= 0 && dev->core_limit < VCUDA_CORE_PER_GPU;
        vc_ctl_init(&c->ctl, dev->core_limit, now);
        c->node = c->on && vc_node_open(dev->record, now) == 0;
        if (c->node) vc_throttle_share_bucket(&c->ctl.t, vc_node_tokens(c->rec), vc_node_refill(c->rec), now);
        c->discount.last_ns = now;
    }
}

/* Held across fork (init.c); never held while waiting or sleeping, so a fork waits a few driver calls at most. */
void vc_compute_fork_lock(void) {
    for (int d = 0; d < vc_state.device_count; d++) pthread_mutex_lock(&vc_compute[d].mu);
}

void vc_compute_fork_unlock(void) {
    for (int d = vc_state.device_count - 1; d >= 0; d--) pthread_mutex_unlock(&vc_compute[d].mu);
}

static void vc_sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- event operations for the controller (called with the device lock held) ------------------------- */

static int vc_ev_record(void *p, unsigned k) {
    vc_self_t *s = p;
    return vc_real.cuEventRecord(s->cr->events[k], s->stream) == CUDA_SUCCESS ? 0 : -1;
}

static int vc_ev_query(void *p, unsigned k) {
    CUresult q = vc_real.cuEventQuery(((vc_self_t *)p)->cr->events[k]);
    return q == CUDA_SUCCESS ? 1 : q == CUDA_ERROR_NOT_READY ? 0 : -1;
}

static int vc_ev_elapsed(void *p, unsigned a, unsigned b, uint64_t *ns) {
    vc_self_t *s = p;
    float ms = 0;
    if (vc_real.cuEventElapsedTime_v2(&ms, s->cr->events[a], s->cr->events[b]) != CUDA_SUCCESS || ms < 0) return -1;
    *ns = (uint64_t)((double)ms * 1e6);
    return 0;
}

/* Our part of a measured span: time-sliced overlap with other contexts (this container's other processes,
 * placed neighbours) is split equally, neighbours' part bounded by their shares (vc_split_busy). */
static uint64_t vc_ev_own(void *p, uint64_t start, uint64_t end, uint64_t now, uint64_t *private_ns) {
    vc_compute_t *c = ((vc_self_t *)p)->c;
    vc_span_t others[VC_OWN_MAX_SPANS];
    unsigned siblings = 0;
    vc_node_publish(c->rec, start, end, now);
    unsigned n = vc_node_others(c->rec, start, end, now, others, VC_OWN_MAX_SPANS, &siblings);
    c->discount.pct = vc_node_neighbour_pct(c->rec);
    return vc_split_busy(&c->discount, start, end, others, siblings, n, now, private_ns);
}

static void vc_ev_set_open(void *p, uint64_t since, uint64_t until, uint64_t now) {
    vc_node_set_open(((vc_self_t *)p)->c->rec, since, until, now);
}

static const vc_ctl_ops_t vc_plain_ops = {vc_ev_record, vc_ev_query, vc_ev_elapsed, NULL, NULL};
static const vc_ctl_ops_t vc_node_ops = {vc_ev_record, vc_ev_query, vc_ev_elapsed, vc_ev_own, vc_ev_set_open};

/* The ring of the current context, its events created on first use or after the driver dropped them
 * (context destroyed or reset). NULL when there is no context or events cannot be created, and for a fifth
 * context while all four rings were used within VC_RING_IDLE_NS (charged by estimate): a replaced ring's
 * events are abandoned (its context may be gone, and a handle of a destroyed context must never be passed
 * to the driver), so replacing busy rings at every checkpoint would leak 16 events each time. */
static vc_ctxring_t *vc_ring_for(vc_compute_t *c, uint64_t now) {
    CUcontext cur = NULL;
    if (vc_real.cuCtxGetCurrent(&cur) != CUDA_SUCCESS || !cur) return NULL;
    vc_ctxring_t *victim = &c->rings[0];
    for (int i = 0; i < VC_CTX_RINGS; i++) {
        vc_ctxring_t *cr = &c->rings[i];
        if (cr->ctx == cur) {
            victim = cr;
            if (!cr->ring.broken) {
                cr->used = ++c->stamp;
                cr->used_ns = now;
                return cr;
            }
            if (++c->rebuilds > VC_MAX_REBUILDS) return NULL; /* events keep failing: estimates from now on */
            break;
        }
        if (cr->used < victim->used) victim = cr;
    }
    if (victim->ctx && victim->ctx != cur && victim->used_ns + VC_RING_IDLE_NS > now) return NULL;
    victim->ctx = NULL; /* the old context's events are abandoned: it may be gone already */
    memset(&victim->ring, 0, sizeof victim->ring);
    for (int k = 0; k < VC_RING; k++)
        if (vc_real.cuEventCreate(&victim->events[k], CU_EVENT_BLOCKING_SYNC) != CUDA_SUCCESS) return NULL;
    victim->ctx = cur;
    victim->used = ++c->stamp;
    victim->used_ns = now;
    return victim;
}

/* 1 when the launch stream is being captured into a graph (or its state is unknown): never touch it. */
static int vc_capturing(CUstream stream) {
    if (!vc_real.cuStreamIsCapturing) return 0;
    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
    if (vc_real.cuStreamIsCapturing(stream, &st) != CUDA_SUCCESS) return -1;
    return st != CU_STREAM_CAPTURE_STATUS_NONE;
}

static void vc_probe_share(vc_compute_t *c, int d, uint64_t now) {
    const vc_device_t *dev = &vc_state.devices[d];
    if (dev->soft_limit <= dev->core_limit || now < c->next_probe_ns) return;
    c->next_probe_ns = now + VC_PROBE_NS;
    int others = vc_nvml_others_active(dev->record);
    vc_ctl_set_share(&c->ctl, vc_throttle_pick_share(dev->core_limit, dev->soft_limit, others), now);
}

/* The controller loop for one checkpoint, device lock held; blocking waits release the lock. */
static void vc_steps(vc_compute_t *c, CUstream stream, vc_step_t *out) {
    uint64_t now = vc_now_ns();
    int capturing = vc_capturing(stream);
    if (capturing > 0) { /* captured launches run when the graph is launched, and are charged then */
        c->ctl.pending = 0;
        *out = (vc_step_t){-1, 0, vc_throttle_batch(&c->ctl.t)};
        return;
    }
    for (int tries = 0; capturing == 0 && tries < VC_MAX_WAITS; tries++) {
        vc_ctxring_t *cr = vc_ring_for(c, now);
        if (!cr) break;
        vc_self_t self = {c, cr, stream};
        if (!vc_ctl_step(&c->ctl, &cr->ring, c->node ? &vc_node_ops : &vc_plain_ops, &self, now, out)) return;
        CUevent ev = cr->events[out->wait_k];
        pthread_mutex_unlock(&c->mu);
        CUresult r = vc_real.cuEventSynchronize(ev);
        pthread_mutex_lock(&c->mu);
        if (r != CUDA_SUCCESS && cr->ctx) cr->ring.broken = 1;
        now = vc_now_ns();
    }
    vc_ctl_estimate(&c->ctl, now, out); /* no usable events: estimates keep the limit */
}

/* The controller step for device d; returns the decision and the measured busy time to report. */
static vc_step_t vc_controller_step(int d, CUstream stream, uint64_t launches, uint64_t *busy) {
    vc_compute_t *c = &vc_compute[d];
    vc_step_t out = {-1, 0, 1};
    /* Relaxed capture mode: our event calls must not break another thread's (global-mode) capture. */
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    int swapped = vc_real.cuThreadExchangeStreamCaptureMode &&
                  vc_real.cuThreadExchangeStreamCaptureMode(&mode) == CUDA_SUCCESS;
    pthread_mutex_lock(&c->mu);
    c->ctl.pending += launches;
    vc_probe_share(c, d, vc_now_ns());
    vc_steps(c, stream, &out);
    *busy = c->ctl.busy_ns;
    c->ctl.busy_ns = 0;
    pthread_mutex_unlock(&c->mu);
    if (swapped) vc_real.cuThreadExchangeStreamCaptureMode(&mode);
    return out;
}

static void vc_woke(int d) {
    vc_compute_t *c = &vc_compute[d];
    pthread_mutex_lock(&c->mu);
    vc_ctl_woke(&c->ctl, vc_now_ns());
    pthread_mutex_unlock(&c->mu);
}

/* Slow path, reached once per batch of launches per thread. */
static CUresult vc_checkpoint(CUstream stream) {
    CUresult r = vc_ensure_init();
    if (r != CUDA_SUCCESS) {
        vc_credit = 0;
        return r;
    }
    uint64_t launches = vc_granted, busy = 0;
    CUdevice d = -1;
    int have_dev = vc_real.cuCtxGetDevice(&d) == CUDA_SUCCESS && d >= 0 && d < vc_state.device_count;
    int rec = have_dev ? vc_state.devices[d].record : -1;
    vc_step_t s = {-1, 0, VC_UNTHROTTLED_BATCH};
    if (have_dev && vc_compute[d].on) s = vc_controller_step(d, stream, launches, &busy);
    if (s.sleep_ns > 0) {
        vc_sleep_ns(s.sleep_ns);
        vc_woke(d); /* oversleep is idle time, not the next segment's busy time */
    }
    if (rec >= 0) vc_usage_add_launches(rec, launches, s.sleep_ns, busy);
    vc_granted = s.batch ? s.batch : 1;
    vc_credit = (int32_t)vc_granted - 1;
    return CUDA_SUCCESS;
}

/* An application synchronize usually precedes CPU work (data loading, a host copy): the launches so far are
 * closed as a segment now, and the next launch starts a new one, so a pause between them is never measured as
 * GPU busy time. Not on the launch path; a synchronize costs far more than the checkpoint. */
static void vc_sync_point(CUstream stream) {
    if (__atomic_load_n(&vc_state.ready, __ATOMIC_ACQUIRE) != 1) return;
    uint32_t unused = vc_credit > 0 ? (uint32_t)vc_credit : 0;
    if (vc_granted <= unused) return; /* nothing launched since the last checkpoint */
    vc_granted -= unused;
    vc_credit = 0;
    (void)vc_checkpoint(stream);
    vc_credit = 0;
    vc_granted = 0;
}

VC_EXPORT CUresult cuCtxSynchronize(void) {
    vc_sync_point(NULL);
    return vc_real.cuCtxSynchronize ? vc_real.cuCtxSynchronize() : CUDA_ERROR_NOT_FOUND;
}

VC_EXPORT CUresult cuStreamSynchronize(CUstream s) {
    vc_sync_point(s);
    return vc_real.cuStreamSynchronize ? vc_real.cuStreamSynchronize(s) : CUDA_ERROR_NOT_FOUND;
}

VC_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s) {
    vc_sync_point(s ? s : CU_STREAM_PER_THREAD);
    return vc_real.cuStreamSynchronize_ptsz ? vc_real.cuStreamSynchronize_ptsz(s) : CUDA_ERROR_NOT_FOUND;
}

/* A thread leaving a context closes that context's segment (as a synchronize does): the events measure from one
 * checkpoint to the next, so time spent in another context (another GPU's launches and throttle sleeps) would
 * otherwise be charged as this one's busy time, and two GPUs driven in turn by one thread were each charged
 * for the other's sleeps (both collapsed to a few percent). Costs nothing unless the thread launched since its
 * last checkpoint; then a real change of context costs one checkpoint. `next` NULL: unknown (a pop). */
static void vc_leaving(CUcontext next, int known) {
    uint32_t unused = vc_credit > 0 ? (uint32_t)vc_credit : 0;
    CUcontext cur = NULL;
    if (VC_LIKELY(vc_granted <= unused) || __atomic_load_n(&vc_state.ready, __ATOMIC_ACQUIRE) != 1) return;
    if (known && (vc_real.cuCtxGetCurrent(&cur) != CUDA_SUCCESS || !cur || cur == next)) return;
    vc_sync_point(NULL);
}

VC_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
    vc_leaving(ctx, 1);
    return vc_real.cuCtxSetCurrent ? vc_real.cuCtxSetCurrent(ctx) : CUDA_ERROR_NOT_FOUND;
}

VC_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
    vc_leaving(ctx, 1);
    return vc_real.cuCtxPushCurrent_v2 ? vc_real.cuCtxPushCurrent_v2(ctx) : CUDA_ERROR_NOT_FOUND;
}

VC_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *out) {
    vc_leaving(NULL, 0);
    return vc_real.cuCtxPopCurrent_v2 ? vc_real.cuCtxPopCurrent_v2(out) : CUDA_ERROR_NOT_FOUND;
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
