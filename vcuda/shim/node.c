/* The container's record file for one GPU and the records of its placed neighbours (docs/shim.md).
 *
 * Own record, `<node dir>/tenants/<pod-uid>_<container>/<gpu uuid>.bin` (layout vcuda_node_t), mapped
 * read-write by every shim process of the container (only that directory is mounted writable in it): the
 * container's compute budget for the GPU, shared by its processes, and one slot per process where it
 * publishes, from controller checkpoints only, its measured busy spans and the span of work in flight.
 * Without the node directory the record lives in the usage directory (budget and siblings, no neighbours).
 *
 * Neighbours: only the containers listed by the plugin in `<node dir>/placed/<gpu uuid>` (not writable by any
 * tenant) count. Their records are never mapped (a tenant may truncate its own file): each is opened
 * O_NOFOLLOW, must be a regular file, and is read with one bounded pread into a private copy. Whatever a
 * neighbour writes only changes what it reports about itself, and what that can take off our charges is
 * bounded by its share (vc_discount_take). Shared fields are accessed with atomics, no locks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h> /* getrandom(2) via syscall: the glibc wrapper needs 2.25 */
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "throttle.h"

#define VC_NODE_STALE_NS 10000000000ULL   /* a slot without a heartbeat for 10 s may be reclaimed */
#define VC_PLACED_REFRESH_NS 1000000000ULL /* re-read the placement list once a second */
#define VC_RECORD_RETRY_NS 20000000ULL     /* look for a listed neighbour's missing record every 20 ms */
#define VC_NAME_MAX 208
#define VC_SIBLING_OWNERS VCUDA_NODE_SLOTS /* owner ids 0..15 = our slots, 16..63 = neighbours' slots */

typedef struct vc_neighbour {
    char name[VC_NAME_MAX];
    uint32_t pct;
    int fd;            /* -1: no record yet (the neighbour has not started CUDA) */
    uint64_t retry_ns; /* when to look for a missing record again */
} vc_neighbour_t;

typedef struct vc_nodefile {
    vcuda_node_t *own;
    vcuda_node_slot_t *mine;
    int has_dir; /* the node directory is there: neighbours may exist */
    unsigned count;
    uint32_t pct;
    uint64_t next_refresh_ns;
    vc_neighbour_t neighbours[VCUDA_PLACED_MAX];
} vc_nodefile_t;

static vc_nodefile_t *vc_nodes[VCUDA_MAX_GPUS];
static uint64_t vc_node_token;
static char vc_own_name[VC_NAME_MAX];

#define VC_LD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define VC_ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static const char *vc_node_dir(void) { return vc_env_path(VCUDA_ENV_NODE_DIR, VCUDA_NODE_DIR); }

static uint64_t vc_clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A record directory name: what the plugin writes (`<pod-uid>_<container>`), nothing that leaves the dir. */
static int vc_valid_name(const char *s) {
    if (!*s || *s == '.' || strlen(s) >= VC_NAME_MAX) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* Opens a file a tenant may control: no symlink, regular file only (never a FIFO or device). */
static int vc_open_regular(const char *path, int flags) {
    int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0666);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return -1;
    }
    return fd;
}

static int vc_header_ok(const vcuda_node_t *f) {
    return memcmp(f->magic, VCUDA_NODE_MAGIC, sizeof f->magic) == 0 && f->version == VCUDA_NODE_VERSION &&
           f->size == sizeof(vcuda_node_t) && f->slot_count == VCUDA_NODE_SLOTS;
}

