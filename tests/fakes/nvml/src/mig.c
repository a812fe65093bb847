/* MIG in the FAKE NVML: mode, GPU instance profiles, GPU instances and MIG device handles. */
#include <string.h>

#include "fake.h"

#define MAX_COMPUTE_SLICES 7
#define MEMORY_SLICES 8

static const mig_profile *profile_by_index(const fake_gpu *gpu, unsigned index) {
    for (int i = 0; gpu->mig && i < gpu->mig->count; i++)
        if (gpu->mig->profiles[i].index == index) return &gpu->mig->profiles[i];
    return NULL;
}

static const mig_profile *profile_by_id(const fake_gpu *gpu, unsigned id) {
    for (int i = 0; gpu->mig && i < gpu->mig->count; i++)
        if (gpu->mig->profiles[i].id == id) return &gpu->mig->profiles[i];
    return NULL;
}

static unsigned occupied(const fake_gpu *gpu, unsigned *compute_slices, unsigned profile_id, unsigned *same) {
    unsigned mask = 0;
    *compute_slices = 0;
    *same = 0;
    for (int g = 0; g < FAKE_MAX_GI; g++) {
        const fake_gi *gi = &gpu->gis[g];
        if (!gi->used) continue;
        mask |= ((1u << gi->profile->placement_size) - 1) << gi->start;
        *compute_slices += gi->profile->slices;
        *same += gi->profile->id == profile_id;
    }
    return mask;
}

static int placement_free(const fake_gpu *gpu, const mig_profile *p, unsigned start) {
    unsigned slices, same;
    unsigned mask = occupied(gpu, &slices, p->id, &same);
    unsigned want = ((1u << p->placement_size) - 1) << start;
    return (p->placement_starts >> start & 1u) && start + p->placement_size <= MEMORY_SLICES && !(mask & want) &&
           slices + p->slices <= MAX_COMPUTE_SLICES && same < p->instances;
}

nvmlReturn_t fake_mig_create(fake_gpu *gpu, const mig_profile *profile, int has_start, unsigned start,
                             fake_gi **out) {
    if (!gpu->mig_current) return NVML_ERROR_NOT_SUPPORTED;
    int found = -1;
    for (unsigned s = has_start ? start : 0; s < MEMORY_SLICES && found < 0; s++) {
        if (placement_free(gpu, profile, s)) found = (int)s;
        if (has_start) break;
    }
    if (found < 0) return NVML_ERROR_INSUFFICIENT_RESOURCES;
    for (int g = 0; g < FAKE_MAX_GI; g++) {
        fake_gi *gi = &gpu->gis[g];
        if (gi->used) continue;
        for (int c = 0; c < FAKE_MAX_CI; c++) gi->cis[c].used = 0; /* handles stay as fake_fix_handles set them */
        gi->used = 1;
        gi->id = (unsigned)g + 1; /* ids follow slots: the lowest free id from 1 */
        gi->start = (unsigned)found;
        gi->profile = profile;
        *out = gi;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_INSUFFICIENT_RESOURCES;
}

void fake_mig_clear(fake_gpu *gpu) {
    for (int g = 0; g < FAKE_MAX_GI; g++) gpu->gis[g].used = 0;
}

/* ---- mode ---- */

static nvmlReturn_t get_mig_mode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (!gpu->mig) return NVML_ERROR_NOT_SUPPORTED;
    *current = (unsigned)gpu->mig_current;
    *pending = (unsigned)gpu->mig_pending;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    FAKE_API(get_mig_mode(d, current, pending));
}

