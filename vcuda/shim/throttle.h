/* The compute controller's pure core: a GPU-time token bucket and the checkpoint ring that measures GPU busy
 * time with events. No I/O and no CUDA: events, clocks and the node file are reached through `vc_ctl_ops_t`,
 * so the shipped shim (compute.c, CUDA events) and tests/shim/throttle_sim.c (simulated GPU and clock) run
 * exactly this code.
 *
 * Tokens are nanoseconds of GPU busy time. They accrue at `share` (percent of wall time) into a bucket that
 * every process of a container shares on one GPU (`tokens`, `refill` point into the container's record file;
 * updated with atomics), and are spent first by an estimate when a batch of launches is submitted, then by
 * the measured busy time when its event completes (the estimate is given back). A checkpoint with a negative
 * balance waits as long as refilling to zero takes, which yields GPU idle time in the right proportion
 * whether the work is one huge kernel or thousands of tiny ones. Savings are capped at `VC_THROTTLE_BURST_NS`
 * whatever the kernel size (the estimates keep the balance from running ahead of delayed measurements).
 */
#ifndef VCUDA_THROTTLE_H
#define VCUDA_THROTTLE_H

#include <stdint.h>

typedef struct vc_throttle {
    uint32_t share;         /* percent of the GPU currently allowed (hard, or soft when the GPU is otherwise idle) */
    int64_t *tokens;        /* GPU-time balance, shared by the container's processes; negative = debt */
    uint64_t *refill;       /* clock of the last refill (shared) */
    int64_t own_tokens;     /* the balance when no shared record is available (one process) */
    uint64_t own_refill;
    uint64_t avg_kernel_ns; /* moving average of busy time per launch (sizes batches and estimates) */
} vc_throttle_t;

#define VC_THROTTLE_BURST_NS 20000000ULL     /* 20 ms of saved-up GPU time at most, whatever the kernel size */
#define VC_THROTTLE_SEGMENT_NS 2000000ULL    /* aim for one measurement checkpoint per ~2 ms of GPU work */
#define VC_THROTTLE_MAX_BATCH 1024u
#define VC_THROTTLE_QUEUE_NS 8000000ULL      /* unmeasured GPU work allowed in flight (>= 2 checkpoints) */
#define VC_THROTTLE_MAX_OUTSTANDING 8u
#define VC_THROTTLE_MIN_SLEEP_NS 200000ULL   /* shorter debts are carried, not slept (a sleep overshoots ~60 us) */

void vc_throttle_init(vc_throttle_t *t, uint32_t share, uint64_t now_ns);
/* Shares the balance with the container's other processes (fields of the record file). */
void vc_throttle_share_bucket(vc_throttle_t *t, int64_t *tokens, uint64_t *refill, uint64_t now_ns);
/* Hard share when another tenant is active on the GPU, else the soft ceiling (== hard in hard mode). */
uint32_t vc_throttle_pick_share(uint32_t core, uint32_t soft, int others_active);
void vc_throttle_set_share(vc_throttle_t *t, uint32_t share, uint64_t now_ns);
/* Spends (delta > 0) or gives back (delta < 0) GPU time. */
void vc_throttle_charge(vc_throttle_t *t, int64_t delta_ns);
/* Feeds the per-launch average with a measured segment. */
void vc_throttle_observe(vc_throttle_t *t, uint64_t busy_ns, uint64_t launches);
/* How long the caller must wait now before launching more (0 = go). */
uint64_t vc_throttle_wait_ns(vc_throttle_t *t, uint64_t now_ns);
/* Launches to allow before the next checkpoint. */
uint32_t vc_throttle_batch(const vc_throttle_t *t);
/* Checkpoints that may be in flight unmeasured before the launching thread waits for the oldest. */
uint32_t vc_throttle_max_outstanding(const vc_throttle_t *t);
/* Busy time of a segment: work submitted after `submit_ns` (CPU clock) that completed at `done_ns`, not
 * overlapping the previous segment that completed at `prev_done_ns` (all on one clock). */
uint64_t vc_busy_segment(uint64_t prev_done_ns, uint64_t submit_ns, uint64_t done_ns);

/* Co-located contexts (time-slicing). A busy span measured with events covers the wall time this process
 * had work queued, which includes other contexts' time slices (other tenants, or other processes of the same
 * container). Round-robin time-slicing gives each context with queued work an equal part of the overlapped
 * time, so this process's own GPU time in [start, end) is the integral of 1 / (1 + k(t)), k(t) = number of
 * distinct other contexts (`owner` ids < 64) with a span covering t. With no other spans it is end - start. */
typedef struct vc_span {
    uint64_t start, end;
    uint32_t owner;
} vc_span_t;

#define VC_OWN_MAX_SPANS 128u

uint64_t vc_own_busy(uint64_t start, uint64_t end, const vc_span_t *others, unsigned n);

