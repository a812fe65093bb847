/* XID event sets of the FAKE NVML. Events come from "xid" lines of the control file (control.c). */
#include <poll.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

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

/* An inotify watch of the control file's folder (the file may be replaced), or -1 (then: re-read every 5 ms).
 * Called under the lock. */
static int watch_control(void) {
    char dir[4200];
    if (!fake_control_dir(dir, sizeof dir)) return -1;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd >= 0 && inotify_add_watch(fd, dir, IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Sleeps until the watched folder changes or timeout_ms passes; drains the notifications. */
static void sleep_for_change(int fd, long timeout_ms) {
    if (fd < 0) {
        struct timespec pause = {0, (timeout_ms < 5 ? timeout_ms : 5) * 1000 * 1000};
        nanosleep(&pause, NULL);
        return;
    }
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, (int)timeout_ms) > 0) {
        char buf[4096];
        while (read(fd, buf, sizeof buf) > 0) {
        }
    }
}

static long elapsed_ms(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

/* As the driver's: blocks (no CPU) until an event arrives or timeoutms passes (then NVML_ERROR_TIMEOUT), and
 * an event arriving during the wait returns it at once. The fake sleeps in poll(2) on an inotify watch of the
 * control file's folder, so an appended "xid" line wakes the waiter; the lock is not held while it sleeps.
 * The watch is set before the last look at the file, so a line appended in between is not missed. */
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int fd = -1, watched = 0;
    nvmlReturn_t rc;
    for (;;) {
        rc = fake_enter();
        if (rc == NVML_SUCCESS && !watched) {
            fd = watch_control();
            watched = 1;
            fake_control_poll(1);
        }
        if (rc == NVML_SUCCESS) rc = pop_event(set, data);
        fake_leave();
        long left = (long)timeoutms - elapsed_ms(&start);
        if (rc != NVML_ERROR_TIMEOUT || left <= 0) break;
        sleep_for_change(fd, left);
    }
    if (fd >= 0) close(fd);
    return rc;
}
