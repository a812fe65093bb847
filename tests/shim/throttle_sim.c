/* Drives the shim's pure compute controller (vcuda/shim/throttle.c) against a simulated clock and a
 * simulated GPU, the way compute.c drives it with CUDA events: checkpoints every `batch` launches, busy time
 * measured from event completion, at most 8 unmeasured checkpoints, debt slept off. Prints, per scenario,
 * the GPU busy share over a 5 s window after 1 s of warm-up:
 *   share <name> <target> <measured percent>
 * Scenarios: many tiny kernels (20 us) launched flat out; few large kernels (50 ms) flat out; one large
 * kernel + synchronize loop (200 ms); CPU-bound tiny kernels (launch cost 10 us > kernel 4 us); soft limit
 * with an idle GPU (uses the soft ceiling) and with a neighbour (stays at the hard share).
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
    return 0;
}
