/* Live allocations of this process: open addressing, linear probing, backward-shift deletion (no
 * tombstones), so insert and remove stay O(1) however many allocations are live (HAMi-core scans a list on
 * every free). Keys are tagged driver handles (never 0). Guarded by a tiny spinlock that yields when held
 * long (a preempted holder): allocation is not the launch path, and the critical sections are a few dozen
 * instructions. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

#define VC_ANY_CTX UINT64_MAX

typedef struct vc_entry {
    uint64_t key; /* 0 = empty */
    vc_alloc_t v;
} vc_entry_t;

static vc_entry_t *vc_slots;
static size_t vc_cap; /* power of two */
static size_t vc_count;
static int vc_spin;

static void vc_table_lock(void) {
    unsigned spins = 0;
    while (__atomic_exchange_n(&vc_spin, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&vc_spin, __ATOMIC_RELAXED)) {
            if (++spins < 64) VC_PAUSE();
            else sched_yield();
        }
}

static void vc_table_unlock(void) { __atomic_store_n(&vc_spin, 0, __ATOMIC_RELEASE); }

static inline size_t vc_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key;
}

static size_t vc_find(uint64_t key) {
    size_t i = vc_hash(key) & (vc_cap - 1);
    while (vc_slots[i].key != 0 && vc_slots[i].key != key) i = (i + 1) & (vc_cap - 1);
    return i;
}

static int vc_grow(void) {
    size_t old_cap = vc_cap, cap = vc_cap ? vc_cap * 2 : 1024;
    vc_entry_t *old = vc_slots, *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    vc_slots = slots;
    vc_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key) vc_slots[vc_find(old[i].key)] = old[i];
    free(old);
    return 0;
}

int vc_table_put(uint64_t key, const vc_alloc_t *v, vc_alloc_t *replaced) {
    int rc = 0;
    vc_table_lock();
    if ((vc_count + 1) * 2 > vc_cap && vc_grow() != 0) {
        vc_table_unlock();
        return -1;
    }
    size_t i = vc_find(key);
    if (vc_slots[i].key == 0) __atomic_store_n(&vc_count, vc_count + 1, __ATOMIC_RELAXED); /* under the lock */
    else {
        if (replaced) *replaced = vc_slots[i].v;
        rc = 1;
    }
    vc_slots[i].key = key;
    vc_slots[i].v = *v;
    vc_table_unlock();
    return rc;
}

/* Backward-shift deletion: pull later members of the probe run into the hole. */
static void vc_remove_at(size_t hole) {
    size_t mask = vc_cap - 1;
    for (size_t j = (hole + 1) & mask; vc_slots[j].key != 0; j = (j + 1) & mask) {
        size_t home = vc_hash(vc_slots[j].key) & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            vc_slots[hole] = vc_slots[j];
            hole = j;
        }
    }
    vc_slots[hole].key = 0;
    __atomic_store_n(&vc_count, vc_count - 1, __ATOMIC_RELAXED);
}

/* Removes `key` if present and, when `ctx` is not VC_ANY_CTX, only if it belongs to that context. */
static int vc_take_if(uint64_t key, uint64_t ctx, vc_alloc_t *out) {
    int found = 0;
    vc_table_lock();
    if (vc_cap) {
        size_t i = vc_find(key);
        if (vc_slots[i].key == key && (ctx == VC_ANY_CTX || vc_slots[i].v.ctx == ctx)) {
            if (out) *out = vc_slots[i].v;
            vc_remove_at(i);
            found = 1;
        }
    }
    vc_table_unlock();
    return found;
}

int vc_table_take(uint64_t key, vc_alloc_t *out) { return vc_take_if(key, VC_ANY_CTX, out); }

int vc_table_get(uint64_t key, vc_alloc_t *out) {
    int found = 0;
    vc_table_lock();
    if (vc_cap) {
        size_t i = vc_find(key);
        if (vc_slots[i].key == key) {
            *out = vc_slots[i].v;
            found = 1;
        }
    }
    vc_table_unlock();
    return found;
}

/* Removes every entry of context `ctx` (a context destroyed or reset), handing each to `drop`. Rare: a scan
 * collects the keys first, then each is taken on its own so `drop` runs outside the table lock. */
size_t vc_table_drop_ctx(uint64_t ctx, void (*drop)(uint64_t key, const vc_alloc_t *v)) {
    size_t n = 0, cap = 0;
    uint64_t *keys = NULL;
    vc_table_lock();
    for (size_t i = 0; i < vc_cap; i++) {
        if (vc_slots[i].key == 0 || vc_slots[i].v.ctx != ctx) continue;
        if (n == cap) {
            uint64_t *k = realloc(keys, (cap = cap ? cap * 2 : 64) * sizeof *keys);
            if (!k) break;
            keys = k;
        }
        keys[n++] = vc_slots[i].key;
    }
    vc_table_unlock();
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        vc_alloc_t v;
        if (!vc_take_if(keys[i], ctx, &v)) continue; /* freed meanwhile, or reused in another context */
        drop(keys[i], &v);
        dropped++;
    }
    free(keys);
    return dropped;
}

/* Held across fork (init.c): a child never inherits the lock taken by a thread that does not exist there. */
void vc_table_fork_lock(void) { vc_table_lock(); }
void vc_table_fork_unlock(void) { vc_table_unlock(); }

size_t vc_table_count(void) { return __atomic_load_n(&vc_count, __ATOMIC_RELAXED); }
