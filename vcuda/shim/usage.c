/* The container's shared usage file: per-GPU totals, one slot per process, a crash-safe lock word.
 *
 * Invariant (under the lock): memory_used[g] == sum of memory_used of live slots on g.
 *
 * Liveness of a slot is an open-file-description lock (F_OFD_SETLK) on one byte of the file at the slot's
 * offset, held through a descriptor opened O_CLOEXEC: the kernel drops it when the process exits (even as an
 * unreaped zombie), is killed, or calls exec (same pid, new image), so none of those keeps a slot or its
 * charge; a pid reused by another process cannot fake it either. A forked child drops the inherited
 * descriptor and claims its own slot. Where OFD locks are unsupported, pid + start time + /proc state decide.
 *
 * The lock word: a waiter spins briefly, then sleeps with backoff (never spinning a core); it takes the lock
 * over when the owner is dead, stopped (SIGSTOP, traced) for VC_LOCK_STOPPED_NS, or holds it past
 * VC_LOCK_MAX_NS, and recomputes the totals from the slots. A robbed owner's late update is repaired when its
 * unlock (a compare-and-swap) finds the word changed: it takes the lock again and recomputes the totals.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

_Static_assert(sizeof(((vcuda_usage_t *)0)->lock) >= sizeof(uint64_t), "lock field too small");

#define VC_LOCK_STOPPED_NS 50000000ULL /* a stopped owner is robbed after 50 ms */
#define VC_LOCK_MAX_NS 2000000000ULL    /* any owner after 2 s (the critical sections are ~100 ns) */

static vcuda_usage_t *vc_usage;
static int vc_slot = -1;
static pid_t vc_owner_pid;
static int vc_fd = -1;       /* holds the OFD lock of our slot; O_CLOEXEC */
static int vc_ofd = 1;       /* OFD locks work on this file (else pid-based liveness) */
static char vc_path[512];

static uint64_t *vc_lock_word(void) { return (uint64_t *)(void *)vc_usage->lock; }

static off_t vc_slot_offset(int i) {
    return (off_t)offsetof(vcuda_usage_t, slots) + (off_t)i * (off_t)sizeof(vcuda_proc_slot_t);
}

/* 1 if some open file description holds slot i's liveness lock, 0 if none, -1 if OFD locks do not work. */
static int vc_slot_held(int i) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = vc_slot_offset(i), .l_len = 1};
    if (!vc_ofd || vc_fd < 0 || fcntl(vc_fd, F_OFD_GETLK, &fl) != 0) return -1;
    return fl.l_type != F_UNLCK;
}

static int vc_slot_alive(int i) {
    const vcuda_proc_slot_t *s = &vc_usage->slots[i];
    int held = vc_slot_held(i);
    if (held >= 0) return held;
    if (!vc_pid_alive(s->pid)) return 0;
    uint64_t st = vc_start_time(s->pid);
    return st == 0 || s->start_time == 0 || st == s->start_time;
}

/* Takes slot i's liveness lock for this process; 0 on success (or when OFD locks are unsupported). */
static int vc_hold_slot(int i) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = vc_slot_offset(i), .l_len = 1};
    if (!vc_ofd) return 0;
    if (fcntl(vc_fd, F_OFD_SETLK, &fl) == 0) return 0;
    if (errno == EINVAL) { /* no OFD locks here: fall back to pid-based liveness */
        vc_ofd = 0;
        return 0;
    }
    return -1;
}

static void vc_recompute_totals(void) { /* under the lock */
    for (int g = 0; g < VCUDA_MAX_GPUS; g++) {
        uint64_t sum = 0;
        for (int i = 0; i < VCUDA_MAX_PROCS; i++)
            if (vc_usage->slots[i].state == 1) sum += vc_usage->slots[i].gpus[g].memory_used;
        __atomic_store_n(&vc_usage->memory_used[g], sum, __ATOMIC_RELAXED);
    }
}

static int vc_reap_locked(void) {
    int reaped = 0;
    for (int i = 0; i < VCUDA_MAX_PROCS; i++) {
        vcuda_proc_slot_t *s = &vc_usage->slots[i];
        if (s->state != 1 || i == vc_slot) continue;
        if (vc_slot_alive(i)) continue;
        vc_log_debug("reclaiming usage slot %d of pid %d (exited, killed, zombie or exec'd)", i, s->pid);
        memset(s, 0, sizeof *s);
        reaped++;
    }
    vc_recompute_totals();
    return reaped;
}

/* The lock word holds the owner's slot index + 1 and pid. Uncontended, lock + unlock is two compare-and-swaps. */
static uint64_t vc_lock_value(void) { return ((uint64_t)(uint32_t)vc_owner_pid << 8) | (uint64_t)(vc_slot + 1); }

