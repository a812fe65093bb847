/* The per-container config file (layout vcuda_config_t from the contract): read once, validated, never
 * trusted partially. Any defect is reported as a reason string and the caller fails CUDA initialisation. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

uint32_t vc_crc32(const void *data, size_t len) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const unsigned char *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

static ssize_t vc_read_all(const char *path, void *buf, size_t cap, char *why, size_t why_len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, (char *)buf + got, cap - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    return (ssize_t)got;
}

static int vc_check_records(const vcuda_config_t *c, char *why, size_t why_len) {
    if (c->gpu_count < 1 || c->gpu_count > VCUDA_MAX_GPUS) {
        snprintf(why, why_len, "gpu_count %u outside 1..%d", c->gpu_count, VCUDA_MAX_GPUS);
        return -1;
    }
    for (uint32_t i = 0; i < c->gpu_count; i++) {
        const vcuda_gpu_record_t *g = &c->gpus[i];
        if (memchr(g->uuid, 0, sizeof g->uuid) == NULL || g->uuid[0] == 0 || g->memory_limit == 0 ||
            g->core_limit < 1 || g->core_limit > g->soft_limit || g->soft_limit > VCUDA_CORE_PER_GPU) {
            snprintf(why, why_len, "GPU record %u has an empty UUID or limits out of range", i);
            return -1;
        }
    }
    return 0;
}

int vc_config_read(const char *path, vcuda_config_t *out, char *why, size_t why_len) {
    unsigned char buf[sizeof(vcuda_config_t) + 1];
    ssize_t n = vc_read_all(path, buf, sizeof buf, why, why_len);
    if (n < 0) return -1;
    if ((size_t)n != sizeof(vcuda_config_t)) {
        snprintf(why, why_len, "%s is %zd bytes, expected %zu (corrupt or other layout)", path, n,
                 sizeof(vcuda_config_t));
        return -1;
    }
    memcpy(out, buf, sizeof *out);
    if (memcmp(out->magic, VCUDA_CONFIG_MAGIC, sizeof out->magic) != 0) {
        snprintf(why, why_len, "%s: bad magic (not a kube-vgpu config file)", path);
        return -1;
    }
    if (out->version != VCUDA_CONFIG_VERSION) {
        snprintf(why, why_len, "%s: layout version %u, this shim reads version %d", path, out->version,
                 VCUDA_CONFIG_VERSION);
        return -1;
    }
    uint32_t want = out->crc32;
    memset(buf + VCUDA_CONFIG_CRC_OFFSET, 0, 4);
    if (out->size != sizeof(vcuda_config_t) || vc_crc32(buf, sizeof(vcuda_config_t)) != want) {
        snprintf(why, why_len, "%s: checksum or size mismatch (corrupt file)", path);
        return -1;
    }
    if (vc_check_records(out, why, why_len) != 0) return -1;
    return 0;
}
