/* Runs the shim's compute controller (vcuda/shim/throttle.c: the token bucket AND the checkpoint ring that
 * compute.c drives with CUDA events, the same functions, not a copy) against a simulated clock and a simulated
 * time-sliced GPU, so accuracy is checked in simulated time in well under a second per scenario.
 *
 * The GPU runs in STEP_NS steps and round-robins SLICE_NS slices between the contexts (processes) that have
 * work queued, as the driver does for several contexts. Each process has its own controller (vc_ctl_t) and
 * event ring; the processes of one container share one budget (the shared bucket of the record file), and
 * every process sees the others' published spans (one owner per process; what other containers' spans take
 * off a charge is bounded by their shares through vc_discount_take), as node.c provides. Events complete when
 * the GPU has executed the work queued before them; a blocked wait resumes the controller then; a sleep
 * overshoots by OVERSLEEP_NS (it must not be charged as busy time); the driver queue holds 1024 kernels.
 *
 * Scenarios named half_idle_* launch only half the time (idle spells; see main).
 * Prints one line per container and scenario, busy share in two consecutive 5 s windows from t = 0 (start-up
 * burst included):
 *   share <scenario> <container> <target> <window 1 %> <window 2 %>
 */
#include <stdio.h>
#include <string.h>

#include "throttle.h"

#define STEP_NS 5000ULL
#define SLICE_NS 1000000ULL
#define OVERSLEEP_NS 60000ULL
#define WINDOW_NS 5000000000ULL
#define MAX_PROCS 8
#define NSPAN 16

typedef struct proc {
    int container;
    uint64_t kernel_ns, launch_ns;
    int sync; /* waits for its queue to drain after every launch (one big kernel + synchronize) */
    uint64_t period_ns; /* > 0: launches only in the first half of every period (idle spells) */
    uint64_t submitted, executed, busy[2];
    uint64_t ev_pos[VC_RING], ev_done[VC_RING];
    vc_ctl_t ctl;
    vc_ring_t ring;
    vc_discount_t discount;
    uint64_t ready_at, credit, granted;
    int wait_k, stepping, woke, synced;
    uint64_t span_a[NSPAN], span_b[NSPAN], spans, open_since, open_until; /* its slot in the record */
} proc_t;

typedef struct world {
    proc_t p[MAX_PROCS];
    int n, containers;
    uint32_t share[MAX_PROCS];
    int64_t tokens[MAX_PROCS];
    uint64_t refill[MAX_PROCS];
    uint64_t now;
} world_t;

static world_t W;

static int sim_record(void *self, unsigned k) {
    proc_t *p = self;
    p->ev_pos[k] = p->submitted;
    p->ev_done[k] = p->executed >= p->submitted ? W.now : 0;
    return 0;
}

static int sim_query(void *self, unsigned k) { return ((proc_t *)self)->ev_done[k] != 0; }

static int sim_elapsed(void *self, unsigned a, unsigned b, uint64_t *ns) {
    proc_t *p = self;
    *ns = p->ev_done[b] - p->ev_done[a];
    return 0;
}

static unsigned spans_of(const proc_t *q, uint32_t owner, uint64_t a, uint64_t b, uint64_t now, vc_span_t *out) {
    unsigned n = 0;
    for (uint64_t j = q->spans > NSPAN ? q->spans - NSPAN : 0; j < q->spans; j++) {
        uint64_t x = q->span_a[j % NSPAN], y = q->span_b[j % NSPAN];
        if (y > x && y > a && x < b) out[n++] = (vc_span_t){x, y, owner};
    }
    uint64_t until = q->open_until < now ? q->open_until : now;
    if (q->open_since && until > q->open_since && until > a && q->open_since < b)
        out[n++] = (vc_span_t){q->open_since, until, owner};
    return n;
}

/* node.c's view: this container's other processes first, then the other containers' processes. */
static uint64_t sim_own(void *self, uint64_t a, uint64_t b, uint64_t now, uint64_t *private_ns) {
    proc_t *me = self;
    me->span_a[me->spans % NSPAN] = a;
    me->span_b[me->spans % NSPAN] = b;
    me->spans++;
    vc_span_t others[VC_OWN_MAX_SPANS];
    unsigned n = 0, siblings = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < W.n; i++) {
            proc_t *q = &W.p[i];
            if (q == me || (q->container == me->container) != (pass == 0) || n + NSPAN + 1 > VC_OWN_MAX_SPANS) continue;
            n += spans_of(q, (uint32_t)i, a, b, now, others + n);
        }
        if (pass == 0) siblings = n;
    }
    me->discount.pct = 0;
    for (int c = 0; c < W.containers; c++)
        if (c != me->container) me->discount.pct += W.share[c];
    return vc_split_busy(&me->discount, a, b, others, siblings, n, now, private_ns);
}

