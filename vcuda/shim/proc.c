/* What /proc says about a process of the container (its pid namespace): start time, state, liveness. Used to
 * tell dead, zombie, stopped and reused pids apart; never on the launch path. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

/* /proc/<pid>/stat into buf, returning what follows the command name's closing ')' (the command may hold
 * spaces and parentheses); NULL if the process is gone or unreadable. */
static const char *stat_fields(pid_t pid, char *buf, size_t cap) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0) return NULL;
    buf[n] = 0;
    return strrchr(buf, ')');
}

/* Process start time in clock ticks (field 22 of /proc/<pid>/stat); 0 if unknown. */
uint64_t vc_start_time(pid_t pid) {
    char buf[1024];
    const char *p = stat_fields(pid, buf, sizeof buf);
    if (!p) return 0;
    unsigned long long v = 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ') field++;
    if (sscanf(p, "%llu", &v) != 1) return 0;
    return v;
}

/* State letter of /proc/<pid>/stat (R, S, D, T, t, Z, X...); 0 if the process is gone or unreadable. */
char vc_proc_state(pid_t pid) {
    char buf[512];
    const char *p = stat_fields(pid, buf, sizeof buf);
    return (p && p[1] == ' ') ? p[2] : 0;
}

int vc_pid_alive(pid_t pid) {
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) return 0;
    char st = vc_proc_state(pid);
    return st != 'Z' && st != 'X';
}
