/* Device queries of the FAKE NVML: handles, identity, memory, PCI, NUMA, topology, NVLink, processes. */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "fake.h"

#define NVSWITCH_BUS_ID "00000000:FF:00.0" /* where every NVSwitch link of the fake leads */

static nvmlReturn_t get_count(unsigned int *count) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned)g_node.count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { FAKE_API(get_count(count)); }

static nvmlReturn_t handle_of(fake_gpu *gpu, nvmlDevice_t *out) {
    if (!gpu || !out) return NVML_ERROR_INVALID_ARGUMENT;
    if (gpu->lost) return NVML_ERROR_GPU_IS_LOST;
    *out = &gpu->handle;
    return NVML_SUCCESS;
}

static nvmlReturn_t by_index(unsigned int index, nvmlDevice_t *out) {
    return index < (unsigned)g_node.count ? handle_of(&g_node.gpus[index], out) : NVML_ERROR_INVALID_ARGUMENT;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *d) { FAKE_API(by_index(index, d)); }

static nvmlReturn_t by_uuid(const char *uuid, nvmlDevice_t *out) {
    if (!uuid || !out) return NVML_ERROR_INVALID_ARGUMENT;
    fake_gpu *gpu = fake_gpu_by_uuid(uuid);
    if (gpu) return handle_of(gpu, out);
    for (int i = 0; i < g_node.count; i++)
        for (int g = 0; g < FAKE_MAX_GI; g++)
            for (int c = 0; g_node.gpus[i].gis[g].used && c < FAKE_MAX_CI; c++) {
                fake_ci *ci = &g_node.gpus[i].gis[g].cis[c];
                if (!ci->used || strcmp(ci->uuid, uuid)) continue;
                if (g_node.gpus[i].lost) return NVML_ERROR_GPU_IS_LOST;
                *out = &ci->device;
                return NVML_SUCCESS;
            }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *d) { FAKE_API(by_uuid(uuid, d)); }

static nvmlReturn_t by_pci(const char *bus_id, nvmlDevice_t *out) {
    for (int i = 0; bus_id && i < g_node.count; i++)
        if (!strcasecmp(g_node.gpus[i].pci_bus_id, bus_id)) return handle_of(&g_node.gpus[i], out);
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *busId, nvmlDevice_t *d) { FAKE_API(by_pci(busId, d)); }

static nvmlReturn_t get_uuid(nvmlDevice_t d, char *uuid, unsigned int length) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    return fake_copy(uuid, d->gi >= 0 ? gpu->gis[d->gi].cis[d->ci].uuid : gpu->uuid, length);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) { FAKE_API(get_uuid(d, uuid, length)); }

static nvmlReturn_t get_name(nvmlDevice_t d, char *name, unsigned int length) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (d->gi < 0) return fake_copy(name, gpu->name, length);
    char text[2 * NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    snprintf(text, sizeof text, "%s %s", gpu->name, gpu->gis[d->gi].profile->name);
    return fake_copy(name, text, length);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) { FAKE_API(get_name(d, name, length)); }

static nvmlReturn_t get_index(nvmlDevice_t d, unsigned int *index) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc == NVML_SUCCESS) *index = (unsigned)d->gpu;
    return rc;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) { FAKE_API(get_index(d, index)); }

static nvmlReturn_t get_minor(nvmlDevice_t d, unsigned int *minor) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    *minor = gpu->minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) { FAKE_API(get_minor(d, minor)); }

/* ---- memory ---- */

static void memory_of(nvmlDevice_t d, const fake_gpu *gpu, unsigned long long *total, unsigned long long *used) {
    unsigned long long sum = 0;
    int mig = d->gi >= 0;
    unsigned gi_id = mig ? gpu->gis[d->gi].id : FAKE_NO_ID;
    for (int p = 0; p < gpu->nprocs; p++)
        if (!mig || gpu->procs[p].gi == gi_id) sum += gpu->procs[p].used_bytes;
    *total = mig ? gpu->gis[d->gi].profile->memory_mib << 20 : gpu->memory_bytes;
    *used = !mig && gpu->memory_used_bytes >= 0 ? (unsigned long long)gpu->memory_used_bytes : sum;
    if (*used > *total) *used = *total;
}

