/*
 * Internal state of the FAKE libnvidia-ml.so.1 (a test double for pynvml; never a real driver).
 *
 * One process holds one fake node: the GPUs read from the node description (FAKE_NVML_CONFIG), changed at
 * run time by lines appended to the control file (see control.c), and by the MIG calls. Every exported
 * function takes the one lock through FAKE_API, applies pending control lines, then runs its body.
 */
#ifndef FAKE_NVML_FAKE_H
#define FAKE_NVML_FAKE_H

#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include <nvml.h>

#include "json.h"

#define FAKE_MAX_GPUS 16
#define FAKE_MAX_GI 8
#define FAKE_MAX_CI 8
#define FAKE_MAX_PROCS 64
#define FAKE_NO_ID 0xFFFFFFFFu

/* A handle is a pointer into the static node state, so it stays valid memory across config reloads. */
struct nvmlDevice_st { int gpu, gi, ci; };           /* gi = ci = -1 for a physical GPU */
struct nvmlGpuInstance_st { int gpu, gi; };
struct nvmlComputeInstance_st { int gpu, gi, ci; };

/* One GPU instance profile as `nvidia-smi mig -lgip` reports it; placements are in memory slices (of 8). */
typedef struct {
    unsigned index;           /* NVML_GPU_INSTANCE_PROFILE_* */
    unsigned id;              /* the profile id CreateGpuInstance takes (19 = 1g.5gb on A100) */
    const char *name;         /* "MIG 1g.5gb" */
    unsigned slices, instances, sms, copy_engines, decoders, encoders, jpegs, ofas;
    unsigned long long memory_mib;
    unsigned placement_size;
    unsigned placement_starts; /* bit i set: the instance may start at memory slice i */
} mig_profile;

typedef struct {
    const char *key;          /* "a100-40gb", "h100-80gb", "h200-141gb" */
    const mig_profile *profiles;
    int count;
} mig_table;

typedef struct {
    int used;
    unsigned id, slices, start;
    struct nvmlDevice_st device;           /* the MIG device this compute instance is */
    struct nvmlComputeInstance_st handle;
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
} fake_ci;

typedef struct {
    int used;
    unsigned id, start;
    const mig_profile *profile;
    struct nvmlGpuInstance_st handle;
    fake_ci cis[FAKE_MAX_CI];
} fake_gi;

typedef struct {
    unsigned pid;
    unsigned long long used_bytes;
    unsigned sm, mem;
    unsigned gi, ci;          /* FAKE_NO_ID outside MIG */
} fake_process;

typedef struct {
    struct nvmlDevice_st handle;
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    char pci_bus_id[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    unsigned minor, pci_device_id;
    int numa_node, cc_major, cc_minor;
    unsigned long long memory_bytes;
    long long memory_used_bytes;       /* < 0: the sum of the processes' memory */
    int lost;
    unsigned util_gpu, util_mem;
    const mig_table *mig;              /* NULL: not MIG capable */
    int mig_current, mig_pending;
    fake_gi gis[FAKE_MAX_GI];
    fake_process procs[FAKE_MAX_PROCS];
    int nprocs;
    int nvlinks;                       /* active NVLink links */
    int nvlink_switch;                 /* 1: every link goes to an NVSwitch */
    int nvlink_peer[NVML_NVLINK_MAX_LINKS]; /* direct links: the peer GPU of each link */
} fake_gpu;

typedef struct {
    int count;
    fake_gpu gpus[FAKE_MAX_GPUS];
    int topology[FAKE_MAX_GPUS][FAKE_MAX_GPUS];
    char driver_version[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
    int cuda_version;
    int cpus_per_numa;
} fake_node;

extern fake_node g_node;

/* state.c */
nvmlReturn_t fake_enter(void);
void fake_leave(void);
#define FAKE_API(call)                                  \
    do {                                                \
        nvmlReturn_t rc_ = fake_enter();                \
        if (rc_ == NVML_SUCCESS) rc_ = (call);          \
        fake_leave();                                   \
        return rc_;                                     \
    } while (0)
nvmlReturn_t fake_copy(char *dst, const char *src, unsigned int length);
void fake_fix_handles(fake_node *node);
nvmlReturn_t fake_gpu_of(nvmlDevice_t device, fake_gpu **gpu);
fake_gpu *fake_gpu_by_uuid(const char *uuid);

/* config.c */
int fake_load_config(const char *path, fake_node *node);
void fake_apply_processes(fake_gpu *gpu, const json *list);

/* control.c */
void fake_control_reset(const char *path);
void fake_control_poll(int deliver_events);
int fake_control_dir(char *out, size_t size); /* the control file's folder; 0 when there is none */

/* mig.c */
const mig_table *fake_mig_table(const char *key);
const mig_profile *fake_mig_profile_by_name(const mig_table *table, const char *name);
nvmlReturn_t fake_mig_create(fake_gpu *gpu, const mig_profile *profile, int has_start, unsigned start,
                             fake_gi **out);
nvmlReturn_t fake_mig_create_ci(fake_gpu *gpu, fake_gi *gi, unsigned slices, fake_ci **out);
void fake_mig_clear(fake_gpu *gpu);
nvmlReturn_t fake_gi_of(nvmlGpuInstance_t handle, fake_gpu **gpu, fake_gi **gi);

/* events.c */
void fake_events_reset(void);
void fake_events_push(int gpu, unsigned long long xid, unsigned gi, unsigned ci);

#endif
