/* Pure compute-controller core; see throttle.h. */
#include "throttle.h"

void vc_throttle_init(vc_throttle_t *t, uint32_t share, uint64_t now_ns) {
    t->share = share ? share : 1;
    t->tokens_ns = 0;
    t->burst_ns = (int64_t)VC_THROTTLE_BURST_NS;
    t->last_ns = now_ns;
    t->avg_kernel_ns = 0;
}

uint32_t vc_throttle_pick_share(uint32_t core, uint32_t soft, int others_active) {
    if (soft < core) soft = core;
    return others_active ? core : soft;
}

static void vc_refill(vc_throttle_t *t, uint64_t now_ns) {
    if (now_ns <= t->last_ns) return;
    uint64_t dt = now_ns - t->last_ns;
    t->last_ns = now_ns;
    int64_t gain = (int64_t)(dt / 100 * t->share + (dt % 100) * t->share / 100);
    t->tokens_ns += gain;
    /* Savings are capped, but never below the work that may be in flight unmeasured: with large kernels
     * the bucket legitimately runs ahead of the (delayed) charges by that much. */
    int64_t cap = (int64_t)((vc_throttle_max_outstanding(t) + 1) * t->avg_kernel_ns * vc_throttle_batch(t));
    if (cap < t->burst_ns) cap = t->burst_ns;
    if (t->tokens_ns > cap) t->tokens_ns = cap;
}

void vc_throttle_set_share(vc_throttle_t *t, uint32_t share, uint64_t now_ns) {
    vc_refill(t, now_ns);
    t->share = share ? share : 1;
}

void vc_throttle_charge(vc_throttle_t *t, uint64_t busy_ns, uint64_t launches) {
    t->tokens_ns -= (int64_t)busy_ns;
    if (launches) {
        uint64_t per = busy_ns / launches;
        if (per == 0) per = 1; /* measured as (almost) free: distinct from "not measured yet" */
        t->avg_kernel_ns = t->avg_kernel_ns ? (t->avg_kernel_ns * 7 + per) / 8 : per;
    }
}

uint64_t vc_throttle_wait_ns(vc_throttle_t *t, uint64_t now_ns) {
    vc_refill(t, now_ns);
    if (t->share >= 100 || t->tokens_ns >= 0) return 0;
    return (uint64_t)(-t->tokens_ns) * 100 / t->share;
}

uint32_t vc_throttle_batch(const vc_throttle_t *t) {
    if (t->avg_kernel_ns == 0) return 1;
    uint64_t n = VC_THROTTLE_SEGMENT_NS / t->avg_kernel_ns;
    if (n < 1) n = 1;
    return n > VC_THROTTLE_MAX_BATCH ? VC_THROTTLE_MAX_BATCH : (uint32_t)n;
}

uint64_t vc_busy_segment(uint64_t prev_done_ns, uint64_t submit_ns, uint64_t done_ns) {
    uint64_t start = prev_done_ns > submit_ns ? prev_done_ns : submit_ns;
    return done_ns > start ? done_ns - start : 0;
}

uint32_t vc_throttle_max_outstanding(const vc_throttle_t *t) {
    uint64_t segment = t->avg_kernel_ns * vc_throttle_batch(t);
    if (segment == 0) return 2; /* nothing measured yet: be conservative */
    uint64_t n = VC_THROTTLE_QUEUE_NS / segment;
    if (n < 2) n = 2;
    return n > VC_THROTTLE_MAX_OUTSTANDING ? VC_THROTTLE_MAX_OUTSTANDING : (uint32_t)n;
}