static uint64_t vc_clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int vc_owner_dead(uint64_t word) {
    int slot = (int)(word & 0xFF) - 1;
    pid_t pid = (pid_t)(word >> 8);
    if (slot < 0 || slot >= VCUDA_MAX_PROCS) return !vc_pid_alive(pid);
    const vcuda_proc_slot_t *s = &vc_usage->slots[slot];
    return s->pid != pid || !vc_slot_alive(slot) || !vc_pid_alive(pid);
}

/* Whether a waiter that has waited `waited` ns for the owner in `word` may take the lock over. */
static int vc_may_rob(uint64_t word, uint64_t waited) {
    if ((pid_t)(word >> 8) == vc_owner_pid) return 0; /* another thread of ours: it will let go */
    if (vc_owner_dead(word)) return 1;
    char st = vc_proc_state((pid_t)(word >> 8));
    return waited >= VC_LOCK_MAX_NS || (waited >= VC_LOCK_STOPPED_NS && (st == 'T' || st == 't'));
}

static void vc_lock(void) {
    uint64_t *w = vc_lock_word(), mine = vc_lock_value(), start = 0, nap = 1000, seen = 0;
    for (unsigned spins = 0;; spins++) {
        uint64_t cur = 0;
        if (__atomic_compare_exchange_n(w, &cur, mine, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
        if (spins < 200) {
            VC_PAUSE();
            continue;
        }
        uint64_t now = vc_clock_ns();
        if (cur != seen) { /* a new owner: its time starts now */
            seen = cur;
            start = now;
        }
        if (vc_may_rob(cur, now - start) &&
            __atomic_compare_exchange_n(w, &cur, mine, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            vc_log_debug("usage lock owner (word %llx) dead or stuck; taking over", (unsigned long long)cur);
            vc_reap_locked();
            return;
        }
        struct timespec ts = {0, (long)nap};
        nanosleep(&ts, NULL);
        if (nap < 1000000) nap *= 2;
    }
}

static void vc_unlock(void) {
    uint64_t mine = vc_lock_value();
    if (__atomic_compare_exchange_n(vc_lock_word(), &mine, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) return;
    /* Robbed while stopped: our updates may have landed after the thief's repair; repair again. */
    vc_lock();
    vc_recompute_totals();
    __atomic_store_n(vc_lock_word(), 0, __ATOMIC_RELEASE);
}

static int vc_init_file(int fd, uint32_t gpu_count) {
    if (ftruncate(fd, sizeof(vcuda_usage_t)) != 0) return -1;
    vcuda_usage_t *u = mmap(NULL, sizeof *u, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (u == MAP_FAILED) return -1;
    memcpy(u->magic, VCUDA_USAGE_MAGIC, sizeof u->magic);
    u->version = VCUDA_USAGE_VERSION;
    u->size = sizeof *u;
    u->gpu_count = gpu_count;
    u->slot_count = VCUDA_MAX_PROCS;
    munmap(u, sizeof *u);
    return 0;
}

/* Creates a fully initialised file under a temporary name and links it into place, so no process ever sees
 * a half-written header; losing the race to another process is fine. */
static int vc_create_file(const char *path, uint32_t gpu_count) {
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    fchmod(fd, 0666);
    int ok = vc_init_file(fd, gpu_count) == 0 && (link(tmp, path) == 0 || errno == EEXIST);
    close(fd);
    unlink(tmp);
    return ok ? 0 : -1;
}

static int vc_map_file(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    if (vc_usage) { /* a forked child re-opening: same mapping, its own open file description */
        vc_fd = fd;
        return 0;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size != sizeof(vcuda_usage_t)) {
        vc_log_error("usage file %s has size %lld, expected %zu", path, (long long)st.st_size,
                     sizeof(vcuda_usage_t));
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, sizeof(vcuda_usage_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return -1;
    }
    const vcuda_usage_t *u = p;
    if (memcmp(u->magic, VCUDA_USAGE_MAGIC, 8) != 0 || u->version != VCUDA_USAGE_VERSION) {
        vc_log_error("usage file %s: bad magic or unknown version", path);
        munmap(p, sizeof(vcuda_usage_t));
        close(fd);
        return -1;
    }
    vc_fd = fd;
    vc_usage = p;
    return 0;
}

static int vc_claim_slot(void) {
    pid_t me = getpid();
    if (vc_fd < 0 && vc_map_file(vc_path) != 0) return -1; /* a forked child: its own descriptor */
    vc_owner_pid = me;
    vc_slot = -1;
    vc_lock();
    vc_reap_locked();
    int found = -1;
    for (int i = 0; i < VCUDA_MAX_PROCS && found < 0; i++)
        if (vc_usage->slots[i].state == 0 && vc_hold_slot(i) == 0) found = i;
    if (found >= 0) {
        vcuda_proc_slot_t *s = &vc_usage->slots[found];
        memset(s, 0, sizeof *s);
        s->pid = me;
        s->start_time = vc_start_time(me);
        s->state = 1;
    }
    vc_unlock();
    vc_slot = found;
    if (found < 0)
        vc_log_error("usage file full: %d live CUDA processes in the container already (the most it may run)",
                     VCUDA_MAX_PROCS);
    return found < 0 ? -1 : 0;
}

static void vc_release_slot(void) {
    if (!vc_usage || vc_slot < 0 || getpid() != vc_owner_pid) return;
    vc_lock();
    memset(&vc_usage->slots[vc_slot], 0, sizeof vc_usage->slots[vc_slot]);
    vc_recompute_totals();
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = vc_slot_offset(vc_slot), .l_len = 1};
    if (vc_ofd) fcntl(vc_fd, F_OFD_SETLK, &fl);
    vc_unlock();
    vc_slot = -1;
}

/* The child shares the parent's open file description (and so its slot lock): drop it, claim its own later. */
static void vc_after_fork_child(void) {
    if (vc_fd >= 0) close(vc_fd);
    vc_fd = -1;
    vc_slot = -1;
}

__attribute__((destructor)) static void vc_usage_at_exit(void) { vc_release_slot(); }

int vc_usage_open(const char *path, uint32_t gpu_count) {
    snprintf(vc_path, sizeof vc_path, "%s", path);
    if (vc_map_file(path) != 0) {
        if (vc_create_file(path, gpu_count) != 0 || vc_map_file(path) != 0) return -1;
    }
    pthread_atfork(NULL, NULL, vc_after_fork_child);
    return vc_claim_slot();
}

static vcuda_proc_slot_t *vc_my_slot(void) {
    if (VC_UNLIKELY(vc_slot < 0) && vc_claim_slot() != 0) return NULL;
    return &vc_usage->slots[vc_slot];
}

int vc_usage_reserve(int rec, uint64_t bytes, uint64_t limit) {
    vcuda_proc_slot_t *s = vc_my_slot();
    if (!s) return -1;
    vc_lock();
    uint64_t used = __atomic_load_n(&vc_usage->memory_used[rec], __ATOMIC_RELAXED);
    int ok = bytes <= limit && used <= limit - bytes;
    if (ok) { /* slot first, then total (plain stores: a robbed owner repairs at its unlock) */
        __atomic_store_n(&s->gpus[rec].memory_used, s->gpus[rec].memory_used + bytes, __ATOMIC_RELAXED);
        __atomic_store_n(&vc_usage->memory_used[rec], used + bytes, __ATOMIC_RELAXED);
    }
    vc_unlock();
    return ok ? 0 : -1;
}

void vc_usage_release(int rec, uint64_t bytes) {
    vcuda_proc_slot_t *s = vc_my_slot();
    if (!s) return;
    vc_lock();
    uint64_t mine = s->gpus[rec].memory_used;
    if (bytes > mine) bytes = mine;
    /* total first, then slot (the mirror of reserve); a total that would wrap is repaired from the slots */
    uint64_t total = __atomic_load_n(&vc_usage->memory_used[rec], __ATOMIC_RELAXED);
    __atomic_store_n(&vc_usage->memory_used[rec], total >= bytes ? total - bytes : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->gpus[rec].memory_used, mine - bytes, __ATOMIC_RELAXED);
    if (total < bytes) vc_recompute_totals();
    vc_unlock();
}

uint64_t vc_usage_used(int rec) { return __atomic_load_n(&vc_usage->memory_used[rec], __ATOMIC_RELAXED); }

void vc_usage_count_refused(int rec) {
    vcuda_proc_slot_t *s = vc_my_slot();
    if (s) __atomic_add_fetch(&s->gpus[rec].refused_allocs, 1, __ATOMIC_RELAXED);
}

void vc_usage_add_launches(int rec, uint64_t launches, uint64_t throttled_ns, uint64_t busy_ns) {
    vcuda_proc_slot_t *s = vc_my_slot();
    if (!s) return;
    __atomic_add_fetch(&s->gpus[rec].launches, launches, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->gpus[rec].throttled_ns, throttled_ns, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->gpus[rec].busy_ns, busy_ns, __ATOMIC_RELAXED);
}

int vc_usage_reap(void) {
    if (!vc_usage) return 0;
    vc_lock();
    int n = vc_reap_locked();
    vc_unlock();
    return n;
}

void vc_usage_close(void) { vc_release_slot(); }

/* A view of the usage file for readers that never initialised CUDA (nvidia-smi through the NVML hooks). */
const vcuda_usage_t *vc_usage_view(const char *path) {
    static const vcuda_usage_t *view;
    if (vc_usage) return vc_usage;
    if (view) return view;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size == sizeof(vcuda_usage_t))
        p = mmap(NULL, sizeof(vcuda_usage_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return NULL;
    view = p;
    return view;
}

int vc_usage_live_slots(void) {
    if (!vc_usage) return 0;
    int n = 0;
    for (int i = 0; i < VCUDA_MAX_PROCS; i++) n += vc_usage->slots[i].state == 1;
    return n;
}
