"""The watchdog's decisions: which GPU processes break the rules the shim is meant to enforce. Pure: no I/O.

Inputs are one round's readings, already joined by the adapter (:mod:`plugin.watchdog`): every kube-vgpu
container with its limits and what its shim reports, and every compute process NVML lists on a shared GPU,
with the pod its cgroup names, the container it was attributed to and whether that container's shim has a
live slot for it. Four reasons, a closed set (they label a counter):

- ``over_limit``: NVML's memory for a container's processes on a GPU exceeds the limit by more than the
  context overhead per process (each CUDA context holds memory the shim cannot see);
- ``outside_shim``: a process of a kube-vgpu pod the shim does not know (a static binary, raw ioctls, the
  preload removed): its memory and compute are not limited;
- ``wrong_gpu``: a kube-vgpu container's process on a GPU the container was not given;
- ``unmanaged``: a process of no kube-vgpu pod on a GPU kube-vgpu shares (another pod, or the host).

A violation is reported once it is seen in two rounds in a row (a process between context creation and the
shim registering its slot is not one), and once per episode: it is reported again only after it cleared.

A DRA claim's directory may be used by pods other than the one it names (a claim shared by several pods names
the claim itself): a violation there goes to the pod of each process (its cgroup's), never to the directory's
owner; ``over_limit`` is decided on the claim's processes together (the limit is the claim's), and each pod
with a process in it is told.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from vcuda.model import GpuUuid

__all__ = [
    "EVICTABLE",
    "EVENT_REASONS",
    "Episodes",
    "ObservedProcess",
    "PodRef",
    "Reason",
    "Violation",
    "ViolationKey",
    "WatchedContainer",
    "advance",
    "describe",
    "find_violations",
]

MIB: Final = 1 << 20


class Reason(StrEnum):
    OVER_LIMIT = "over_limit"
    OUTSIDE_SHIM = "outside_shim"
    WRONG_GPU = "wrong_gpu"
    UNMANAGED = "unmanaged"


EVENT_REASONS: Final[Mapping[Reason, str]] = {
    Reason.OVER_LIMIT: "GpuMemoryOverLimit",
    Reason.OUTSIDE_SHIM: "GpuProcessOutsideShim",
    Reason.WRONG_GPU: "GpuProcessOnWrongGpu",
    Reason.UNMANAGED: "GpuProcessUnmanaged",
}
EVICTABLE: Final = frozenset({Reason.OVER_LIMIT, Reason.OUTSIDE_SHIM, Reason.WRONG_GPU})
"""Reasons that may evict (when configured): the pod holds a kube-vgpu share and broke its terms. A pod
outside kube-vgpu (``unmanaged``) gets an event only: another component may have given it the GPU."""


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class WatchedContainer:
    """A kube-vgpu container: its limits and what its shim reports, in bytes, per GPU."""

    dir_name: str
    pod: PodRef
    container: str
    limits: Mapping[GpuUuid, int]
    shim_used: Mapping[GpuUuid, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ObservedProcess:
    """One compute process on one GPU as NVML lists it, joined with what the node knows about it.

    ``pod``: the pod its cgroup names (None: a host process, or a pod the API does not know);
    ``owner``: the kube-vgpu container (state directory name) it was attributed to; ``in_shim``: that
    container's shim has a live slot for it; ``container``: its container's name when known otherwise.
    """

    gpu: GpuUuid
    host_pid: int
    used_bytes: int
    pod: PodRef | None = None
    owner: str | None = None
    in_shim: bool = False
    container: str = ""


ViolationKey = tuple[Reason, GpuUuid, str, str]
"""(reason, GPU, pod UID or "", container or "")."""


@dataclass(frozen=True, slots=True)
class Violation:
    reason: Reason
    gpu: GpuUuid
    pod: PodRef | None
    container: str
    pids: tuple[int, ...]
    nvml_bytes: int
    shim_bytes: int = 0
    limit_bytes: int = 0

    @property
    def key(self) -> ViolationKey:
        return (self.reason, self.gpu, self.pod.uid if self.pod else "", self.container)


def find_violations(
    containers: Sequence[WatchedContainer],
    processes: Iterable[ObservedProcess],
    *,
    overhead_bytes: int,
) -> list[Violation]:
    """Every violation in this round, sorted by key. ``processes`` are distinct by (GPU, PID)."""
    by_name = {c.dir_name: c for c in containers}
    managed = {c.pod.uid for c in containers}
    groups: dict[tuple[Reason, GpuUuid, str, str], list[ObservedProcess]] = {}
    for p in processes:
        owner = by_name.get(p.owner or "")
        reason = _reason(p, owner, managed)
        if reason is None:
            continue
        container = owner.container if owner else p.container
        key = (reason, p.gpu, owner.dir_name if owner else (p.pod.uid if p.pod else ""), container)
        groups.setdefault(key, []).append(p)
    found = [v for key, group in groups.items() for v in _violations(key, group, by_name, overhead_bytes)]
    return sorted(found, key=lambda v: v.key)


def _reason(p: ObservedProcess, owner: WatchedContainer | None, managed: set[str]) -> Reason | None:
    if owner is None:
        return Reason.OUTSIDE_SHIM if p.pod is not None and p.pod.uid in managed else Reason.UNMANAGED
    if not p.in_shim:
        return Reason.OUTSIDE_SHIM
    if p.gpu not in owner.limits:
        return Reason.WRONG_GPU
    return Reason.OVER_LIMIT  # a candidate: _violation compares the sum with the limit


def _violations(
    key: tuple[Reason, GpuUuid, str, str],
    group: Sequence[ObservedProcess],
    by_name: Mapping[str, WatchedContainer],
    overhead_bytes: int,
) -> list[Violation]:
    """The group's violation, one per pod it is charged to (several only in a directory pods share)."""
    reason, gpu, _, container = key
    owner = by_name.get(group[0].owner or "") if group[0].owner else None
    used = sum(p.used_bytes for p in group)
    pids = tuple(sorted(p.host_pid for p in group))
    if owner is None:
        return [Violation(reason, gpu, group[0].pod, container, pids, used)]
    limit = owner.limits.get(gpu, 0)
    shim = owner.shim_used.get(gpu, 0)
    if reason is Reason.OVER_LIMIT and used <= limit + overhead_bytes * len(group):
        return []
    by_pod: dict[PodRef, list[ObservedProcess]] = {}
    for p in group:
        by_pod.setdefault(_charged(p, owner), []).append(p)
    if reason is Reason.OVER_LIMIT:  # the claim's limit, broken by its processes together
        return [Violation(reason, gpu, pod, container, pids, used, shim, limit) for pod in by_pod]
    return [
        Violation(
            reason, gpu, pod, container, tuple(sorted(p.host_pid for p in mine)),
            sum(p.used_bytes for p in mine), shim, limit,
        )
        for pod, mine in by_pod.items()
    ]  # fmt: skip


