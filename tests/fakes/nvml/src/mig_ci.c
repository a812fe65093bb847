/* MIG compute instances in the FAKE NVML: profiles inside a GPU instance, create, destroy, list, info. */
#include <stdio.h>
#include <string.h>

#include "fake.h"

/* NVML_COMPUTE_INSTANCE_PROFILE_* by slice count; the profile id equals the constant. */
static int ci_profile_slices(unsigned profile) {
    static const int slices[] = {1, 2, 3, 4, 7, 8, 6};
    return profile < sizeof slices / sizeof slices[0] ? slices[profile] : -1;
}

static unsigned ci_profile_of(unsigned slices) {
    for (unsigned p = 0; p < 7; p++)
        if (ci_profile_slices(p) == (int)slices) return p;
    return FAKE_NO_ID;
}

/* Compute instance sizes a GPU instance of n slices offers (as nvidia-smi mig -lcip lists them). */
static int ci_valid(unsigned k, unsigned n) {
    return k == n || ((k == 1 || k == 2) && k < n) || ((k == 3 || k == 4) && n == 7);
}

static unsigned ci_sms(const fake_gpu *gpu, const fake_gi *gi, unsigned k) {
    if (k == gi->profile->slices) return gi->profile->sms;
    for (int i = 0; i < gpu->mig->count; i++)
        if (gpu->mig->profiles[i].slices == k) return gpu->mig->profiles[i].sms;
    return 0;
}

static unsigned long long fnv(const char *text, unsigned long long h) {
    for (; *text; text++) h = (h ^ (unsigned char)*text) * 1099511628211ull;
    return h;
}

static void mig_uuid(const fake_gpu *gpu, const fake_gi *gi, const fake_ci *ci, char *out, size_t size) {
    char seed[160];
    snprintf(seed, sizeof seed, "%s/%u/%u", gpu->uuid, gi->id, ci->id);
    unsigned long long a = fnv(seed, 1469598103934665603ull), b = fnv(seed, a);
    snprintf(out, size, "MIG-%08llx-%04llx-%04llx-%04llx-%012llx", a >> 32, (a >> 16) & 0xFFFF, a & 0xFFFF,
             b >> 48, b & 0xFFFFFFFFFFFFull);
}

