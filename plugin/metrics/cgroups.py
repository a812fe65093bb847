"""Parse ``/proc/<pid>/cgroup`` into the Kubernetes pod UID and container ID. Pure: no I/O.

Handles cgroup v2 (``0::/path``) and v1 (``N:controllers:/path``), the systemd driver
(``kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope``) and the cgroupfs driver
(``/kubepods/burstable/pod<uid>/<id>``), with containerd, CRI-O and docker container IDs. Pod UIDs are
returned in the API form (dashes); static pods' 32-hex config-hash UIDs are kept as they are.
"""

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["CgroupRef", "parse_cgroup", "parse_cgroup_path"]

_UUID: Final = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD: Final = re.compile(rf"^(?:[a-z]+-)*pod({_UUID}|[0-9a-f]{{32}})(?:\.slice)?$")
_CONTAINER: Final = re.compile(r"^(?:(?:cri-containerd|crio|docker)-)?([0-9a-f]{64})(?:\.scope)?$")


@dataclass(frozen=True, slots=True)
class CgroupRef:
    """Where a process lives: its pod's UID and, when it is inside a container's cgroup, the container ID."""

    pod_uid: str
    container_id: str | None


def parse_cgroup(text: str) -> CgroupRef | None:
    """The pod and container of a process from its cgroup file, or None for a process outside any pod.

    The unified (v2) line is tried first, then the v1 lines in file order; the first that names a pod wins.
    """
    paths: list[str] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if not sep:
            continue
        if hierarchy == "0" and not controllers:
            paths.insert(0, path)
        else:
            paths.append(path)
    for path in paths:
        ref = parse_cgroup_path(path)
        if ref is not None:
            return ref
    return None


def parse_cgroup_path(path: str) -> CgroupRef | None:
    """The pod and container named by one cgroup path (the innermost container component after the pod)."""
    pod_uid: str | None = None
    container_id: str | None = None
    for part in path.split("/"):
        pod = _POD.match(part)
        if pod is not None:
            pod_uid, container_id = pod.group(1).replace("_", "-"), None
            continue
        container = _CONTAINER.match(part)
        if container is not None and pod_uid is not None:
            container_id = container.group(1)
    return None if pod_uid is None else CgroupRef(pod_uid, container_id)