def _charged(p: ObservedProcess, owner: WatchedContainer) -> PodRef:
    """The pod a placed process's violation goes to: its own (its cgroup's) when it runs in a directory that
    names another pod or a DRA claim shared by pods, else the directory's."""
    return p.pod if p.pod is not None and p.pod.uid != owner.pod.uid else owner.pod


def describe(v: Violation, overhead_bytes: int) -> str:
    """The event message: what was seen, in MiB, and what the rule is."""
    pids = ", ".join(map(str, v.pids))
    nvml = f"NVML reports {v.nvml_bytes // MIB} MiB for PID {pids} on GPU {v.gpu}"
    if v.reason is Reason.OVER_LIMIT:
        allowed = v.limit_bytes + overhead_bytes * len(v.pids)
        return (
            f"{nvml}, over the limit of {v.limit_bytes // MIB} MiB plus {overhead_bytes // MIB} MiB context "
            f"overhead per process ({allowed // MIB} MiB); the shim reports {v.shim_bytes // MIB} MiB"
        )
    if v.reason is Reason.OUTSIDE_SHIM:
        return f"{nvml}: the process is not running under the kube-vgpu shim, so no limit applies to it"
    if v.reason is Reason.WRONG_GPU:
        return f"{nvml}, a GPU container {v.container} was not given"
    return f"{nvml}: the process belongs to no kube-vgpu container on a GPU kube-vgpu shares"


@dataclass(frozen=True, slots=True)
class Episodes:
    """Violations seen last round (``pending``) and those already reported and still present (``active``)."""

    pending: frozenset[ViolationKey] = frozenset()
    active: frozenset[ViolationKey] = frozenset()


def advance(state: Episodes, now: Sequence[Violation]) -> tuple[Episodes, list[Violation]]:
    """The next state and the violations to report now: seen in this round and the last, not yet reported."""
    keys = frozenset(v.key for v in now)
    report = [v for v in now if v.key in state.pending and v.key not in state.active]
    active = (state.active & keys) | {v.key for v in report}
    return Episodes(pending=keys, active=frozenset(active)), report