/* Maps the container's own record (created on first use by whichever of its processes comes first). */
static vcuda_node_t *vc_map_own(const char *path) {
    int fd = vc_open_regular(path, O_RDWR | O_CREAT);
    if (fd < 0) {
        vc_log_debug("record file %s: %s", path, strerror(errno));
        return NULL;
    }
    (void)fchmod(fd, 0666); /* the container's processes may run as different users */
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_size < (off_t)sizeof(vcuda_node_t) && ftruncate(fd, sizeof(vcuda_node_t)))) {
        close(fd);
        return NULL;
    }
    void *m = mmap(NULL, sizeof(vcuda_node_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return NULL;
    vcuda_node_t *f = m;
    uint32_t zero = 0;
    if (VC_LD(&f->version) == 0) { /* fresh file: every writer writes the same header, one wins the version */
        VC_ST(&f->size, (uint32_t)sizeof(vcuda_node_t));
        VC_ST(&f->slot_count, (uint32_t)VCUDA_NODE_SLOTS);
        memcpy(f->magic, VCUDA_NODE_MAGIC, sizeof f->magic);
        __atomic_compare_exchange_n(&f->version, &zero, (uint32_t)VCUDA_NODE_VERSION, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED);
    }
    if (!vc_header_ok(f)) {
        vc_log_error("record file %s has an unknown layout; compute budget is per process", path);
        munmap(m, sizeof(vcuda_node_t));
        return NULL;
    }
    return f;
}

/* A sibling slot's owner is alive (same pid namespace: the container's). */
static int vc_slot_alive(const vcuda_node_slot_t *s) {
    int32_t pid = VC_LD(&s->pid);
    return pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH;
}

/* A slot is free, its owner dead, or stale: its owner has not stepped for VC_NODE_STALE_NS. A heartbeat of 0 (claimed a moment
 * ago) or one later than our clock reading is fresh: taking such a slot would make two live processes share it. */
static vcuda_node_slot_t *vc_node_claim(vcuda_node_t *f) {
    uint64_t now = vc_clock_ns();
    for (unsigned i = 0; i < VCUDA_NODE_SLOTS; i++) {
        vcuda_node_slot_t *s = &f->slots[i];
        uint64_t o = VC_LD(&s->owner), hb = VC_LD(&s->heartbeat_ns);
        if (o != 0 && vc_slot_alive(s) && (hb == 0 || hb + VC_NODE_STALE_NS > now)) continue;
        if (!__atomic_compare_exchange_n(&s->owner, &o, vc_node_token, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        VC_ST(&s->pid, (int32_t)getpid());
        VC_ST(&s->heartbeat_ns, now);
        VC_ST(&s->open_since, 0);
        VC_ST(&s->open_until, 0);
        return s;
    }
    return NULL;
}

static void vc_own_record_path(int rec, char *path, size_t cap, int *has_dir) {
    const char *uuid = vc_state.config.gpus[rec].uuid;
    char dir[512];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/%s/%s", vc_node_dir(), VCUDA_NODE_TENANTS_DIR, vc_own_name);
    *has_dir = vc_valid_name(vc_own_name) && stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
    if (*has_dir) {
        snprintf(path, cap, "%s/%s.bin", dir, uuid);
        return;
    }
    char buf[512];
    const char *usage = vc_usage_path(buf, sizeof buf), *slash = strrchr(usage, '/');
    int len = slash ? (int)(slash - usage) : 1;
    snprintf(path, cap, "%.*s/node-%s.bin", len, slash ? usage : ".", uuid);
}

int vc_node_open(int rec, uint64_t now) {
    if (rec < 0 || rec >= VCUDA_MAX_GPUS) return -1;
    if (vc_nodes[rec]) return 0;
    while (vc_node_token == 0)
        if (syscall(SYS_getrandom, &vc_node_token, sizeof vc_node_token, 0) != sizeof vc_node_token)
            vc_node_token = ((uint64_t)getpid() << 32) ^ now;
    snprintf(vc_own_name, sizeof vc_own_name, "%s_%s", vc_state.config.pod_uid, vc_state.config.container);
    vc_nodefile_t *nf = calloc(1, sizeof *nf);
    if (!nf) return -1;
    char path[1024];
    vc_own_record_path(rec, path, sizeof path, &nf->has_dir);
    nf->own = vc_map_own(path);
    nf->mine = nf->own ? vc_node_claim(nf->own) : NULL;
    if (!nf->mine) {
        if (nf->own) vc_log_error("record file %s: no free process slot; compute budget is per process", path);
        if (nf->own) munmap(nf->own, sizeof(vcuda_node_t));
        free(nf);
        return -1;
    }
    vc_nodes[rec] = nf;
    return 0;
}

int64_t *vc_node_tokens(int rec) { return &vc_nodes[rec]->own->tokens_ns; }
uint64_t *vc_node_refill(int rec) { return &vc_nodes[rec]->own->refill_ns; }

/* Our slot, re-claimed if another process took it over (we were idle past the stale limit) or if we are a
 * forked child (the slot is the parent's: a child claims its own, under a new token). */
static vcuda_node_slot_t *vc_node_slot(int rec) {
    vc_nodefile_t *nf = vc_nodes[rec];
    if (nf->mine && VC_LD(&nf->mine->pid) != (int32_t)getpid()) {
        if (syscall(SYS_getrandom, &vc_node_token, sizeof vc_node_token, 0) != sizeof vc_node_token)
            vc_node_token ^= (uint64_t)getpid() << 32;
        nf->mine = vc_node_claim(nf->own);
    } else if (nf->mine && VC_LD(&nf->mine->owner) != vc_node_token) {
        nf->mine = vc_node_claim(nf->own);
    }
    return nf->mine;
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

/* ---- neighbours ------------------------------------------------------------------------------------------ */

static void vc_parse_placement(vc_nodefile_t *nf, char *text) {
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    char magic[32];
    snprintf(magic, sizeof magic, "%s %d", VCUDA_PLACED_MAGIC, VCUDA_NODE_VERSION);
    if (!line || strcmp(line, magic) != 0) return;
    while ((line = strtok_r(NULL, "\n", &save)) && nf->count < VCUDA_PLACED_MAX) {
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = '\0';
        long pct = strtol(sp + 1, NULL, 10);
        if (!vc_valid_name(line) || strcmp(line, vc_own_name) == 0 || pct < 1 || pct > VCUDA_CORE_PER_GPU) continue;
        vc_neighbour_t *nb = &nf->neighbours[nf->count++];
        snprintf(nb->name, sizeof nb->name, "%s", line);
        nb->pct = (uint32_t)pct;
        nf->pct += nb->pct;
        nb->fd = -1;
        nb->retry_ns = 0;
    }
}

/* A neighbour's record, opened when it appears (looked for at most every VC_RECORD_RETRY_NS). */
static int vc_neighbour_fd(vc_neighbour_t *nb, const char *uuid, uint64_t now) {
    if (nb->fd >= 0 || now < nb->retry_ns) return nb->fd;
    nb->retry_ns = now + VC_RECORD_RETRY_NS;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s/%s.bin", vc_node_dir(), VCUDA_NODE_TENANTS_DIR, nb->name, uuid);
    nb->fd = vc_open_regular(path, O_RDONLY);
    return nb->fd;
}

/* Re-reads `<node dir>/placed/<uuid>` (bounded) and reopens the listed neighbours' records. */
static void vc_refresh_neighbours(vc_nodefile_t *nf, int rec, uint64_t now) {
    if (!nf->has_dir || now < nf->next_refresh_ns) return;
    nf->next_refresh_ns = now + VC_PLACED_REFRESH_NS;
    for (unsigned i = 0; i < nf->count; i++)
        if (nf->neighbours[i].fd >= 0) close(nf->neighbours[i].fd);
    nf->count = 0;
    nf->pct = 0;
    const char *uuid = vc_state.config.gpus[rec].uuid;
    char path[1024], text[VCUDA_PLACED_MAX_BYTES + 1];
    snprintf(path, sizeof path, "%s/%s/%s", vc_node_dir(), VCUDA_NODE_PLACED_DIR, uuid);
    int fd = vc_open_regular(path, O_RDONLY);
    if (fd < 0) return;
    ssize_t n = pread(fd, text, VCUDA_PLACED_MAX_BYTES, 0);
    close(fd);
    if (n <= 0) return;
    text[n] = '\0';
    vc_parse_placement(nf, text);
}

/* Busy and open spans of the slots of `f` overlapping [start, end), slot i with owner id `owner` + i (one
 * context each: time-slicing splits per context; ids wrap within 16..63 for neighbours, which only makes the
 * split more conservative). */
static unsigned vc_slot_spans(const vcuda_node_t *f, const vcuda_node_slot_t *skip, uint32_t owner, uint64_t start,
                              uint64_t end, uint64_t now, vc_span_t *out, unsigned cap) {
    unsigned n = 0;
    for (unsigned i = 0; i < VCUDA_NODE_SLOTS && n < cap; i++) {
        const vcuda_node_slot_t *s = &f->slots[i];
        uint32_t id = owner < VC_SIBLING_OWNERS ? i : VC_SIBLING_OWNERS + (owner + i) % (64 - VC_SIBLING_OWNERS);
        if (s == skip || VC_LD(&s->owner) == 0 || (owner < VC_SIBLING_OWNERS && !vc_slot_alive(s))) continue;
        uint64_t count = VC_LD(&s->span_count);
        for (uint64_t j = count > VCUDA_NODE_SPANS ? count - VCUDA_NODE_SPANS : 0; j < count && n < cap; j++) {
            uint64_t a = __atomic_load_n(&s->span_start[j % VCUDA_NODE_SPANS], __ATOMIC_RELAXED);
            uint64_t b = __atomic_load_n(&s->span_end[j % VCUDA_NODE_SPANS], __ATOMIC_RELAXED);
            if (b > a && b > start && a < end) out[n++] = (vc_span_t){a, b, id};
        }
        uint64_t since = VC_LD(&s->open_since), until = VC_LD(&s->open_until);
        if (until > now) until = now;
        if (since && until > since && until > start && since < end && n < cap) out[n++] = (vc_span_t){since, until, id};
    }
    return n;
}

unsigned vc_node_others(int rec, uint64_t start, uint64_t end, uint64_t now, vc_span_t *out, unsigned cap,
                        unsigned *siblings) {
    vc_nodefile_t *nf = vc_nodes[rec];
    unsigned n = vc_slot_spans(nf->own, nf->mine, 0, start, end, now, out, cap);
    *siblings = n;
    vc_refresh_neighbours(nf, rec, now);
    for (unsigned i = 0; i < nf->count && n < cap; i++) {
        vcuda_node_t copy; /* a private copy: the neighbour may rewrite or truncate its file at any time */
        int fd = vc_neighbour_fd(&nf->neighbours[i], vc_state.config.gpus[rec].uuid, now);
        if (fd < 0 || pread(fd, &copy, sizeof copy, 0) != (ssize_t)sizeof copy || !vc_header_ok(&copy)) continue;
        n += vc_slot_spans(&copy, NULL, VC_SIBLING_OWNERS + i * VCUDA_NODE_SLOTS, start, end, now, out + n, cap - n);
    }
    return n;
}

uint32_t vc_node_neighbour_pct(int rec) { return vc_nodes[rec]->pct; }
