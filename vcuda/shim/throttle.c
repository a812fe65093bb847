/* Pure compute-controller core; see throttle.h. Shared fields (the container's bucket) use atomics: every
 * process of the container refills and spends the same balance. */
#include "throttle.h"
#include "vcuda_contract.h"

#define VC_LD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define VC_MAX_DT_NS 10000000000ULL  /* a refill covers at most 10 s (a stale or garbled clock) */
#define VC_MAX_WAIT_NS 10000000000ULL

void vc_throttle_init(vc_throttle_t *t, uint32_t share, uint64_t now_ns) {
    t->share = share ? share : 1;
    t->own_tokens = 0;
    t->own_refill = now_ns;
    t->tokens = &t->own_tokens;
    t->refill = &t->own_refill;
    t->avg_kernel_ns = 0;
}

void vc_throttle_share_bucket(vc_throttle_t *t, int64_t *tokens, uint64_t *refill, uint64_t now_ns) {
    uint64_t zero = 0; /* a fresh record starts its clock now: no savings before the first launch */
    __atomic_compare_exchange_n(refill, &zero, now_ns, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    t->tokens = tokens;
    t->refill = refill;
}

uint32_t vc_throttle_pick_share(uint32_t core, uint32_t soft, int others_active) {
    if (soft < core) soft = core;
    return others_active ? core : soft;
}

/* `share` percent (of one GPU) of `ns`, in two steps so that ns * share cannot overflow. */
static uint64_t vc_share_of(uint64_t ns, uint32_t share) {
    return ns / VCUDA_CORE_PER_GPU * share + ns % VCUDA_CORE_PER_GPU * share / VCUDA_CORE_PER_GPU;
}

/* Whoever moves the refill clock forward adds the tokens for that interval; savings are capped. */
static void vc_refill(vc_throttle_t *t, uint64_t now_ns) {
    uint64_t last = VC_LD(t->refill);
    if (now_ns <= last) return;
    if (!__atomic_compare_exchange_n(t->refill, &last, now_ns, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) return;
    uint64_t dt = now_ns - last;
    if (dt > VC_MAX_DT_NS) dt = VC_MAX_DT_NS;
    int64_t v = __atomic_add_fetch(t->tokens, (int64_t)vc_share_of(dt, t->share), __ATOMIC_ACQ_REL);
    while (v > (int64_t)VC_THROTTLE_BURST_NS &&
           !__atomic_compare_exchange_n(t->tokens, &v, (int64_t)VC_THROTTLE_BURST_NS, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
    }
}

void vc_throttle_set_share(vc_throttle_t *t, uint32_t share, uint64_t now_ns) {
    vc_refill(t, now_ns);
    t->share = share ? share : 1;
}

void vc_throttle_charge(vc_throttle_t *t, int64_t delta_ns) {
    if (delta_ns) __atomic_sub_fetch(t->tokens, delta_ns, __ATOMIC_ACQ_REL);
}

void vc_throttle_observe(vc_throttle_t *t, uint64_t busy_ns, uint64_t launches) {
    if (!launches) return;
    uint64_t per = busy_ns / launches;
    if (per == 0) per = 1; /* measured as (almost) free: distinct from "not measured yet" */
    t->avg_kernel_ns = t->avg_kernel_ns ? (t->avg_kernel_ns * 7 + per) / 8 : per;
}

uint64_t vc_throttle_wait_ns(vc_throttle_t *t, uint64_t now_ns) {
    vc_refill(t, now_ns);
    int64_t v = VC_LD(t->tokens);
    if (t->share >= VCUDA_CORE_PER_GPU || v >= 0) return 0;
    uint64_t debt = v < -(int64_t)VC_MAX_WAIT_NS ? VC_MAX_WAIT_NS : (uint64_t)-v;
    uint64_t wait = debt * VCUDA_CORE_PER_GPU / t->share;
    return wait > VC_MAX_WAIT_NS ? VC_MAX_WAIT_NS : wait;
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

uint64_t vc_discount_take(vc_discount_t *d, uint64_t busy_ns, uint64_t own_ns, uint64_t now_ns) {
    if (now_ns > d->last_ns) {
        uint64_t dt = now_ns - d->last_ns;
        if (dt > VC_DISCOUNT_CAP_NS) dt = VC_DISCOUNT_CAP_NS;
        d->allowance_ns += (int64_t)(dt / VCUDA_CORE_PER_GPU * (d->pct + d->pct / 4 + VC_DISCOUNT_SLACK_PCT));
        if (d->allowance_ns > (int64_t)VC_DISCOUNT_CAP_NS) d->allowance_ns = (int64_t)VC_DISCOUNT_CAP_NS;
        d->last_ns = now_ns;
    }
    uint64_t want = busy_ns > own_ns ? busy_ns - own_ns : 0;
    uint64_t room = d->allowance_ns > 0 ? (uint64_t)d->allowance_ns : 0;
    uint64_t grant = want < room ? want : room;
    d->allowance_ns -= (int64_t)grant;
    return grant;
}

uint64_t vc_split_busy(vc_discount_t *d, uint64_t start, uint64_t end, const vc_span_t *others, unsigned siblings,
                       unsigned n, uint64_t now_ns, uint64_t *private_ns) {
    if (siblings > n) siblings = n;
    uint64_t own_siblings = vc_own_busy(start, end, others, siblings);
    uint64_t grant = siblings < n ? vc_discount_take(d, own_siblings, vc_own_busy(start, end, others, n), now_ns) : 0;
    *private_ns = (end - start) - grant;
    return own_siblings - grant;
}

/* ---- the checkpoint ring -------------------------------------------------------------------------------- */

static unsigned vc_oldest(const vc_ring_t *r) { return (r->next + VC_RING - r->outstanding) % VC_RING; }

/* Events unusable (context destroyed, handles invalid): forget them; the estimates already charged stay. */
static void vc_ring_drop(vc_ring_t *r) {
    r->outstanding = 0;
    r->have_done = 0;
    r->broken = 1;
}

/* Folds entry k, whose event has completed. Completion times are chained on the GPU clock (elapsed time from
 * the previous completed entry) and clamped to what the CPU observed: not before the last "not ready" answer,
 * not after now. The measurement replaces the estimate charged at submission. */
static void vc_complete(vc_ctl_t *c, vc_ring_t *r, const vc_ctl_ops_t *ops, void *self, unsigned k, uint64_t now) {
    vc_ckpt_t *ck = &r->ckpt[k];
    uint64_t done_ns = now, ns = 0;
    if (r->have_done && ops->elapsed(self, r->done, k, &ns) == 0) done_ns = r->done_ns + ns;
    if (done_ns > now) done_ns = now;
    if (done_ns < ck->not_before_ns) done_ns = ck->not_before_ns;
    if (r->have_done) { /* an anchor (first entry of a ring) has no start: its estimate stays */
        uint64_t busy = vc_busy_segment(r->done_ns, ck->submit_ns, done_ns), priv = busy;
        if (busy > 0 && ops->own) busy = ops->own(self, done_ns - busy, done_ns, now, &priv);
        vc_throttle_observe(&c->t, busy, ck->launches);
        vc_throttle_charge(&c->t, (int64_t)busy - (int64_t)ck->estimate_ns);
        vc_throttle_charge(&c->priv, (int64_t)priv - (int64_t)ck->estimate_ns);
        c->busy_ns += busy;
    }
    r->done = k;
    r->done_ns = done_ns;
    r->have_done = 1;
    r->outstanding--;
}

/* Records an entry for the pending launches, charging their estimate now. Returns 1 if recorded. */
static int vc_record(vc_ctl_t *c, vc_ring_t *r, const vc_ctl_ops_t *ops, void *self, uint64_t now) {
    unsigned k = r->next;
    uint64_t est = c->pending * c->t.avg_kernel_ns;
    vc_throttle_charge(&c->t, (int64_t)est);
    vc_throttle_charge(&c->priv, (int64_t)est);
    int ok = r->outstanding + 1 < VC_RING;
    if (ok && ops->record(self, k) != 0) {
        vc_ring_drop(r);
        ok = 0;
    }
    if (ok) {
        r->ckpt[k] = (vc_ckpt_t){c->last_submit_ns, now, c->pending, est};
        r->next = (k + 1) % VC_RING;
        r->outstanding++;
    }
    c->pending = 0;
    return ok;
}

static uint64_t vc_ctl_wait(vc_ctl_t *c, uint64_t now) {
    uint64_t shared = vc_throttle_wait_ns(&c->t, now), own = vc_throttle_wait_ns(&c->priv, now);
    return shared > own ? shared : own;
}

static void vc_decide(vc_ctl_t *c, uint64_t wait, uint64_t now, vc_step_t *out) {
    if (wait < VC_THROTTLE_MIN_SLEEP_NS) wait = 0;
    c->last_submit_ns = now + wait;
    out->sleep_ns = wait;
    out->batch = vc_throttle_batch(&c->t);
}

/* Co-located: publish the span of work in flight (or to be submitted after the wait), bounded by an estimate
 * of its end so a stalled process stops counting: the queued work and the next segment, at a quarter of the
 * GPU (time-sliced with up to three other contexts). */
static void vc_publish_open(vc_ctl_t *c, vc_ring_t *r, const vc_ctl_ops_t *ops, void *self, uint64_t now,
                            uint64_t wait) {
    if (!ops->set_open) return;
    uint64_t since = now + wait;
    if (r->outstanding > 0) {
        const vc_ckpt_t *ck = &r->ckpt[vc_oldest(r)];
        since = r->have_done && r->done_ns > ck->submit_ns ? r->done_ns : ck->submit_ns;
    }
    uint64_t segment = c->t.avg_kernel_ns ? c->t.avg_kernel_ns * vc_throttle_batch(&c->t) : VC_THROTTLE_QUEUE_NS;
    if (segment < VC_THROTTLE_SEGMENT_NS) segment = VC_THROTTLE_SEGMENT_NS;
    ops->set_open(self, since, now + wait + 4 * (r->outstanding + 1) * segment, now);
}

/* Block on entry k (outside the caller's lock), then step again. */
static int vc_wait_on(vc_ctl_t *c, vc_ring_t *r, const vc_ctl_ops_t *ops, void *self, uint64_t now, unsigned k,
                      vc_step_t *out) {
    vc_publish_open(c, r, ops, self, now, 0);
    out->wait_k = (int)k;
    return 1;
}

int vc_ctl_step(vc_ctl_t *c, vc_ring_t *r, const vc_ctl_ops_t *ops, void *self, uint64_t now, vc_step_t *out) {
    out->wait_k = -1;
    out->sleep_ns = 0;
    uint32_t max_out = vc_throttle_max_outstanding(&c->t);
    while (r->outstanding > 0) {
        unsigned k = vc_oldest(r);
        int q = ops->query(self, k);
        if (q < 0) {
            vc_ring_drop(r);
            break;
        }
        if (q == 0) {
            if (r->ckpt[k].not_before_ns < now) r->ckpt[k].not_before_ns = now;
            if (!r->have_done || r->outstanding >= max_out) return vc_wait_on(c, r, ops, self, now, k, out);
            break;
        }
        vc_complete(c, r, ops, self, k, now);
    }
    int anchor = !r->have_done && r->outstanding == 0 && !r->broken;
    /* The first entry of a ring is waited for: it anchors the clocks. */
    if ((c->pending > 0 || anchor) && vc_record(c, r, ops, self, now) && anchor)
        return vc_wait_on(c, r, ops, self, now, vc_oldest(r), out);
    uint64_t wait = vc_ctl_wait(c, now);
    /* Co-located: drain before sleeping, so the work is charged now and the record shows when we went idle. */
    if (ops->set_open && wait > 0 && r->outstanding > 0) return vc_wait_on(c, r, ops, self, now, vc_oldest(r), out);
    vc_publish_open(c, r, ops, self, now, wait);
    vc_decide(c, wait, now, out);
    return 0;
}

void vc_ctl_estimate(vc_ctl_t *c, uint64_t now, vc_step_t *out) {
    out->wait_k = -1;
    vc_throttle_charge(&c->t, (int64_t)(c->pending * c->t.avg_kernel_ns));
    vc_throttle_charge(&c->priv, (int64_t)(c->pending * c->t.avg_kernel_ns));
    c->pending = 0;
    vc_decide(c, vc_ctl_wait(c, now), now, out);
}

void vc_ctl_init(vc_ctl_t *c, uint32_t share, uint64_t now) {
    vc_throttle_init(&c->t, share, now);
    vc_throttle_init(&c->priv, share, now);
    c->last_submit_ns = now;
}

void vc_ctl_set_share(vc_ctl_t *c, uint32_t share, uint64_t now) {
    vc_throttle_set_share(&c->t, share, now);
    vc_throttle_set_share(&c->priv, share, now);
}

void vc_ctl_woke(vc_ctl_t *c, uint64_t now) {
    if (now > c->last_submit_ns) c->last_submit_ns = now;
}
