/* Drives the shim's pure compute controller (vcuda/shim/throttle.c) against a simulated clock and a
 * simulated GPU, the way compute.c drives it with CUDA events: checkpoints every `batch` launches, busy time
 * measured from event completion, at most 8 unmeasured checkpoints, debt slept off. Prints, per scenario,
 * the GPU busy share over a 5 s window after 1 s of warm-up:
 *   share <name> <target> <measured percent>
 * Scenarios: many tiny kernels (20 us) launched flat out; few large kernels (50 ms) flat out; one large
 * kernel + synchronize loop (200 ms); CPU-bound tiny kernels (launch cost 10 us > kernel 4 us); soft limit
 * with an idle GPU (uses the soft ceiling) and with a neighbour (stays at the hard share).
 *
 * Co-located (second half): two tenants with targets t and 100 - t share one simulated time-sliced GPU
 * (1 us steps; round-robin 1 ms slices while both have work queued, as the driver does for two contexts).
 * Each runs compute.c's checkpoint logic; with the node file (`colo`) they publish busy spans and charge only
 * their part of overlapped time (vc_own_busy), and drain their queue before sleeping; without it
 * (`colo_nonode`, the previous controller) each is charged for the other's slices. Prints
 *   colo <kernel> <target> <measured percent>   (one line per tenant)
 */
#include <stdio.h>
#include <string.h>

#include "throttle.h"

#define RING 8

typedef struct sim {
    uint64_t now, gpu_free_at, busy_in_window, win_start, win_end;
    uint64_t ev_done[RING], ev_submit[RING], ev_launches[RING];
    unsigned head, count;
    uint64_t done_ns, last_ckpt;
    int have_done;
    vc_throttle_t t;
} sim_t;

static void gpu_run(sim_t *s, uint64_t kernel_ns) {
    uint64_t start = s->gpu_free_at > s->now ? s->gpu_free_at : s->now, end = start + kernel_ns;
    uint64_t a = start > s->win_start ? start : s->win_start, b = end < s->win_end ? end : s->win_end;
    if (b > a) s->busy_in_window += b - a;
    s->gpu_free_at = end;
}

static void complete_oldest(sim_t *s) {
    unsigned k = (s->head + RING - s->count) % RING;
    if (s->ev_done[k] > s->now) s->now = s->ev_done[k]; /* blocking wait (cuEventSynchronize) */
    uint64_t busy = s->have_done ? vc_busy_segment(s->done_ns, s->ev_submit[k], s->ev_done[k]) : 0;
    vc_throttle_charge(&s->t, busy, s->ev_launches[k]);
    s->done_ns = s->ev_done[k];
    s->have_done = 1;
    s->count--;
}

static uint32_t checkpoint(sim_t *s, uint64_t launches) {
    while (s->count > 0) {
        unsigned k = (s->head + RING - s->count) % RING;
        if (s->ev_done[k] > s->now && s->count < vc_throttle_max_outstanding(&s->t)) break;
        complete_oldest(s);
    }
    unsigned k = s->head;
    s->ev_done[k] = s->gpu_free_at > s->now ? s->gpu_free_at : s->now;
    s->ev_submit[k] = s->last_ckpt;
    s->ev_launches[k] = launches;
    s->head = (k + 1) % RING;
    s->count++;
    s->now += vc_throttle_wait_ns(&s->t, s->now);
    s->last_ckpt = s->now; /* the next segment's work is submitted after the wait */
    return vc_throttle_batch(&s->t);
}

/* Launch loop: `launch_ns` CPU cost per launch, `sync_every` > 0 waits for the GPU after that many launches. */
static double simulate(uint32_t share, uint64_t kernel_ns, uint64_t launch_ns, int sync_every) {
    sim_t s;
    memset(&s, 0, sizeof s);
    s.win_start = 1000000000ULL;
    s.win_end = 6000000000ULL;
    vc_throttle_init(&s.t, share, 0);
    uint32_t credit = 0, granted = 0;
    long n = 0;
    while (s.now < s.win_end) {
        if (credit == 0) {
            granted = checkpoint(&s, granted);
            credit = granted;
        }
        credit--;
        gpu_run(&s, kernel_ns);
        s.now += launch_ns;
        if (sync_every && ++n % sync_every == 0 && s.gpu_free_at > s.now) s.now = s.gpu_free_at;
        /* The driver's launch queue is finite: a launch blocks when ~1024 kernels are pending. */
        if (s.gpu_free_at > s.now + 1024 * kernel_ns) s.now = s.gpu_free_at - 1024 * kernel_ns;
    }
    return 100.0 * (double)s.busy_in_window / (double)(s.win_end - s.win_start);
}