static nvmlReturn_t memory_v1(nvmlDevice_t d, nvmlMemory_t *m) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    memory_of(d, gpu, &m->total, &m->used);
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) { FAKE_API(memory_v1(d, memory)); }

static nvmlReturn_t memory_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    memory_of(d, gpu, &m->total, &m->used);
    m->reserved = 0;
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *memory) { FAKE_API(memory_v2(d, memory)); }

/* ---- PCI, compute capability, NUMA ---- */

static void fill_pci(const char *bus_id, unsigned device_id, nvmlPciInfo_t *pci) {
    unsigned domain = 0, bus = 0, dev = 0, fn = 0;
    sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn);
    memset(pci, 0, sizeof *pci);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = device_id;
    pci->pciSubSystemId = device_id;
    snprintf(pci->busId, sizeof pci->busId, "%s", bus_id);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04x:%02x:%02x.%x", domain & 0xFFFF, bus, dev, fn);
}

static nvmlReturn_t pci_info(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc == NVML_SUCCESS) fill_pci(gpu->pci_bus_id, gpu->pci_device_id, pci);
    return rc;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) { FAKE_API(pci_info(d, pci)); }

static nvmlReturn_t compute_capability(nvmlDevice_t d, int *major, int *minor) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    *major = gpu->cc_major;
    *minor = gpu->cc_minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    FAKE_API(compute_capability(d, major, minor));
}

static nvmlReturn_t numa_node(nvmlDevice_t d, unsigned int *node) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (gpu->numa_node < 0) return NVML_ERROR_NOT_SUPPORTED;
    *node = (unsigned)gpu->numa_node;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t d, unsigned int *node) { FAKE_API(numa_node(d, node)); }

static nvmlReturn_t cpu_affinity(nvmlDevice_t d, unsigned int size, unsigned long *set) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    memset(set, 0, size * sizeof *set);
    int first = gpu->numa_node < 0 ? 0 : gpu->numa_node * g_node.cpus_per_numa;
    const int bits = (int)(8 * sizeof *set);
    for (int cpu = first; cpu < first + g_node.cpus_per_numa && cpu / bits < (int)size; cpu++)
        set[cpu / bits] |= 1ul << (cpu % bits);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCpuAffinity(nvmlDevice_t d, unsigned int cpuSetSize, unsigned long *cpuSet) {
    FAKE_API(cpu_affinity(d, cpuSetSize, cpuSet));
}

/* ---- topology and NVLink ---- */

static nvmlReturn_t common_ancestor(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuTopologyLevel_t *level) {
    fake_gpu *ga, *gb;
    nvmlReturn_t rc = fake_gpu_of(a, &ga);
    if (rc == NVML_SUCCESS) rc = fake_gpu_of(b, &gb);
    if (rc != NVML_SUCCESS) return rc;
    if (a->gpu == b->gpu) return NVML_ERROR_NOT_SUPPORTED; /* as a real H100 answers for itself */
    *level = (nvmlGpuTopologyLevel_t)g_node.topology[a->gpu][b->gpu];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuTopologyLevel_t *level) {
    FAKE_API(common_ancestor(a, b, level));
}