/* What neighbours' spans may take off this process's charges is bounded by what they may use: an allowance
 * refilled at 1.25 x the sum of their shares + 5 points (from the plugin's placement list, not from their
 * files; the slack covers bursts and the equal-split estimate), capped at `VC_DISCOUNT_CAP_NS`. A neighbour
 * that publishes made-up spans can then give this process little more than the GPU time it is entitled to. */
typedef struct vc_discount {
    int64_t allowance_ns;
    uint64_t last_ns;
    uint32_t pct; /* sum of the neighbours' shares */
} vc_discount_t;

#define VC_DISCOUNT_CAP_NS 100000000ULL
#define VC_DISCOUNT_SLACK_PCT 5u

/* The part of `busy - own` this process may be excused (spends the allowance). */
uint64_t vc_discount_take(vc_discount_t *d, uint64_t busy_ns, uint64_t own_ns, uint64_t now_ns);
/* This process's charge for its measured span [start, end): others[0, siblings) are this container's other
 * processes (their time is on the same budget: split freely), others[siblings, n) the placed neighbours
 * (split, bounded by `d`, whose `pct` is the sum of their shares). `*private_ns` gets the charge for the
 * process's private bucket: the span less the neighbours' bounded part only (sibling spans come from a file
 * the tenant can write, so they never lower it). */
uint64_t vc_split_busy(vc_discount_t *d, uint64_t start, uint64_t end, const vc_span_t *others, unsigned siblings,
                       unsigned n, uint64_t now_ns, uint64_t *private_ns);

/* ---- the checkpoint ring (one per context: events belong to a context) -------------------------------- */

#define VC_RING 16

typedef struct vc_ckpt {
    uint64_t submit_ns;     /* CPU time the segment's first launch could start */
    uint64_t not_before_ns; /* the event had not completed yet at this CPU time */
    uint64_t launches;
    uint64_t estimate_ns;   /* charged when the segment was submitted; replaced by the measurement */
} vc_ckpt_t;

typedef struct vc_ring {
    vc_ckpt_t ckpt[VC_RING];
    unsigned next, outstanding; /* outstanding entries end just before `next` */
    unsigned done;              /* the last completed entry (valid when have_done) */
    int have_done;
    int broken; /* an event call failed: the owner recreates the events */
    uint64_t done_ns;
} vc_ring_t;

/* How the ring reaches events and the node file; `self` is the caller's context. */
typedef struct vc_ctl_ops {
    int (*record)(void *self, unsigned k);                           /* 0 = recorded */
    int (*query)(void *self, unsigned k);                            /* 1 done, 0 not ready, -1 unusable */
    int (*elapsed)(void *self, unsigned a, unsigned b, uint64_t *ns); /* 0 = GPU time from event a to b */
    /* Optional (co-located): publishes [start, end) and returns this process's charge for it (and the charge
     * for its private bucket, see vc_split_busy). */
    uint64_t (*own)(void *self, uint64_t start, uint64_t end, uint64_t now, uint64_t *private_ns);
    /* Optional (co-located): publishes the span of work in flight. */
    void (*set_open)(void *self, uint64_t since, uint64_t until, uint64_t now);
} vc_ctl_ops_t;

/* One process's controller for one GPU. `t` is the container's shared budget; `priv` a private bucket at the
 * same share that only this process charges (never split with siblings): whatever another process of the
 * container writes into the shared record, this process cannot run above the container's share on its own. */
typedef struct vc_ctl {
    vc_throttle_t t;
    vc_throttle_t priv;
    uint64_t pending;        /* launches submitted since the last recorded checkpoint */
    uint64_t last_submit_ns; /* when the current segment's launches could start (after the last wait) */
    uint64_t busy_ns;        /* measured busy time not yet reported */
} vc_ctl_t;

typedef struct vc_step {
    int wait_k;       /* >= 0: block on this event (outside any lock), then step again */
    uint64_t sleep_ns; /* then sleep this long before launching */
    uint32_t batch;    /* launches until the next checkpoint */
} vc_step_t;

/* A checkpoint: folds completed events, records one for the pending launches, decides the wait. Returns 1
 * when the caller must block on event `out->wait_k` and call again, 0 when `out` holds the decision. */
int vc_ctl_step(vc_ctl_t *c, vc_ring_t *r, const vc_ctl_ops_t *ops, void *self, uint64_t now, vc_step_t *out);
/* Without usable events (no context): charge the pending launches by estimate and decide the wait. */
void vc_ctl_estimate(vc_ctl_t *c, uint64_t now, vc_step_t *out);
/* Initialises both buckets at `share`. */
void vc_ctl_init(vc_ctl_t *c, uint32_t share, uint64_t now);
/* Changes the share of both buckets (soft limit). */
void vc_ctl_set_share(vc_ctl_t *c, uint32_t share, uint64_t now);
/* After the sleep: the segment starts when the caller actually woke up (oversleep is not busy time). */
void vc_ctl_woke(vc_ctl_t *c, uint64_t now);

#endif /* VCUDA_THROTTLE_H */
