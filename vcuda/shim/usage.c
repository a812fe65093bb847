/* The container's shared usage file: per-GPU totals, one slot per process, a crash-safe lock word.
 *
 * Invariant (under the lock): memory_used[g] == sum of memory_used of live slots on g. A process that dies
 * while holding the lock is found dead by the next waiter, which takes the lock over; one that dies outside
 * it leaves a slot whose pid is gone (or reused: start time differs) and vc_usage_reap() gives its bytes back. Totals are then recomputed from
 * the live slots, so no crash can leak or double-count memory.
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
#include <unistd.h>

#include "shim.h"

_Static_assert(sizeof(((vcuda_usage_t *)0)->lock) >= sizeof(uint64_t), "lock field too small");

static vcuda_usage_t *vc_usage;
static int vc_slot = -1;
static pid_t vc_owner_pid;

static uint64_t *vc_lock_word(void) { return (uint64_t *)(void *)vc_usage->lock; }

/* Process start time in clock ticks (field 22 of /proc/<pid>/stat); 0 if unknown. */
static uint64_t vc_start_time(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    unsigned long long v = 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ') field++;
    if (sscanf(p, "%llu", &v) != 1) return 0;
    return v;
}

static int vc_slot_alive(const vcuda_proc_slot_t *s) {
    if (kill(s->pid, 0) != 0 && errno == ESRCH) return 0;
    uint64_t st = vc_start_time(s->pid);
    return st == 0 || s->start_time == 0 || st == s->start_time;
}

static void vc_recompute_totals(void) {
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
        if (s->pid > 0 && vc_slot_alive(s)) continue;
        vc_log_debug("reclaiming usage slot %d of dead pid %d", i, s->pid);
        memset(s, 0, sizeof *s);
        reaped++;
    }
    vc_recompute_totals();
    return reaped;
}

/* The lock word holds the owner's slot index + 1 and pid. A waiter that has spun for a while checks the owner:
 * if its slot shows a dead process (pid gone, or reused: start time differs), it takes the lock over and
 * repairs the totals. Uncontended, lock + unlock is one compare-and-swap and one store. */
static uint64_t vc_lock_value(void) { return ((uint64_t)(uint32_t)vc_owner_pid << 8) | (uint64_t)(vc_slot + 1); }

static int vc_owner_dead(uint64_t word) {
    int slot = (int)(word & 0xFF) - 1;
    pid_t pid = (pid_t)(word >> 8);
    if (slot < 0 || slot >= VCUDA_MAX_PROCS) return kill(pid, 0) != 0 && errno == ESRCH;
    const vcuda_proc_slot_t *s = &vc_usage->slots[slot];
    return s->pid != pid || !vc_slot_alive(s);
}

static void vc_lock(void) {
    uint64_t *w = vc_lock_word(), mine = vc_lock_value();
    for (unsigned spins = 0;; spins++) {
        uint64_t cur = 0;
        if (__atomic_compare_exchange_n(w, &cur, mine, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
        if (spins < 200) {
            VC_PAUSE();
            continue;
        }
        if ((spins & 255) == 0 && vc_owner_dead(cur) &&
            __atomic_compare_exchange_n(w, &cur, mine, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            vc_log_debug("usage lock owner (word %llx) died; repairing", (unsigned long long)cur);
            vc_reap_locked();
            return;
        }
        sched_yield();
    }
}

static void vc_unlock(void) { __atomic_store_n(vc_lock_word(), 0, __ATOMIC_RELEASE); }

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
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size != sizeof(vcuda_usage_t)) {
        vc_log_error("usage file %s has size %lld, expected %zu", path, (long long)st.st_size,
                     sizeof(vcuda_usage_t));
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, sizeof(vcuda_usage_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return -1;
    vc_usage = p;
    if (memcmp(vc_usage->magic, VCUDA_USAGE_MAGIC, 8) != 0 || vc_usage->version != VCUDA_USAGE_VERSION) {
        vc_log_error("usage file %s: bad magic or unknown version", path);
        munmap(p, sizeof(vcuda_usage_t));
        vc_usage = NULL;
        return -1;
    }
    return 0;
}

static int vc_claim_slot(void) {
    pid_t me = getpid();
    vc_owner_pid = me;
    vc_slot = -1;
    vc_lock();
    vc_reap_locked();
    int found = -1;
    for (int i = 0; i < VCUDA_MAX_PROCS && found < 0; i++)
        if (vc_usage->slots[i].state == 0) found = i;
    if (found >= 0) {
        vcuda_proc_slot_t *s = &vc_usage->slots[found];
        memset(s, 0, sizeof *s);
        s->pid = me;
        s->start_time = vc_start_time(me);
        s->state = 1;
    }
    vc_unlock();
    vc_slot = found;
    if (found < 0) vc_log_error("usage file full: more than %d CUDA processes in the container", VCUDA_MAX_PROCS);
    return found < 0 ? -1 : 0;
}

static void vc_release_slot(void) {
    if (!vc_usage || vc_slot < 0 || getpid() != vc_owner_pid) return;
    vc_lock();
    memset(&vc_usage->slots[vc_slot], 0, sizeof vc_usage->slots[vc_slot]);
    vc_recompute_totals();
    vc_unlock();
    vc_slot = -1;
}

static void vc_after_fork_child(void) { vc_slot = -1; /* the child claims its own slot on first use */ }

__attribute__((destructor)) static void vc_usage_at_exit(void) { vc_release_slot(); }

int vc_usage_open(const char *path, uint32_t gpu_count) {
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
    uint64_t used = vc_usage->memory_used[rec];
    int ok = bytes <= limit && used <= limit - bytes;
    if (ok) {
        __atomic_store_n(&vc_usage->memory_used[rec], used + bytes, __ATOMIC_RELAXED);
        s->gpus[rec].memory_used += bytes;
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
    s->gpus[rec].memory_used = mine - bytes;
    uint64_t used = vc_usage->memory_used[rec];
    __atomic_store_n(&vc_usage->memory_used[rec], used >= bytes ? used - bytes : 0, __ATOMIC_RELAXED);
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