nvmlReturn_t fake_mig_create_ci(fake_gpu *gpu, fake_gi *gi, unsigned slices, fake_ci **out) {
    unsigned n = gi->profile->slices, used = 0;
    if (!ci_valid(slices, n)) return NVML_ERROR_INVALID_ARGUMENT;
    for (int c = 0; c < FAKE_MAX_CI; c++)
        if (gi->cis[c].used) used |= ((1u << gi->cis[c].slices) - 1) << gi->cis[c].start;
    for (unsigned start = 0; start + slices <= n; start += slices) {
        if (used & (((1u << slices) - 1) << start)) continue;
        for (int c = 0; c < FAKE_MAX_CI; c++) {
            fake_ci *ci = &gi->cis[c];
            if (ci->used) continue;
            ci->used = 1;
            ci->id = (unsigned)c;
            ci->slices = slices;
            ci->start = start;
            mig_uuid(gpu, gi, ci, ci->uuid, sizeof ci->uuid);
            *out = ci;
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_INSUFFICIENT_RESOURCES;
}

static nvmlReturn_t ci_of(nvmlComputeInstance_t handle, fake_gpu **gpu, fake_gi **gi, fake_ci **ci) {
    if (!handle || handle->ci < 0 || handle->ci >= FAKE_MAX_CI) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlGpuInstance_st parent = {handle->gpu, handle->gi};
    nvmlReturn_t rc = fake_gi_of(&parent, gpu, gi);
    if (rc != NVML_SUCCESS) return rc;
    *ci = &(*gi)->cis[handle->ci];
    return (*ci)->used ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

static nvmlReturn_t ci_profile_info(nvmlGpuInstance_t handle, unsigned int profile, unsigned int engine,
                                    nvmlComputeInstanceProfileInfo_v2_t *info) {
    fake_gpu *gpu;
    fake_gi *gi;
    nvmlReturn_t rc = fake_gi_of(handle, &gpu, &gi);
    if (rc != NVML_SUCCESS) return rc;
    int k = ci_profile_slices(profile);
    if (engine != NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED || k < 0 || !ci_valid((unsigned)k, gi->profile->slices))
        return NVML_ERROR_NOT_SUPPORTED;
    info->id = profile;
    info->sliceCount = (unsigned)k;
    info->instanceCount = gi->profile->slices / (unsigned)k;
    info->multiprocessorCount = ci_sms(gpu, gi, (unsigned)k);
    info->sharedCopyEngineCount = gi->profile->copy_engines;
    info->sharedDecoderCount = gi->profile->decoders;
    info->sharedEncoderCount = gi->profile->encoders;
    info->sharedJpegCount = gi->profile->jpegs;
    info->sharedOfaCount = gi->profile->ofas;
    if ((unsigned)k == gi->profile->slices) snprintf(info->name, sizeof info->name, "%s", gi->profile->name);
    else snprintf(info->name, sizeof info->name, "MIG %dc.%s", k, gi->profile->name + 4);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(nvmlGpuInstance_t gi, unsigned int profile,
                                                           unsigned int engProfile,
                                                           nvmlComputeInstanceProfileInfo_v2_t *info) {
    FAKE_API(!info || info->version >> 24 != 2 ? NVML_ERROR_ARGUMENT_VERSION_MISMATCH
                                                : ci_profile_info(gi, profile, engProfile, info));
}

static nvmlReturn_t ci_profile_info_v1(nvmlGpuInstance_t gi, unsigned int profile, unsigned int engine,
                                       nvmlComputeInstanceProfileInfo_t *info) {
    nvmlComputeInstanceProfileInfo_v2_t v2 = {.version = nvmlComputeInstanceProfileInfo_v2};
    nvmlReturn_t rc = ci_profile_info(gi, profile, engine, &v2);
    if (rc == NVML_SUCCESS) memcpy(info, &v2.id, sizeof *info); /* v1 is v2 without version and name */
    return rc;
}

nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfo(nvmlGpuInstance_t gi, unsigned int profile,
                                                          unsigned int engProfile,
                                                          nvmlComputeInstanceProfileInfo_t *info) {
    FAKE_API(ci_profile_info_v1(gi, profile, engProfile, info));
}

static nvmlReturn_t ci_remaining(nvmlGpuInstance_t handle, unsigned int profileId, unsigned int *count) {
    fake_gpu *gpu;
    fake_gi *gi;
    nvmlReturn_t rc = fake_gi_of(handle, &gpu, &gi);
    if (rc != NVML_SUCCESS) return rc;
    int k = ci_profile_slices(profileId);
    if (k < 0 || !ci_valid((unsigned)k, gi->profile->slices)) return NVML_ERROR_INVALID_ARGUMENT;
    fake_gi scratch = *gi;
    fake_ci *ci;
    *count = 0;
    while (fake_mig_create_ci(gpu, &scratch, (unsigned)k, &ci) == NVML_SUCCESS) (*count)++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpuInstanceGetComputeInstanceRemainingCapacity(nvmlGpuInstance_t gi, unsigned int profileId,
                                                                unsigned int *count) {
    FAKE_API(ci_remaining(gi, profileId, count));
}

static nvmlReturn_t create_ci(nvmlGpuInstance_t handle, unsigned int profileId, nvmlComputeInstance_t *out) {
    fake_gpu *gpu;
    fake_gi *gi;
    fake_ci *ci;
    nvmlReturn_t rc = fake_gi_of(handle, &gpu, &gi);
    if (rc != NVML_SUCCESS) return rc;
    int k = ci_profile_slices(profileId);
    if (k < 0 || !out) return NVML_ERROR_INVALID_ARGUMENT;
    rc = fake_mig_create_ci(gpu, gi, (unsigned)k, &ci);
    if (rc == NVML_SUCCESS) *out = &ci->handle;
    return rc;
}

nvmlReturn_t nvmlGpuInstanceCreateComputeInstance(nvmlGpuInstance_t gi, unsigned int profileId,
                                                  nvmlComputeInstance_t *ci) {
    FAKE_API(create_ci(gi, profileId, ci));
}

static nvmlReturn_t destroy_ci(nvmlComputeInstance_t handle) {
    fake_gpu *gpu;
    fake_gi *gi;
    fake_ci *ci;
    nvmlReturn_t rc = ci_of(handle, &gpu, &gi, &ci);
    if (rc != NVML_SUCCESS) return rc;
    for (int p = 0; p < gpu->nprocs; p++)
        if (gpu->procs[p].gi == gi->id && gpu->procs[p].ci == ci->id) return NVML_ERROR_IN_USE;
    ci->used = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlComputeInstanceDestroy(nvmlComputeInstance_t ci) { FAKE_API(destroy_ci(ci)); }

static nvmlReturn_t list_cis(nvmlGpuInstance_t handle, unsigned int profileId, nvmlComputeInstance_t *out,
                             unsigned int *count) {
    fake_gpu *gpu;
    fake_gi *gi;
    nvmlReturn_t rc = fake_gi_of(handle, &gpu, &gi);
    if (rc != NVML_SUCCESS) return rc;
    if (ci_profile_slices(profileId) < 0 || !count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = 0;
    for (int c = 0; c < FAKE_MAX_CI; c++) {
        fake_ci *ci = &gi->cis[c];
        if (!ci->used || (int)ci->slices != ci_profile_slices(profileId)) continue;
        if (out) out[n] = &ci->handle;
        n++;
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t gi, unsigned int profileId,
                                                nvmlComputeInstance_t *cis, unsigned int *count) {
    FAKE_API(list_cis(gi, profileId, cis, count));
}

static nvmlReturn_t ci_by_id(nvmlGpuInstance_t handle, unsigned int id, nvmlComputeInstance_t *out) {
    fake_gpu *gpu;
    fake_gi *gi;
    nvmlReturn_t rc = fake_gi_of(handle, &gpu, &gi);
    if (rc != NVML_SUCCESS) return rc;
    if (id >= FAKE_MAX_CI || !gi->cis[id].used) return NVML_ERROR_NOT_FOUND;
    *out = &gi->cis[id].handle;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t gi, unsigned int id, nvmlComputeInstance_t *ci) {
    FAKE_API(ci_by_id(gi, id, ci));
}

static nvmlReturn_t ci_info(nvmlComputeInstance_t handle, nvmlComputeInstanceInfo_t *info) {
    fake_gpu *gpu;
    fake_gi *gi;
    fake_ci *ci;
    nvmlReturn_t rc = ci_of(handle, &gpu, &gi, &ci);
    if (rc != NVML_SUCCESS) return rc;
    info->device = &gpu->handle;
    info->gpuInstance = &gi->handle;
    info->id = ci->id;
    info->profileId = ci_profile_of(ci->slices);
    info->placement = (nvmlComputeInstancePlacement_t){ci->start, ci->slices};
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t ci, nvmlComputeInstanceInfo_t *info) {
    FAKE_API(ci_info(ci, info));
}

/* Attributes of a MIG device. */
static nvmlReturn_t attributes(nvmlDevice_t d, nvmlDeviceAttributes_t *a) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (d->gi < 0) return NVML_ERROR_NOT_SUPPORTED; /* as a real H100 answers for a whole GPU */
    memset(a, 0, sizeof *a);
    const fake_gi *gi = &gpu->gis[d->gi];
    const fake_ci *ci = &gi->cis[d->ci];
    a->multiprocessorCount = ci_sms(gpu, gi, ci->slices);
    a->sharedCopyEngineCount = gi->profile->copy_engines;
    a->sharedDecoderCount = gi->profile->decoders;
    a->sharedEncoderCount = gi->profile->encoders;
    a->sharedJpegCount = gi->profile->jpegs;
    a->sharedOfaCount = gi->profile->ofas;
    a->gpuInstanceSliceCount = gi->profile->slices;
    a->computeInstanceSliceCount = ci->slices;
    a->memorySizeMB = gi->profile->memory_mib;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t d, nvmlDeviceAttributes_t *a) { FAKE_API(attributes(d, a)); }
