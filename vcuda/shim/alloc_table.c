/* Live allocations of this process: open addressing, linear probing, backward-shift deletion (no
 * tombstones), so insert and remove stay O(1) however many allocations are live (HAMi-core scans a list on
 * every free). Keys are tagged driver handles (never 0). Guarded by a tiny spinlock: allocation is not the
 * launch path, and the critical sections are a few dozen instructions. */
#include <stdlib.h>
#include <string.h>

#include "shim.h"

typedef struct vc_entry {
    uint64_t key; /* 0 = empty */
    uint64_t size;
    int32_t rec;
} vc_entry_t;

static vc_entry_t *vc_slots;
static size_t vc_cap;   /* power of two */
static size_t vc_count;
static int vc_spin;

static void vc_table_lock(void) {
    while (__atomic_exchange_n(&vc_spin, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&vc_spin, __ATOMIC_RELAXED)) VC_PAUSE();
}

static void vc_table_unlock(void) { __atomic_store_n(&vc_spin, 0, __ATOMIC_RELEASE); }

static inline size_t vc_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key;
}

static void vc_insert_raw(vc_entry_t *slots, size_t cap, const vc_entry_t *e) {
    size_t i = vc_hash(e->key) & (cap - 1);
    while (slots[i].key != 0 && slots[i].key != e->key) i = (i + 1) & (cap - 1);
    slots[i] = *e;
}

static int vc_grow(void) {
    size_t cap = vc_cap ? vc_cap * 2 : 1024;
    vc_entry_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < vc_cap; i++)
        if (vc_slots[i].key) vc_insert_raw(slots, cap, &vc_slots[i]);
    free(vc_slots);
    vc_slots = slots;
    vc_cap = cap;
    return 0;
}

int vc_table_put(uint64_t key, uint64_t size, int rec) {
    vc_entry_t e = {key, size, rec};
    vc_table_lock();
    if ((vc_count + 1) * 2 > vc_cap && vc_grow() != 0) {
        vc_table_unlock();
        return -1;
    }
    size_t i = vc_hash(key) & (vc_cap - 1);
    while (vc_slots[i].key != 0 && vc_slots[i].key != key) i = (i + 1) & (vc_cap - 1);
    if (vc_slots[i].key == 0) vc_count++;
    vc_slots[i] = e;
    vc_table_unlock();
    return 0;
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
    vc_count--;
}

int vc_table_take(uint64_t key, uint64_t *size, int *rec) {
    int found = 0;
    vc_table_lock();
    if (vc_cap) {
        size_t i = vc_hash(key) & (vc_cap - 1);
        while (vc_slots[i].key != 0 && vc_slots[i].key != key) i = (i + 1) & (vc_cap - 1);
        if (vc_slots[i].key == key) {
            *size = vc_slots[i].size;
            *rec = vc_slots[i].rec;
            vc_remove_at(i);
            found = 1;
        }
    }
    vc_table_unlock();
    return found;
}

size_t vc_table_count(void) { return vc_count; }