static void sim_set_open(void *self, uint64_t since, uint64_t until, uint64_t now) {
    (void)now;
    proc_t *p = self;
    p->open_since = since;
    p->open_until = until;
}

static const vc_ctl_ops_t OPS = {sim_record, sim_query, sim_elapsed, sim_own, sim_set_open};

/* What a launching thread does at `now` (compute.c's vc_checkpoint around vc_ctl_step). */
static void act(proc_t *p, uint64_t now) {
    while (p->ready_at <= now) {
        if (p->woke) {
            vc_ctl_woke(&p->ctl, now);
            p->woke = 0;
        }
        if (p->wait_k >= 0) {
            if (!p->ev_done[p->wait_k]) return; /* blocked in cuEventSynchronize */
            p->wait_k = -1;
        }
        if (p->credit == 0) {
            if (!p->stepping) p->ctl.pending += p->granted;
            p->stepping = 1;
            vc_step_t out;
            if (vc_ctl_step(&p->ctl, &p->ring, &OPS, p, now, &out)) {
                p->wait_k = out.wait_k;
                continue;
            }
            p->stepping = 0;
            p->granted = p->credit = out.batch;
            if (out.sleep_ns) {
                p->ready_at = now + out.sleep_ns + OVERSLEEP_NS;
                p->woke = 1;
            }
            continue;
        }
        if (p->submitted - p->executed > 1024 * p->kernel_ns) return; /* driver queue full: the launch blocks */
        if (p->sync && p->submitted > p->executed) return;           /* synchronize */
        if (p->period_ns && now % p->period_ns >= p->period_ns / 2) { /* idle half, after a synchronize */
            if (!p->synced) { /* compute.c's vc_sync_point: close the segment now, a new one after the pause */
                p->synced = 1;
                p->granted -= p->credit;
                p->credit = 0;
                continue;
            }
            p->granted = p->credit = 0;
            return;
        }
        p->synced = 0;
        p->submitted += p->kernel_ns;
        p->credit--;
        p->ready_at += p->launch_ns;
        if (p->ready_at < now) p->ready_at = now;
    }
}

/* One step of the GPU: round-robin slices between contexts with queued work. */
static void gpu_step(int *cur, uint64_t *slice_used, uint64_t now) {
    uint64_t left = STEP_NS;
    for (int tries = 0; tries <= 2 * W.n && left > 0; tries++) {
        proc_t *r = &W.p[*cur];
        uint64_t queued = r->submitted - r->executed;
        int others = 0;
        for (int i = 0; i < W.n; i++) others |= i != *cur && W.p[i].submitted > W.p[i].executed;
        if (queued == 0 || (*slice_used >= SLICE_NS && others)) {
            *cur = (*cur + 1) % W.n;
            *slice_used = 0;
            continue;
        }
        uint64_t run = queued < left ? queued : left;
        r->executed += run;
        *slice_used += run;
        if (now < 2 * WINDOW_NS) r->busy[now / WINDOW_NS] += run;
        left -= run;
    }
}

static void events(proc_t *p, uint64_t now) {
    for (unsigned i = 0; i < p->ring.outstanding; i++) {
        unsigned k = (p->ring.next + VC_RING - p->ring.outstanding + i) % VC_RING;
        if (!p->ev_done[k] && p->executed >= p->ev_pos[k]) p->ev_done[k] = now;
    }
}

typedef struct spec {
    int container;
    uint64_t kernel_ns, launch_ns;
    int sync;
    uint64_t period_ns;
} spec_t;