static nvmlReturn_t link_gpu(nvmlDevice_t d, unsigned int link, fake_gpu **gpu) {
    nvmlReturn_t rc = fake_gpu_of(d, gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (link >= NVML_NVLINK_MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
    return (int)link < (*gpu)->nvlinks ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

static nvmlReturn_t nvlink_state(nvmlDevice_t d, unsigned int link, nvmlEnableState_t *active) {
    fake_gpu *gpu;
    nvmlReturn_t rc = link_gpu(d, link, &gpu);
    if (rc == NVML_SUCCESS) *active = NVML_FEATURE_ENABLED;
    return rc;
}

nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t d, unsigned int link, nvmlEnableState_t *isActive) {
    FAKE_API(nvlink_state(d, link, isActive));
}

static nvmlReturn_t nvlink_remote_pci(nvmlDevice_t d, unsigned int link, nvmlPciInfo_t *pci) {
    fake_gpu *gpu;
    nvmlReturn_t rc = link_gpu(d, link, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (gpu->nvlink_switch) fill_pci(NVSWITCH_BUS_ID, 0x22A310DE, pci);
    else fill_pci(g_node.gpus[gpu->nvlink_peer[link]].pci_bus_id, g_node.gpus[gpu->nvlink_peer[link]].pci_device_id, pci);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t d, unsigned int link, nvmlPciInfo_t *pci) {
    FAKE_API(nvlink_remote_pci(d, link, pci));
}

static nvmlReturn_t nvlink_remote_type(nvmlDevice_t d, unsigned int link, nvmlIntNvLinkDeviceType_t *type) {
    fake_gpu *gpu;
    nvmlReturn_t rc = link_gpu(d, link, &gpu);
    if (rc == NVML_SUCCESS) *type = gpu->nvlink_switch ? NVML_NVLINK_DEVICE_TYPE_SWITCH : NVML_NVLINK_DEVICE_TYPE_GPU;
    return rc;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t d, unsigned int link, nvmlIntNvLinkDeviceType_t *type) {
    FAKE_API(nvlink_remote_type(d, link, type));
}

/* ---- processes and utilisation (two-call protocols as the real library) ---- */

static int process_visible(nvmlDevice_t d, const fake_gpu *gpu, const fake_process *p) {
    if (d->gi < 0) return 1;
    return p->gi == gpu->gis[d->gi].id && p->ci == gpu->gis[d->gi].cis[d->ci].id;
}

static nvmlReturn_t running_processes(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = 0;
    for (int p = 0; p < gpu->nprocs; p++) {
        if (!process_visible(d, gpu, &gpu->procs[p])) continue;
        if (infos && n < *count)
            infos[n] = (nvmlProcessInfo_t){gpu->procs[p].pid, gpu->procs[p].used_bytes, gpu->procs[p].gi,
                                           gpu->procs[p].ci};
        n++;
    }
    rc = n > *count || (!infos && n > 0) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    *count = n;
    return rc;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    FAKE_API(running_processes(d, count, infos));
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_v2_t *infos) {
    FAKE_API(running_processes(d, count, infos));
}

static unsigned long long now_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (unsigned long long)tv.tv_sec * 1000000ull + (unsigned long long)tv.tv_usec;
}

/* Every process has one sample stamped "now"; none newer than lastSeen (or no processes): NOT_FOUND. */
static nvmlReturn_t process_utilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *samples,
                                        unsigned int *count, unsigned long long last_seen) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long now = now_us();
    unsigned n = 0;
    for (int p = 0; p < gpu->nprocs && now > last_seen; p++) {
        if (!process_visible(d, gpu, &gpu->procs[p])) continue;
        if (samples && n < *count)
            samples[n] = (nvmlProcessUtilizationSample_t){gpu->procs[p].pid, now, gpu->procs[p].sm, gpu->procs[p].mem, 0, 0};
        n++;
    }
    if (n == 0) return NVML_ERROR_NOT_FOUND;
    rc = !samples || n > *count ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    *count = n;
    return rc;
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *utilization,
                                             unsigned int *processSamplesCount, unsigned long long lastSeenTimeStamp) {
    FAKE_API(process_utilization(d, utilization, processSamplesCount, lastSeenTimeStamp));
}

static nvmlReturn_t utilization_rates(nvmlDevice_t d, nvmlUtilization_t *u) {
    fake_gpu *gpu;
    nvmlReturn_t rc = fake_gpu_of(d, &gpu);
    if (rc != NVML_SUCCESS) return rc;
    if (d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    u->gpu = gpu->util_gpu;
    u->memory = gpu->util_mem;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *utilization) {
    FAKE_API(utilization_rates(d, utilization));
}
