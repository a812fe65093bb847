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

uint64_t vc_own_busy(uint64_t start, uint64_t end, const vc_span_t *others, unsigned n) {
    if (end <= start) return 0;
    if (n > VC_OWN_MAX_SPANS) n = VC_OWN_MAX_SPANS;
    uint64_t cut[2 * VC_OWN_MAX_SPANS + 2];
    unsigned m = 0;
    cut[m++] = start;
    cut[m++] = end;
    for (unsigned i = 0; i < n; i++) {
        if (others[i].start > start && others[i].start < end) cut[m++] = others[i].start;
        if (others[i].end > start && others[i].end < end) cut[m++] = others[i].end;
    }
    for (unsigned i = 1; i < m; i++) { /* insertion sort: m is small */
        uint64_t v = cut[i];
        unsigned j = i;
        while (j > 0 && cut[j - 1] > v) {
            cut[j] = cut[j - 1];
            j--;
        }
        cut[j] = v;
    }
    uint64_t own = 0;
    for (unsigned i = 0; i + 1 < m; i++) {
        uint64_t a = cut[i], b = cut[i + 1];
        if (b <= a) continue;
        uint64_t seen = 0;
        unsigned k = 0;
        for (unsigned s = 0; s < n; s++) {
            uint64_t bit = 1ULL << (others[s].owner & 63u);
            if (others[s].start <= a && others[s].end >= b && !(seen & bit)) {
                seen |= bit;
                k++;
            }
        }
        own += (b - a) / (1 + k);
    }
    return own;
}