static void run(const char *name, const uint32_t *shares, int containers, const spec_t *procs, int n) {
    memset(&W, 0, sizeof W);
    W.n = n;
    W.containers = containers;
    for (int c = 0; c < containers; c++) W.share[c] = shares[c];
    for (int i = 0; i < n; i++) {
        proc_t *p = &W.p[i];
        p->container = procs[i].container;
        p->kernel_ns = procs[i].kernel_ns;
        p->launch_ns = procs[i].launch_ns;
        p->sync = procs[i].sync;
        p->period_ns = procs[i].period_ns;
        p->wait_k = -1;
        vc_ctl_init(&p->ctl, shares[p->container], 0);
        vc_throttle_share_bucket(&p->ctl.t, &W.tokens[p->container], &W.refill[p->container], 1);
    }
    int cur = 0;
    uint64_t slice_used = 0;
    for (W.now = 1; W.now < 2 * WINDOW_NS; W.now += STEP_NS) {
        for (int i = 0; i < n; i++) act(&W.p[i], W.now);
        gpu_step(&cur, &slice_used, W.now);
        for (int i = 0; i < n; i++) events(&W.p[i], W.now + STEP_NS);
    }
    for (int c = 0; c < containers; c++) {
        uint64_t b[2] = {0, 0};
        for (int i = 0; i < n; i++)
            if (W.p[i].container == c) b[0] += W.p[i].busy[0], b[1] += W.p[i].busy[1];
        printf("share %s %d %u %.2f %.2f\n", name, c, shares[c], 100.0 * (double)b[0] / WINDOW_NS,
               100.0 * (double)b[1] / WINDOW_NS);
    }
}

int main(void) {
    static const uint64_t kernels[] = {50000, 1000000, 20000000, 50000000};
    char name[64];
    for (uint32_t t = 10; t <= 90; t += 10) {
        for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
            spec_t p = {0, kernels[k], 5000, 0, 0};
            snprintf(name, sizeof name, "alone_%lluus", (unsigned long long)kernels[k] / 1000);
            run(name, &t, 1, &p, 1);
        }
    }
    for (uint32_t t = 10; t <= 90; t += 40) {
        spec_t p = {0, 200000000, 5000, 1, 0};
        run("alone_200ms_sync", &t, 1, &p, 1);
    }
    /* Bursts after idle spells: launches (then synchronizes) in the first half of every second only. Half
     * the limit is used in the busy halves; what an idle spell buys on top is bounded by the savings cap (and
     * one kernel), whatever the kernel size. */
    for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        uint32_t t = 20;
        spec_t p = {0, kernels[k], 5000, 0, 1000000000ULL};
        snprintf(name, sizeof name, "half_idle_%lluus", (unsigned long long)kernels[k] / 1000);
        run(name, &t, 1, &p, 1);
    }
    for (uint32_t t = 10; t <= 90; t += 20) {
        uint32_t s[2] = {t, 100 - t};
        spec_t small[2] = {{0, 50000, 5000, 0, 0}, {1, 50000, 5000, 0, 0}};
        spec_t large[2] = {{0, 20000000, 5000, 0, 0}, {1, 20000000, 5000, 0, 0}};
        run("two_tenants_50us", s, 2, small, 2);
        run("two_tenants_20ms", s, 2, large, 2);
    }
    {
        uint32_t s[4] = {10, 20, 30, 40};
        spec_t p[4] = {{0, 50000, 5000, 0, 0}, {1, 1000000, 5000, 0, 0}, {2, 50000, 5000, 0, 0}, {3, 20000000, 5000, 0, 0}};
        run("four_tenants_mixed", s, 4, p, 4);
        uint32_t e[4] = {20, 20, 20, 20};
        run("four_tenants_20", e, 4, p, 4);
    }
    for (int n = 2; n <= 4; n++) {
        uint32_t s = n == 3 ? 70 : 30;
        spec_t p[4];
        for (int i = 0; i < n; i++) p[i] = (spec_t){0, 50000, 5000, 0, 0};
        snprintf(name, sizeof name, "one_container_%d_procs_50us", n);
        run(name, &s, 1, p, n);
        for (int i = 0; i < n; i++) p[i] = (spec_t){0, 20000000, 5000, 0, 0};
        snprintf(name, sizeof name, "one_container_%d_procs_20ms", n);
        run(name, &s, 1, p, n);
    }
    {
        uint32_t s[2] = {40, 50};
        spec_t p[3] = {{0, 50000, 5000, 0, 0}, {0, 1000000, 5000, 0, 0}, {1, 50000, 5000, 0, 0}};
        run("two_procs_and_a_neighbour", s, 2, p, 3);
    }
    return 0;
}
