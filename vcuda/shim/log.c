/* Shim messages on stderr, prefixed so they are greppable. Never called on the launch path. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "shim.h"

static int vc_log_level = -1; /* 0 errors and warnings (default), 1 debug */

static int vc_level(void) {
    if (vc_log_level < 0) {
        const char *v = getenv(VCUDA_ENV_LOG_LEVEL);
        vc_log_level = (v && (v[0] == 'd' || v[0] == 'D' || v[0] == '1')) ? 1 : 0;
    }
    return vc_log_level;
}

static void vc_vlog(const char *level, const char *fmt, va_list ap) {
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    fprintf(stderr, "kube-vgpu vcuda %s: %s\n", level, line);
}

void vc_log_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vc_vlog("error", fmt, ap);
    va_end(ap);
}

void vc_log_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vc_vlog("warning", fmt, ap);
    va_end(ap);
}

void vc_log_debug(const char *fmt, ...) {
    if (vc_level() < 1) return;
    va_list ap;
    va_start(ap, fmt);
    vc_vlog("debug", fmt, ap);
    va_end(ap);
}