/* ---- two tenants on one time-sliced GPU ---------------------------------------------------------------- */

#define STEP 1000ULL
#define SLICE 1000000ULL
#define NSPAN 16

typedef struct tenant {
    uint64_t kernel_ns, launch_ns, submitted, executed, busy_in_window;
    uint64_t ev_pos[RING], ev_done[RING], ev_submit[RING], ev_launches[RING];
    unsigned head, count, phase;
    uint64_t done_ns, last_ckpt, ready_at, credit, granted;
    int have_done;
    vc_throttle_t t;
    /* what this tenant publishes in the (simulated) node file */
    uint64_t span_a[NSPAN], span_b[NSPAN], spans, open_since, open_until;
} tenant_t;

static int node_on;

static unsigned others_spans(const tenant_t *other, uint64_t a, uint64_t b, uint64_t now, vc_span_t *out) {
    unsigned n = 0;
    for (uint64_t j = other->spans > NSPAN ? other->spans - NSPAN : 0; j < other->spans; j++) {
        uint64_t x = other->span_a[j % NSPAN], y = other->span_b[j % NSPAN];
        if (y > x && y > a && x < b) out[n++] = (vc_span_t){x, y, 1};
    }
    uint64_t until = other->open_until < now ? other->open_until : now;
    if (other->open_since && until > other->open_since && until > a && other->open_since < b)
        out[n++] = (vc_span_t){other->open_since, until, 1};
    return n;
}

static void t_complete(tenant_t *me, const tenant_t *other, uint64_t now) {
    unsigned k = (me->head + RING - me->count) % RING;
    uint64_t busy = me->have_done ? vc_busy_segment(me->done_ns, me->ev_submit[k], me->ev_done[k]) : 0;
    if (busy > 0 && node_on) {
        vc_span_t spans[NSPAN + 1];
        uint64_t a = me->ev_done[k] - busy;
        me->span_a[me->spans % NSPAN] = a;
        me->span_b[me->spans % NSPAN] = me->ev_done[k];
        me->spans++;
        busy = vc_own_busy(a, me->ev_done[k], spans, others_spans(other, a, me->ev_done[k], now, spans));
    }
    vc_throttle_charge(&me->t, busy, me->ev_launches[k]);
    me->done_ns = me->ev_done[k];
    me->have_done = 1;
    me->count--;
}

/* compute.c's vc_controller_step as a resumable state machine; returns 0 while blocked on an event. */
static int t_checkpoint(tenant_t *me, const tenant_t *other, uint64_t now) {
    if (me->phase == 0) {
        while (me->count > 0) {
            unsigned k = (me->head + RING - me->count) % RING;
            if (me->ev_done[k] == 0) {
                if (me->have_done && me->count < vc_throttle_max_outstanding(&me->t)) break;
                return 0;
            }
            t_complete(me, other, now);
        }
        unsigned k = me->head;
        me->ev_pos[k] = me->submitted;
        me->ev_done[k] = me->executed >= me->submitted ? now : 0;
        me->ev_submit[k] = me->last_ckpt;
        me->ev_launches[k] = me->granted;
        me->head = (k + 1) % RING;
        me->count++;
        me->phase = 1;
    }
    uint64_t wait = vc_throttle_wait_ns(&me->t, now);
    if (node_on) {
        if (wait > 0) {
            while (me->count > 0) {
                if (me->ev_done[(me->head + RING - me->count) % RING] == 0) return 0;
                t_complete(me, other, now);
            }
            wait = vc_throttle_wait_ns(&me->t, now);
        }
        uint64_t since = now + wait;
        if (me->count > 0) {
            unsigned k = (me->head + RING - me->count) % RING;
            since = me->have_done && me->done_ns > me->ev_submit[k] ? me->done_ns : me->ev_submit[k];
        }
        uint64_t seg = me->t.avg_kernel_ns * vc_throttle_batch(&me->t);
        if (seg < VC_THROTTLE_SEGMENT_NS) seg = VC_THROTTLE_SEGMENT_NS;
        me->open_since = since;
        me->open_until = now + wait + 2 * (me->count + 1) * seg;
    }
    me->phase = 0;
    me->last_ckpt = now + wait;
    me->ready_at = now + wait;
    me->granted = vc_throttle_batch(&me->t);
    me->credit = me->granted;
    return 1;
}

