"""Read what the exporter needs about a host process from ``<root>/proc``; ``root`` is injected for tests.

A process that exits between NVML's answer and these reads is simply absent (``None``), never an error.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from plugin.metrics.cgroups import CgroupRef, parse_cgroup

__all__ = ["MAX_MAPS_BYTES", "NamespacedPid", "maps_file", "read_cgroup", "read_namespaced_pid"]


@dataclass(frozen=True, slots=True)
class NamespacedPid:
    """A process as it knows itself: its PID in the innermost PID namespace and its start time in ticks."""

    pid: int
    start_time: int


def read_cgroup(root: Path, host_pid: int) -> CgroupRef | None:
    """The pod and container of a host PID, or None when it is gone or lives outside any pod."""
    try:
        text = (root / "proc" / str(host_pid) / "cgroup").read_text()
    except OSError:
        return None
    return parse_cgroup(text)


def read_namespaced_pid(root: Path, host_pid: int) -> NamespacedPid | None:
    """``NSpid`` (last value) from ``status``, ``starttime`` (field 22) from ``stat``; None if unreadable."""
    proc = root / "proc" / str(host_pid)
    try:
        status = (proc / "status").read_text()
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    ns_pid = next((line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")), None)
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state), so starttime (field 22) is fields[19].
    if ns_pid is None or len(fields) < 20 or not (ns_pid.isdigit() and fields[19].isdigit()):
        return None
    return NamespacedPid(int(ns_pid), int(fields[19]))


MAX_MAPS_BYTES: Final = 16 * 1024 * 1024
"""More than any process can have: ``vm.max_map_count`` (65,530 by default) lines of about 100 bytes."""


def maps_file(root: Path, host_pid: int, path: str) -> bool | None:
    """Whether the process maps the file at ``path`` (as its own mount namespace names it), from
    ``/proc/<pid>/maps``, which the kernel writes; None when the map cannot be read (the process is gone).
    A map past :data:`MAX_MAPS_BYTES` is read no further and counts as not holding the file."""
    suffix = " " + path
    try:
        with (root / "proc" / str(host_pid) / "maps").open("rb") as maps:
            data = maps.read(MAX_MAPS_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_MAPS_BYTES:
        return False
    # " (deleted)": the library file was replaced since the process mapped it (a plugin upgrade)
    wanted = (suffix.encode(), (suffix + " (deleted)").encode())
    return any(line.endswith(wanted) for line in data.splitlines())