/* Takes effect at once on an idle GPU; with processes running it stays pending until a "reset" control op. */
static nvmlReturn_t set_mig_mode(nvmlDevice_t d, unsigned int mode, nvmlReturn_t *activation) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (!gpu->mig || d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    if (mode > 1) return NVML_ERROR_INVALID_ARGUMENT;
    gpu->mig_pending = (int)mode;
    *activation = NVML_SUCCESS;
    if (gpu->nprocs > 0 && (int)mode != gpu->mig_current) {
        *activation = NVML_ERROR_IN_USE;
    } else {
        if (!mode) fake_mig_clear(gpu);
        gpu->mig_current = (int)mode;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceSetMigMode(nvmlDevice_t d, unsigned int mode, nvmlReturn_t *activationStatus) {
    FAKE_API(set_mig_mode(d, mode, activationStatus));
}

/* ---- GPU instance profiles ---- */

static nvmlReturn_t physical_mig_gpu(nvmlDevice_t d, fake_gpu **gpu) {
    nvmlReturn_t rc = fake_gpu_of(d, gpu);
    if (rc != NVML_SUCCESS) return rc;
    return (*gpu)->mig && d->gi < 0 ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

static void fill_profile_v2(const mig_profile *p, nvmlGpuInstanceProfileInfo_v2_t *info) {
    info->id = p->id;
    info->isP2pSupported = 0;
    info->sliceCount = p->slices;
    info->instanceCount = p->instances;
    info->multiprocessorCount = p->sms;
    info->copyEngineCount = p->copy_engines;
    info->decoderCount = p->decoders;
    info->encoderCount = p->encoders;
    info->jpegCount = p->jpegs;
    info->ofaCount = p->ofas;
    info->memorySizeMB = p->memory_mib;
    fake_copy(info->name, p->name, sizeof info->name);
}

static nvmlReturn_t profile_info_v2(nvmlDevice_t d, const mig_profile *(*find)(const fake_gpu *, unsigned),
                                    unsigned key, nvmlGpuInstanceProfileInfo_v2_t *info) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (!info) return NVML_ERROR_INVALID_ARGUMENT;
    if (info->version >> 24 != 2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    const mig_profile *p = find(gpu, key);
    if (!p) return NVML_ERROR_NOT_SUPPORTED;
    fill_profile_v2(p, info);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t d, unsigned int profile,
                                                  nvmlGpuInstanceProfileInfo_v2_t *info) {
    FAKE_API(profile_info_v2(d, profile_by_index, profile, info));
}

nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoByIdV(nvmlDevice_t d, unsigned int profileId,
                                                      nvmlGpuInstanceProfileInfo_v2_t *info) {
    FAKE_API(profile_info_v2(d, profile_by_id, profileId, info));
}

static nvmlReturn_t profile_info_v1(nvmlDevice_t d, unsigned int profile, nvmlGpuInstanceProfileInfo_t *info) {
    nvmlGpuInstanceProfileInfo_v2_t v2 = {.version = nvmlGpuInstanceProfileInfo_v2};
    nvmlReturn_t rc = profile_info_v2(d, profile_by_index, profile, &v2);
    if (rc != NVML_SUCCESS) return rc;
    memcpy(info, &v2.id, sizeof *info); /* v1 is v2 without version and name */
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t d, unsigned int profile,
                                                 nvmlGpuInstanceProfileInfo_t *info) {
    FAKE_API(profile_info_v1(d, profile, info));
}

static nvmlReturn_t remaining(nvmlDevice_t d, unsigned int profileId, unsigned int *count) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    const mig_profile *p = profile_by_id(gpu, profileId);
    if (!p) return NVML_ERROR_INVALID_ARGUMENT;
    /* Count how many more fit by placing them greedily on a scratch copy. */
    fake_gpu scratch = *gpu;
    fake_gi *gi;
    *count = 0;
    scratch.mig_current = 1;
    while (fake_mig_create(&scratch, p, 0, 0, &gi) == NVML_SUCCESS) (*count)++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceRemainingCapacity(nvmlDevice_t d, unsigned int profileId, unsigned int *count) {
    FAKE_API(remaining(d, profileId, count));
}

static nvmlReturn_t placements(nvmlDevice_t d, unsigned int profileId, nvmlGpuInstancePlacement_t *out,
                               unsigned int *count) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    const mig_profile *p = profile_by_id(gpu, profileId);
    if (!p || !count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = 0;
    for (unsigned s = 0; s < MEMORY_SLICES; s++) {
        if (!(p->placement_starts >> s & 1u)) continue;
        if (out && n < *count) out[n] = (nvmlGpuInstancePlacement_t){s, p->placement_size};
        n++;
    }
    rc = out && n > *count ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    *count = n;
    return rc;
}

nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements_v2(nvmlDevice_t d, unsigned int profileId,
                                                           nvmlGpuInstancePlacement_t *p, unsigned int *count) {
    FAKE_API(placements(d, profileId, p, count));
}

/* ---- GPU instances ---- */

static nvmlReturn_t create_gi(nvmlDevice_t d, unsigned int profileId, const nvmlGpuInstancePlacement_t *placement,
                              nvmlGpuInstance_t *out) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    const mig_profile *p = profile_by_id(gpu, profileId);
    if (!p || !out) return NVML_ERROR_INVALID_ARGUMENT;
    fake_gi *gi;
    rc = fake_mig_create(gpu, p, placement != NULL, placement ? placement->start : 0, &gi);
    if (rc == NVML_SUCCESS) *out = &gi->handle;
    return rc;
}

nvmlReturn_t nvmlDeviceCreateGpuInstance(nvmlDevice_t d, unsigned int profileId, nvmlGpuInstance_t *gi) {
    FAKE_API(create_gi(d, profileId, NULL, gi));
}

nvmlReturn_t nvmlDeviceCreateGpuInstanceWithPlacement(nvmlDevice_t d, unsigned int profileId,
                                                      const nvmlGpuInstancePlacement_t *placement,
                                                      nvmlGpuInstance_t *gi) {
    FAKE_API(placement ? create_gi(d, profileId, placement, gi) : NVML_ERROR_INVALID_ARGUMENT);
}

nvmlReturn_t fake_gi_of(nvmlGpuInstance_t handle, fake_gpu **gpu, fake_gi **gi) {
    if (!handle || handle->gpu < 0 || handle->gpu >= g_node.count || handle->gi < 0 || handle->gi >= FAKE_MAX_GI)
        return NVML_ERROR_INVALID_ARGUMENT;
    *gpu = &g_node.gpus[handle->gpu];
    *gi = &(*gpu)->gis[handle->gi];
    if ((*gpu)->lost) return NVML_ERROR_GPU_IS_LOST;
    return (*gi)->used ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

static nvmlReturn_t destroy_gi(nvmlGpuInstance_t handle) {
    fake_gpu *gpu;
    fake_gi *gi;
    nvmlReturn_t rc = fake_gi_of(handle, &gpu, &gi);
    if (rc != NVML_SUCCESS) return rc;
    for (int c = 0; c < FAKE_MAX_CI; c++)
        if (gi->cis[c].used) return NVML_ERROR_IN_USE;
    gi->used = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpuInstanceDestroy(nvmlGpuInstance_t gi) { FAKE_API(destroy_gi(gi)); }

static nvmlReturn_t list_gis(nvmlDevice_t d, unsigned int profileId, nvmlGpuInstance_t *out, unsigned int *count) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (!profile_by_id(gpu, profileId) || !count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = 0;
    for (int g = 0; g < FAKE_MAX_GI; g++) {
        fake_gi *gi = &gpu->gis[g];
        if (!gi->used || gi->profile->id != profileId) continue;
        if (out) out[n] = &gi->handle;
        n++;
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstances(nvmlDevice_t d, unsigned int profileId, nvmlGpuInstance_t *gis,
                                       unsigned int *count) {
    FAKE_API(list_gis(d, profileId, gis, count));
}

static nvmlReturn_t gi_by_id(nvmlDevice_t d, unsigned int id, nvmlGpuInstance_t *out) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    for (int g = 0; g < FAKE_MAX_GI; g++)
        if (gpu->gis[g].used && gpu->gis[g].id == id) {
            *out = &gpu->gis[g].handle;
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t d, unsigned int id, nvmlGpuInstance_t *gi) {
    FAKE_API(gi_by_id(d, id, gi));
}

static nvmlReturn_t gi_info(nvmlGpuInstance_t handle, nvmlGpuInstanceInfo_t *info) {
    fake_gpu *gpu;
    fake_gi *gi;
    nvmlReturn_t rc = fake_gi_of(handle, &gpu, &gi);
    if (rc != NVML_SUCCESS) return rc;
    info->device = &gpu->handle;
    info->id = gi->id;
    info->profileId = gi->profile->id;
    info->placement = (nvmlGpuInstancePlacement_t){gi->start, gi->profile->placement_size};
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gi, nvmlGpuInstanceInfo_t *info) { FAKE_API(gi_info(gi, info)); }

/* ---- MIG device handles ---- */

static nvmlReturn_t max_mig(nvmlDevice_t d, unsigned int *count) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    *count = gpu->mig_current ? MAX_COMPUTE_SLICES : 0; /* a real H100 with MIG off answers 0 */
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) { FAKE_API(max_mig(d, count)); }

static nvmlReturn_t mig_by_index(nvmlDevice_t d, unsigned int index, nvmlDevice_t *out) {
    fake_gpu *gpu;
    nvmlReturn_t rc = physical_mig_gpu(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (index >= MAX_COMPUTE_SLICES) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = 0;
    for (int g = 0; g < FAKE_MAX_GI; g++)
        for (int c = 0; gpu->gis[g].used && c < FAKE_MAX_CI; c++)
            if (gpu->gis[g].cis[c].used && n++ == index) {
                *out = &gpu->gis[g].cis[c].device;
                return NVML_SUCCESS;
            }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *mig) {
    FAKE_API(mig_by_index(d, index, mig));
}

static nvmlReturn_t is_mig(nvmlDevice_t d, unsigned int *out) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc == NVML_SUCCESS) *out = d->gi >= 0;
    return rc;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *isMig) { FAKE_API(is_mig(d, isMig)); }

static nvmlReturn_t parent_of(nvmlDevice_t d, nvmlDevice_t *out) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (d->gi < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *out = &gpu->handle;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t mig, nvmlDevice_t *d) {
    FAKE_API(parent_of(mig, d));
}

static nvmlReturn_t instance_id(nvmlDevice_t d, unsigned int *id, int compute) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (d->gi < 0) return NVML_ERROR_NOT_SUPPORTED;
    *id = compute ? gpu->gis[d->gi].cis[d->ci].id : gpu->gis[d->gi].id;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) { FAKE_API(instance_id(d, id, 0)); }
nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id) { FAKE_API(instance_id(d, id, 1)); }
