/*
 * Run-time changes to the FAKE NVML node: JSON lines appended to the control file (default
 * "<FAKE_NVML_CONFIG>.ctl"). Every NVML call first applies lines appended since the last call.
 *
 *   {"op": "xid", "uuid": U, "xid": 79}                     (op may be left out for XIDs)
 *   {"op": "xid", "uuid": U, "xid": 31, "gpu_instance_id": 1, "compute_instance_id": 0}
 *   {"op": "xid", "uuid": "MIG-...", "xid": 43}              (a MIG device: its ids are filled in)
 *   {"op": "lose", "uuid": U}   {"op": "recover", "uuid": U}
 *   {"op": "processes", "uuid": U, "processes": [{"pid": 4242, "used_mib": 1024, "sm": 35, "mem": 10}]}
 *   {"op": "utilization", "uuid": U, "gpu": 50, "memory": 20}
 *   {"op": "memory_used", "uuid": U, "mib": 2048}            (null: the sum of the processes again)
 *   {"op": "reset", "uuid": U}                               (a GPU reset: a pending MIG mode takes effect)
 *
 * At nvmlInit after a (re)load the whole file is replayed, except that XIDs from before are not delivered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fake.h"

static char g_path[4200];
static long g_offset;

void fake_control_reset(const char *path) {
    snprintf(g_path, sizeof g_path, "%s", path);
    g_offset = 0;
}

int fake_control_dir(char *out, size_t size) {
    const char *slash = strrchr(g_path, '/');
    if (!g_path[0] || size < 2) return 0;
    if (!slash) return snprintf(out, size, ".") > 0;
    size_t len = slash == g_path ? 1 : (size_t)(slash - g_path);
    if (len >= size) return 0;
    memcpy(out, g_path, len);
    out[len] = '\0';
    return 1;
}

/* Finds the GPU of a physical or MIG UUID; for a MIG UUID also its instance ids. */
static fake_gpu *target(const char *uuid, unsigned *gi, unsigned *ci) {
    *gi = *ci = FAKE_NO_ID;
    fake_gpu *gpu = fake_gpu_by_uuid(uuid);
    for (int i = 0; !gpu && uuid && i < g_node.count; i++)
        for (int g = 0; g < FAKE_MAX_GI; g++)
            for (int c = 0; g_node.gpus[i].gis[g].used && c < FAKE_MAX_CI; c++)
                if (g_node.gpus[i].gis[g].cis[c].used && !strcmp(g_node.gpus[i].gis[g].cis[c].uuid, uuid)) {
                    *gi = g_node.gpus[i].gis[g].id;
                    *ci = g_node.gpus[i].gis[g].cis[c].id;
                    gpu = &g_node.gpus[i];
                }
    return gpu;
}

static void apply(const json *line, int deliver_events) {
    const char *op = json_str(json_get(line, "op"), "xid");
    const char *uuid = json_str(json_get(line, "uuid"), NULL);
    unsigned gi, ci;
    fake_gpu *gpu = target(uuid, &gi, &ci);
    if (!gpu) {
        fprintf(stderr, "fake NVML: control line for unknown GPU '%s' ignored\n", uuid ? uuid : "");
        return;
    }
    if (!strcmp(op, "xid")) {
        gi = (unsigned)json_num(json_get(line, "gpu_instance_id"), gi);
        ci = (unsigned)json_num(json_get(line, "compute_instance_id"), ci);
        if (deliver_events) fake_events_push((int)(gpu - g_node.gpus), (unsigned long long)json_num(json_get(line, "xid"), 0), gi, ci);
    } else if (!strcmp(op, "lose") || !strcmp(op, "recover")) {
        gpu->lost = op[0] == 'l';
    } else if (!strcmp(op, "processes")) {
        fake_apply_processes(gpu, json_get(line, "processes"));
    } else if (!strcmp(op, "utilization")) {
        gpu->util_gpu = (unsigned)json_num(json_get(line, "gpu"), gpu->util_gpu);
        gpu->util_mem = (unsigned)json_num(json_get(line, "memory"), gpu->util_mem);
    } else if (!strcmp(op, "memory_used")) {
        const json *mib = json_get(line, "mib");
        gpu->memory_used_bytes = mib && mib->type == JSON_NUMBER ? (long long)(mib->number * 1048576.0) : -1;
    } else if (!strcmp(op, "reset")) {
        if (gpu->mig && gpu->mig_pending != gpu->mig_current) {
            gpu->mig_current = gpu->mig_pending;
            fake_mig_clear(gpu);
        }
    } else {
        fprintf(stderr, "fake NVML: unknown control op '%s' ignored\n", op);
    }
}

void fake_control_poll(int deliver_events) {
    struct stat st;
    if (!g_path[0] || stat(g_path, &st) != 0) return;
    if (st.st_size < g_offset) g_offset = 0; /* truncated or replaced: read it again from the start */
    if (st.st_size == g_offset) return;
    FILE *f = fopen(g_path, "rb");
    if (!f) return;
    long size = (long)st.st_size - g_offset;
    char *text = malloc((size_t)size + 1);
    fseek(f, g_offset, SEEK_SET);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[got] = '\0';
    char *line = text, *nl;
    while ((nl = strchr(line, '\n')) != NULL) { /* only complete lines; a partial one waits */
        *nl = '\0';
        json *value = json_parse(line);
        if (value) apply(value, deliver_events);
        else if (strspn(line, " \t\r") != strlen(line)) fprintf(stderr, "fake NVML: bad control line '%s'\n", line);
        json_free(value);
        g_offset += (long)(nl - line) + 1;
        line = nl + 1;
    }
    free(text);
}
