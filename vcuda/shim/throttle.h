/* The compute controller's pure core: a GPU-time token bucket with an injected clock. No I/O, no CUDA, so
 * tests drive it with a simulated clock and simulated GPU (tests/shim/throttle_sim.c).
 *
 * Tokens are nanoseconds of GPU busy time. They accrue at `share` (percent of wall time) and are spent by
 * the measured busy time of this process's work. A launch checkpoint with a negative balance waits exactly
 * as long as refilling to zero takes, which yields GPU idle time in the right proportion whether the work
 * is one huge kernel or thousands of tiny ones. The balance is capped at `burst_ns` of savings, so an idle
 * spell cannot be spent later as a long burst above the share.
 */
#ifndef VCUDA_THROTTLE_H
#define VCUDA_THROTTLE_H

#include <stdint.h>

typedef struct vc_throttle {
    uint32_t share;       /* percent of the GPU currently allowed (hard, or soft when the GPU is otherwise idle) */
    int64_t tokens_ns;    /* GPU-time balance; negative = debt */
    int64_t burst_ns;     /* cap on saved-up balance */
    uint64_t last_ns;     /* clock of the last refill */
    uint64_t avg_kernel_ns; /* moving average of busy time per launch (sizes the checkpoint batch) */
} vc_throttle_t;

#define VC_THROTTLE_BURST_NS 20000000ULL      /* 20 ms of saved-up GPU time at most */
#define VC_THROTTLE_SEGMENT_NS 2000000ULL     /* aim for one measurement checkpoint per ~2 ms of GPU work */
#define VC_THROTTLE_MAX_BATCH 1024u
#define VC_THROTTLE_QUEUE_NS 8000000ULL       /* unmeasured GPU work allowed in flight (>= 2 checkpoints) */
#define VC_THROTTLE_MAX_OUTSTANDING 8u

void vc_throttle_init(vc_throttle_t *t, uint32_t share, uint64_t now_ns);
/* Hard share when another tenant is active on the GPU, else the soft ceiling (== hard in hard mode). */
uint32_t vc_throttle_pick_share(uint32_t core, uint32_t soft, int others_active);
void vc_throttle_set_share(vc_throttle_t *t, uint32_t share, uint64_t now_ns);
/* Charges measured GPU busy time for `launches` launches. */
void vc_throttle_charge(vc_throttle_t *t, uint64_t busy_ns, uint64_t launches);
/* How long the caller must wait now before launching more (0 = go). */
uint64_t vc_throttle_wait_ns(vc_throttle_t *t, uint64_t now_ns);
/* Launches to allow before the next checkpoint. */
uint32_t vc_throttle_batch(const vc_throttle_t *t);
/* Checkpoints that may be in flight unmeasured before the launching thread waits for the oldest. */
uint32_t vc_throttle_max_outstanding(const vc_throttle_t *t);
/* Busy time of a segment: work submitted after `submit_ns` (CPU clock) that completed at `done_ns`, not
 * overlapping the previous segment that completed at `prev_done_ns` (all on one clock). */
uint64_t vc_busy_segment(uint64_t prev_done_ns, uint64_t submit_ns, uint64_t done_ns);


/* Co-located tenants (time-slicing). A busy span measured with events covers the wall time this process
 * had work queued, which includes other tenants' time slices. Round-robin time-slicing gives each tenant
 * with queued work an equal part of the overlapped time, so this process's own GPU time in [start, end) is
 * the integral of 1 / (1 + k(t)), k(t) = number of distinct other tenants (`owner` ids < 64) with a span
 * covering t. With no other spans it is end - start (the lone tenant). */
typedef struct vc_span {
    uint64_t start, end;
    uint32_t owner;
} vc_span_t;

#define VC_OWN_MAX_SPANS 128u

uint64_t vc_own_busy(uint64_t start, uint64_t end, const vc_span_t *others, unsigned n);

#endif /* VCUDA_THROTTLE_H */
