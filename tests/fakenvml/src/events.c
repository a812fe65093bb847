/* XID event sets of the FAKE NVML. Events come from "xid" lines of the control file (control.c). */
#include <string.h>
#include <time.h>

#include "fake.h"

#define MAX_SETS 16
#define QUEUE 128
#define SUPPORTED_EVENTS (nvmlEventTypeXidCriticalError | nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError)

typedef struct {
    int gpu;
    unsigned long long xid;
    unsigned gi, ci;
} fake_event;

struct nvmlEventSet_st {
    int used;
    unsigned long long types[FAKE_MAX_GPUS];
    fake_event queue[QUEUE];
    int head, len;
};

static struct nvmlEventSet_st sets[MAX_SETS];

void fake_events_reset(void) { memset(sets, 0, sizeof sets); }

void fake_events_push(int gpu, unsigned long long xid, unsigned gi, unsigned ci) {
    for (int s = 0; s < MAX_SETS; s++) {
        struct nvmlEventSet_st *set = &sets[s];
        if (!set->used || !(set->types[gpu] & nvmlEventTypeXidCriticalError)) continue;
        if (set->len == QUEUE) { /* full: drop the oldest, as a bounded driver queue would */
            set->head = (set->head + 1) % QUEUE;
            set->len--;
        }
        set->queue[(set->head + set->len++) % QUEUE] = (fake_event){gpu, xid, gi, ci};
    }
}

static nvmlReturn_t create_set(nvmlEventSet_t *out) {
    for (int s = 0; s < MAX_SETS; s++)
        if (!sets[s].used) {
            memset(&sets[s], 0, sizeof sets[s]);
            sets[s].used = 1;
            *out = &sets[s];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_INSUFFICIENT_RESOURCES;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) { FAKE_API(set ? create_set(set) : NVML_ERROR_INVALID_ARGUMENT); }

static int valid_set(nvmlEventSet_t set) { return set >= sets && set < sets + MAX_SETS && set->used; }

static nvmlReturn_t free_set(nvmlEventSet_t set) {
    if (!valid_set(set)) return NVML_ERROR_INVALID_ARGUMENT;
    set->used = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) { FAKE_API(free_set(set)); }

static nvmlReturn_t supported(nvmlDevice_t d, unsigned long long *types) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc == NVML_SUCCESS) *types = SUPPORTED_EVENTS;
    return rc;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *eventTypes) {
    FAKE_API(supported(d, eventTypes));
}

static nvmlReturn_t register_events(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (!valid_set(set)) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & ~SUPPORTED_EVENTS) return NVML_ERROR_NOT_SUPPORTED;
    set->types[d->gpu] |= types;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long eventTypes, nvmlEventSet_t set) {
    FAKE_API(register_events(d, eventTypes, set));
}

static nvmlReturn_t pop_event(nvmlEventSet_t set, nvmlEventData_t *data) {
    if (!valid_set(set) || !data) return NVML_ERROR_INVALID_ARGUMENT;
    if (set->len == 0) return NVML_ERROR_TIMEOUT;
    fake_event ev = set->queue[set->head];
    set->head = (set->head + 1) % QUEUE;
    set->len--;
    data->device = &g_node.gpus[ev.gpu].handle;
    data->eventType = nvmlEventTypeXidCriticalError;
    data->eventData = ev.xid;
    data->gpuInstanceId = ev.gi;
    data->computeInstanceId = ev.ci;
    return NVML_SUCCESS;
}

/* Polls the control file every 5 ms until an event arrives or timeoutms passes (then NVML_ERROR_TIMEOUT). */
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    struct timespec start, now, pause = {0, 5 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        nvmlReturn_t rc = fake_enter();
        if (rc == NVML_SUCCESS) rc = pop_event(set, data);
        fake_leave();
        if (rc != NVML_ERROR_TIMEOUT) return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed_ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed_ms >= (long)timeoutms) return NVML_ERROR_TIMEOUT;
        nanosleep(&pause, NULL);
    }
}
