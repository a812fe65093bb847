/* The per-GPU node file `<node dir>/<gpu uuid>.bin` (layout vcuda_node_t), shared read-write by the shims of
 * every tenant of that GPU on the node. Each shim process claims one slot and publishes, from its controller
 * checkpoints (never from the launch fast path), the busy spans it measured and the span of work it has in
 * flight. A checkpoint reads the other slots to split time-sliced overlap (vc_own_busy in throttle.c).
 * Optional: when the directory is absent or the file is unusable the shim runs as a lone tenant.
 * All shared fields are 8-byte aligned and accessed with relaxed/acquire-release atomics, no locks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "throttle.h"

#define VC_NODE_STALE_NS 10000000000ULL /* a slot without a heartbeat for 10 s may be reclaimed */

static vcuda_node_t *vc_node[VCUDA_MAX_GPUS];
static vcuda_node_slot_t *vc_node_mine[VCUDA_MAX_GPUS];
static uint64_t vc_node_token;

#define VC_LD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define VC_ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static const char *vc_node_dir(void) {
    const char *p = getenv(VCUDA_ENV_NODE_DIR);
    return (p && *p) ? p : VCUDA_NODE_DIR;
}

/* A slot is free, or stale: its owner has not stepped for VC_NODE_STALE_NS. A heartbeat of 0 (claimed a moment
 * ago) or one later than our clock reading is fresh: taking such a slot would make two live tenants share it. */
static vcuda_node_slot_t *vc_node_claim(vcuda_node_t *f) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    for (unsigned i = 0; i < VCUDA_NODE_SLOTS; i++) {
        vcuda_node_slot_t *s = &f->slots[i];
        uint64_t o = VC_LD(&s->owner), hb = VC_LD(&s->heartbeat_ns);
        if (o != 0 && (hb == 0 || hb + VC_NODE_STALE_NS > now)) continue;
        if (!__atomic_compare_exchange_n(&s->owner, &o, vc_node_token, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        VC_ST(&s->heartbeat_ns, now);
        VC_ST(&s->open_since, 0);
        VC_ST(&s->open_until, 0);
        return s;
    }
    return NULL;
}

int vc_node_open(int rec, uint64_t now) {
    if (rec < 0 || rec >= VCUDA_MAX_GPUS) return -1;
    if (vc_node[rec]) return 0;
    while (vc_node_token == 0)
        if (getrandom(&vc_node_token, sizeof vc_node_token, 0) != sizeof vc_node_token)
            vc_node_token = ((uint64_t)getpid() << 32) ^ now;
    char path[512];
    snprintf(path, sizeof path, "%s/%s.bin", vc_node_dir(), vc_state.config.gpus[rec].uuid);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        vc_log_debug("node file %s: %s (co-located tenants not visible)", path, strerror(errno));
        return -1;
    }
    (void)fchmod(fd, 0666); /* tenants run as different users */
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_size < (off_t)sizeof(vcuda_node_t) && ftruncate(fd, sizeof(vcuda_node_t)))) {
        close(fd);
        return -1;
    }
    void *m = mmap(NULL, sizeof(vcuda_node_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return -1;
    vcuda_node_t *f = m;
    if (VC_LD(&f->version) == 0) { /* fresh file: every writer writes the same header */
        VC_ST(&f->size, (uint32_t)sizeof(vcuda_node_t));
        VC_ST(&f->slot_count, (uint32_t)VCUDA_NODE_SLOTS);
        memcpy(f->magic, VCUDA_NODE_MAGIC, sizeof f->magic);
        VC_ST(&f->version, (uint32_t)VCUDA_NODE_VERSION);
    }
    if (memcmp(f->magic, VCUDA_NODE_MAGIC, sizeof f->magic) != 0 || f->version != VCUDA_NODE_VERSION ||
        f->size != sizeof(vcuda_node_t) || f->slot_count != VCUDA_NODE_SLOTS) {
        vc_log_error("node file %s has an unknown layout; co-located tenants not visible", path);
        munmap(m, sizeof(vcuda_node_t));
        return -1;
    }
    vcuda_node_slot_t *s = vc_node_claim(f);
    if (!s) {
        vc_log_error("node file %s: no free slot; co-located tenants not visible", path);
        munmap(m, sizeof(vcuda_node_t));
        return -1;
    }
    vc_node_mine[rec] = s;
    vc_node[rec] = f;
    return 0;
}

/* Our slot, re-claimed if another process took it over (we were idle past the stale limit). */
static vcuda_node_slot_t *vc_node_slot(int rec) {
    vcuda_node_slot_t *s = vc_node_mine[rec];
    if (s && VC_LD(&s->owner) != vc_node_token) s = vc_node_mine[rec] = vc_node_claim(vc_node[rec]);
    return s;
}

void vc_node_publish(int rec, uint64_t start, uint64_t end, uint64_t now) {
    vcuda_node_slot_t *s = vc_node_slot(rec);
    if (!s || end <= start) return;
    uint64_t n = VC_LD(&s->span_count);
    __atomic_store_n(&s->span_start[n % VCUDA_NODE_SPANS], start, __ATOMIC_RELAXED);
    __atomic_store_n(&s->span_end[n % VCUDA_NODE_SPANS], end, __ATOMIC_RELAXED);
    VC_ST(&s->span_count, n + 1);
    VC_ST(&s->heartbeat_ns, now);
}

void vc_node_set_open(int rec, uint64_t since, uint64_t until, uint64_t now) {
    vcuda_node_slot_t *s = vc_node_slot(rec);
    if (!s) return;
    VC_ST(&s->open_until, until);
    VC_ST(&s->open_since, since);
    VC_ST(&s->heartbeat_ns, now);
}

unsigned vc_node_others(int rec, uint64_t start, uint64_t end, uint64_t now, vc_span_t *out, unsigned cap) {
    vcuda_node_t *f = vc_node[rec];
    vcuda_node_slot_t *mine = vc_node_mine[rec];
    unsigned n = 0;
    for (unsigned i = 0; i < VCUDA_NODE_SLOTS && n < cap; i++) {
        vcuda_node_slot_t *s = &f->slots[i];
        if (s == mine || VC_LD(&s->owner) == 0) continue;
        uint64_t count = VC_LD(&s->span_count);
        for (uint64_t j = count > VCUDA_NODE_SPANS ? count - VCUDA_NODE_SPANS : 0; j < count && n < cap; j++) {
            uint64_t a = __atomic_load_n(&s->span_start[j % VCUDA_NODE_SPANS], __ATOMIC_RELAXED);
            uint64_t b = __atomic_load_n(&s->span_end[j % VCUDA_NODE_SPANS], __ATOMIC_RELAXED);
            if (b > a && b > start && a < end) out[n++] = (vc_span_t){a, b, i};
        }
        uint64_t since = VC_LD(&s->open_since), until = VC_LD(&s->open_until);
        if (until > now) until = now;
        if (since && until > since && until > start && since < end && n < cap) out[n++] = (vc_span_t){since, until, i};
    }
    return n;
}