static void t_act(tenant_t *me, const tenant_t *other, uint64_t now) {
    while (me->ready_at <= now) {
        if (me->credit == 0) {
            if (!t_checkpoint(me, other, now)) return;
            continue;
        }
        if (me->submitted - me->executed > 1024 * me->kernel_ns) return; /* driver queue full: blocks */
        me->submitted += me->kernel_ns;
        me->credit--;
        me->ready_at += me->launch_ns;
        if (me->ready_at < now) me->ready_at = now;
    }
}

static void t_events(tenant_t *me, uint64_t now) {
    for (unsigned i = 0; i < me->count; i++) {
        unsigned k = (me->head + RING - me->count + i) % RING;
        if (me->ev_done[k] == 0 && me->executed >= me->ev_pos[k]) me->ev_done[k] = now;
    }
}

static void colocated(uint32_t share_a, uint64_t kernel_ns, uint64_t launch_ns, double got[2]) {
    static tenant_t ten[2];
    memset(ten, 0, sizeof ten);
    const uint64_t win_start = 1000000000ULL, win_end = 6000000000ULL;
    for (int i = 0; i < 2; i++) {
        ten[i].kernel_ns = kernel_ns;
        ten[i].launch_ns = launch_ns;
        vc_throttle_init(&ten[i].t, i == 0 ? share_a : 100 - share_a, 0);
    }
    unsigned cur = 0;
    uint64_t slice_used = 0;
    for (uint64_t now = 0; now < win_end; now += STEP) {
        t_act(&ten[0], &ten[1], now);
        t_act(&ten[1], &ten[0], now);
        /* GPU: round-robin between contexts with queued work, SLICE at a time */
        uint64_t left = STEP;
        for (int tries = 0; tries < 3 && left > 0; tries++) {
            tenant_t *r = &ten[cur];
            uint64_t queued = r->submitted - r->executed;
            tenant_t *o = &ten[cur ^ 1];
            if (queued == 0 || (slice_used >= SLICE && o->submitted > o->executed)) {
                cur ^= 1;
                slice_used = 0;
                continue;
            }
            uint64_t run = queued < left ? queued : left;
            r->executed += run;
            slice_used += run;
            if (now >= win_start) r->busy_in_window += run;
            left -= run;
        }
        t_events(&ten[0], now + STEP);
        t_events(&ten[1], now + STEP);
    }
    for (int i = 0; i < 2; i++) got[i] = 100.0 * (double)ten[i].busy_in_window / (double)(win_end - win_start);
}

int main(void) {
    static const uint32_t targets[] = {10, 30, 50, 70, 90};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        uint32_t t = targets[i];
        printf("share tiny %u %.2f\n", t, simulate(t, 20000, 3000, 0));
        printf("share large %u %.2f\n", t, simulate(t, 50000000, 5000, 0));
        printf("share large_sync %u %.2f\n", t, simulate(t, 200000000, 5000, 1));
        printf("share cpu_bound %u %.2f\n", t, simulate(t, 4000, 10000, 0) / (4000.0 / 10000.0));
    }
    printf("share soft_idle 60 %.2f\n", simulate(vc_throttle_pick_share(30, 60, 0), 20000, 3000, 0));
    printf("share soft_busy 30 %.2f\n", simulate(vc_throttle_pick_share(30, 60, 1), 20000, 3000, 0));
    for (node_on = 1; node_on >= 0; node_on--) {
        const char *tag = node_on ? "colo" : "colo_nonode";
        for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
            double g[2];
            colocated(targets[i], 50000, 3000, g);
            printf("%s tiny %u %.2f\n%s tiny %u %.2f\n", tag, targets[i], g[0], tag, 100 - targets[i], g[1]);
            colocated(targets[i], 20000000, 5000, g);
            printf("%s large %u %.2f\n%s large %u %.2f\n", tag, targets[i], g[0], tag, 100 - targets[i], g[1]);
        }
    }
    return 0;
}
