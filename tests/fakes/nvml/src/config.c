/* Reads a node description (JSON, see ../nodes/README.md) into the fake's state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[got] = '\0';
    return text;
}

static unsigned parse_uint(const json *v, unsigned fallback) {
    if (v && v->type == JSON_STRING) return (unsigned)strtoul(v->string, NULL, 0);
    return (unsigned)json_num(v, fallback);
}

void fake_apply_processes(fake_gpu *gpu, const json *list) {
    gpu->nprocs = 0;
    for (int i = 0; i < json_len(list) && i < FAKE_MAX_PROCS; i++) {
        const json *p = json_at(list, i);
        fake_process *proc = &gpu->procs[gpu->nprocs++];
        proc->pid = parse_uint(json_get(p, "pid"), 0);
        proc->used_bytes = (unsigned long long)(json_num(json_get(p, "used_mib"), 0) * 1048576.0);
        proc->sm = parse_uint(json_get(p, "sm"), 0);
        proc->mem = parse_uint(json_get(p, "mem"), 0);
        proc->gi = parse_uint(json_get(p, "gpu_instance_id"), FAKE_NO_ID);
        proc->ci = parse_uint(json_get(p, "compute_instance_id"), FAKE_NO_ID);
    }
}

static int load_mig(fake_gpu *gpu, const json *mig, const char *path) {
    if (!mig) return 0;
    const char *key = json_str(json_get(mig, "profiles"), "");
    gpu->mig = fake_mig_table(key);
    if (!gpu->mig) {
        fprintf(stderr, "fake NVML: %s: %s: unknown MIG profile table '%s'\n", path, gpu->uuid, key);
        return -1;
    }
    gpu->mig_current = json_num(json_get(mig, "mode"), 0) != 0;
    gpu->mig_pending = json_num(json_get(mig, "pending"), gpu->mig_current) != 0;
    const json *instances = json_get(mig, "instances");
    for (int i = 0; i < json_len(instances); i++) {
        const json *inst = json_at(instances, i);
        const char *name = json_str(json_get(inst, "profile"), "");
        const mig_profile *profile = fake_mig_profile_by_name(gpu->mig, name);
        fake_gi *gi = NULL;
        fake_ci *ci = NULL;
        if (!profile || fake_mig_create(gpu, profile, 0, 0, &gi) != NVML_SUCCESS ||
            fake_mig_create_ci(gpu, gi, parse_uint(json_get(inst, "compute_slices"), profile->slices), &ci) !=
                NVML_SUCCESS) {
            fprintf(stderr, "fake NVML: %s: %s: cannot create MIG instance '%s'\n", path, gpu->uuid, name);
            return -1;
        }
    }
    return 0;
}

static int load_gpu(fake_gpu *gpu, const json *g, const char *path) {
    snprintf(gpu->uuid, sizeof gpu->uuid, "%s", json_str(json_get(g, "uuid"), ""));
    snprintf(gpu->name, sizeof gpu->name, "%s", json_str(json_get(g, "name"), "NVIDIA Fake GPU"));
    snprintf(gpu->pci_bus_id, sizeof gpu->pci_bus_id, "%s", json_str(json_get(g, "pci_bus_id"), ""));
    gpu->memory_bytes = (unsigned long long)json_num(json_get(g, "memory_mib"), 0) * 1048576ull;
    gpu->memory_used_bytes = -1;
    if (json_get(g, "memory_used_mib"))
        gpu->memory_used_bytes = (long long)(json_num(json_get(g, "memory_used_mib"), 0) * 1048576.0);
    gpu->minor = parse_uint(json_get(g, "minor"), 0);
    gpu->pci_device_id = parse_uint(json_get(g, "pci_device_id"), 0);
    gpu->numa_node = (int)json_num(json_get(g, "numa_node"), -1);
    gpu->cc_major = (int)json_num(json_at(json_get(g, "compute_capability"), 0), 0);
    gpu->cc_minor = (int)json_num(json_at(json_get(g, "compute_capability"), 1), 0);
    gpu->util_gpu = parse_uint(json_get(json_get(g, "utilization"), "gpu"), 0);
    gpu->util_mem = parse_uint(json_get(json_get(g, "utilization"), "memory"), 0);
    gpu->lost = json_num(json_get(g, "lost"), 0) != 0;
    fake_apply_processes(gpu, json_get(g, "processes"));
    if (!gpu->uuid[0] || !gpu->pci_bus_id[0] || !gpu->memory_bytes) {
        fprintf(stderr, "fake NVML: %s: every GPU needs uuid, pci_bus_id and memory_mib\n", path);
        return -1;
    }
    return load_mig(gpu, json_get(g, "mig"), path);
}

static void load_topology(fake_node *node, const json *root) {
    const json *matrix = json_get(root, "topology");
    for (int a = 0; a < node->count; a++)
        for (int b = 0; b < node->count; b++) {
            int same_numa = node->gpus[a].numa_node == node->gpus[b].numa_node;
            int fallback = a == b ? NVML_TOPOLOGY_INTERNAL : same_numa ? NVML_TOPOLOGY_NODE : NVML_TOPOLOGY_SYSTEM;
            node->topology[a][b] = (int)json_num(json_at(json_at(matrix, a), b), fallback);
        }
}

static void load_nvlink(fake_node *node, const json *root) {
    const json *nvlink = json_get(root, "nvlink");
    int switch_links = (int)json_num(json_get(nvlink, "switch_links"), 0);
    const json *pairs = json_get(nvlink, "pairs");
    for (int a = 0; a < node->count; a++) {
        fake_gpu *gpu = &node->gpus[a];
        gpu->nvlink_switch = switch_links > 0;
        gpu->nvlinks = switch_links < NVML_NVLINK_MAX_LINKS ? switch_links : NVML_NVLINK_MAX_LINKS;
        for (int b = 0; b < node->count && !switch_links; b++) {
            int n = (int)json_num(json_at(json_at(pairs, a), b), 0);
            for (int k = 0; k < n && gpu->nvlinks < NVML_NVLINK_MAX_LINKS && a != b; k++)
                gpu->nvlink_peer[gpu->nvlinks++] = b;
        }
    }
}

int fake_load_config(const char *path, fake_node *node) {
    char *text = read_file(path);
    json *root = text ? json_parse(text) : NULL;
    free(text);
    const json *gpus = json_get(root, "gpus");
    if (!root || !gpus || json_len(gpus) > FAKE_MAX_GPUS) {
        fprintf(stderr, "fake NVML: %s: not a node description (JSON with at most %d gpus)\n", path, FAKE_MAX_GPUS);
        json_free(root);
        return -1;
    }
    snprintf(node->driver_version, sizeof node->driver_version, "%s",
             json_str(json_get(root, "driver_version"), "580.95.05"));
    node->cuda_version = (int)json_num(json_get(root, "cuda_version"), 13000);
    node->cpus_per_numa = (int)json_num(json_get(root, "cpus_per_numa"), 32);
    node->count = json_len(gpus);
    fake_fix_handles(node);
    for (int i = 0; i < node->count; i++) {
        if (load_gpu(&node->gpus[i], json_at(gpus, i), path) != 0) {
            json_free(root);
            return -1;
        }
    }
    load_topology(node, root);
    load_nvlink(node, root);
    json_free(root);
    return 0;
}
