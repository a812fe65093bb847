/*
 * MIG GPU instance profiles of the FAKE NVML, as `nvidia-smi mig -lgip` / `-lgipp` show them on the real
 * GPUs: NVML profile constant, profile id, name, compute slices, instances, SMs, copy engines, decoders,
 * encoders, JPEG, OFA, memory in MiB, then placements (size and allowed starts, in memory slices of 8).
 * A100 40GB and H100 80GB memory sizes are the drivers' figures; H200 141GB sizes are close approximations
 * (names, slices, SMs and placements as on H100).
 */
#include <string.h>

#include "fake.h"

#define P(idx) NVML_GPU_INSTANCE_PROFILE_##idx
#define ALL7 0x7Fu   /* starts 0..6 */
#define EVEN4 0x55u  /* starts 0,2,4,6 */
#define EVEN3 0x15u  /* starts 0,2,4 */
#define HALVES 0x11u /* starts 0,4 */

static const mig_profile a100_40gb[] = {
    {P(1_SLICE), 19, "MIG 1g.5gb", 1, 7, 14, 1, 0, 0, 0, 0, 4864, 1, ALL7},
    {P(1_SLICE_REV1), 20, "MIG 1g.5gb+me", 1, 1, 14, 1, 1, 0, 1, 1, 4864, 1, ALL7},
    {P(1_SLICE_REV2), 15, "MIG 1g.10gb", 1, 4, 14, 1, 1, 0, 0, 0, 9856, 2, EVEN4},
    {P(2_SLICE), 14, "MIG 2g.10gb", 2, 3, 28, 2, 1, 0, 0, 0, 9856, 2, EVEN3},
    {P(3_SLICE), 9, "MIG 3g.20gb", 3, 2, 42, 3, 2, 0, 0, 0, 19968, 4, HALVES},
    {P(4_SLICE), 5, "MIG 4g.20gb", 4, 1, 56, 4, 2, 0, 0, 0, 19968, 4, 0x1},
    {P(7_SLICE), 0, "MIG 7g.40gb", 7, 1, 98, 7, 5, 0, 1, 1, 40192, 8, 0x1},
};

static const mig_profile h100_80gb[] = {
    {P(1_SLICE), 19, "MIG 1g.10gb", 1, 7, 16, 1, 1, 0, 1, 0, 9984, 1, ALL7},
    {P(1_SLICE_REV1), 20, "MIG 1g.10gb+me", 1, 1, 16, 1, 1, 0, 1, 1, 9984, 1, ALL7},
    {P(1_SLICE_REV2), 15, "MIG 1g.20gb", 1, 4, 26, 1, 1, 0, 1, 0, 20096, 2, EVEN4},
    {P(2_SLICE), 14, "MIG 2g.20gb", 2, 3, 32, 2, 2, 0, 2, 0, 20096, 2, EVEN3},
    {P(3_SLICE), 9, "MIG 3g.40gb", 3, 2, 60, 3, 3, 0, 3, 0, 40448, 4, HALVES},
    {P(4_SLICE), 5, "MIG 4g.40gb", 4, 1, 64, 4, 4, 0, 4, 0, 40448, 4, 0x1},
    {P(7_SLICE), 0, "MIG 7g.80gb", 7, 1, 132, 8, 7, 0, 7, 1, 81152, 8, 0x1},
};

static const mig_profile h200_141gb[] = {
    {P(1_SLICE), 19, "MIG 1g.18gb", 1, 7, 16, 1, 1, 0, 1, 0, 17664, 1, ALL7},
    {P(1_SLICE_REV1), 20, "MIG 1g.18gb+me", 1, 1, 16, 1, 1, 0, 1, 1, 17664, 1, ALL7},
    {P(1_SLICE_REV2), 15, "MIG 1g.35gb", 1, 4, 26, 1, 1, 0, 1, 0, 35584, 2, EVEN4},
    {P(2_SLICE), 14, "MIG 2g.35gb", 2, 3, 32, 2, 2, 0, 2, 0, 35584, 2, EVEN3},
    {P(3_SLICE), 9, "MIG 3g.71gb", 3, 2, 60, 3, 3, 0, 3, 0, 71680, 4, HALVES},
    {P(4_SLICE), 5, "MIG 4g.71gb", 4, 1, 64, 4, 4, 0, 4, 0, 71680, 4, 0x1},
    {P(7_SLICE), 0, "MIG 7g.141gb", 7, 1, 132, 8, 7, 0, 7, 1, 143104, 8, 0x1},
};

#define TABLE(key, rows) {key, rows, (int)(sizeof rows / sizeof rows[0])}
static const mig_table tables[] = {
    TABLE("a100-40gb", a100_40gb),
    TABLE("h100-80gb", h100_80gb),
    TABLE("h200-141gb", h200_141gb),
};

const mig_table *fake_mig_table(const char *key) {
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (key && !strcmp(tables[i].key, key)) return &tables[i];
    return NULL;
}

const mig_profile *fake_mig_profile_by_name(const mig_table *table, const char *name) {
    for (int i = 0; table && i < table->count; i++)
        if (!strcmp(table->profiles[i].name + 4, name) || !strcmp(table->profiles[i].name, name))
            return &table->profiles[i];
    return NULL;
}
