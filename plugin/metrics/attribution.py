"""Attribute NVML's per-process samples to kube-vgpu containers. Pure: the file reads arrive as values.

A host PID's cgroup names its pod (UID) and container (ID). The pod's kube-vgpu containers come from the state
directory; when the pod has several, the container ID is looked up in ``container_ids`` (from the pods'
``status.containerStatuses``), or the PID is matched against the shim's process slots (host PID, or namespaced
PID + start time). A container ID placed once places every other PID with that ID. Samples are deduplicated by
(GPU, PID) first, so nothing is counted twice.

DRA: a ResourceClaim's state directory is ``<pod-uid>_dra-<claim-uid>`` (container ``dra-<claim-uid>`` in its
config), shared by every container of the pod that uses the claim. A PID whose container ID names a container
with no directory of its own goes to the pod's claim that container uses (``claims``: the kubelet's
PodResources ``dynamic_resources``); with several such claims, the shim's slots decide among them. A claim's
directory may name a pod other than the process's, or the claim itself (a claim shared by several pods, or
used by a pod it was not made for, :mod:`plugin.core.dra`): no cgroup names it, so ``shared`` (pod UID ->
the directories of the claims that pod uses) makes it one of that pod's candidates.
"""

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugin.core.dra import claim_of_container
from plugin.metrics.cgroups import CgroupRef
from plugin.metrics.procfs import NamespacedPid
from plugin.metrics.sources import ContainerName, ProcessSample
from plugin.metrics.usage import ContainerState
from vcuda.model import GpuUuid

__all__ = [
    "Attribution",
    "Evidence",
    "ProcessTotals",
    "attribute",
    "container_ids_from_pods",
    "dedupe_samples",
    "dra_claim_uid",
    "owners",
    "runs_under_shim",
]


@dataclass(slots=True)
class ProcessTotals:
    """NVML readings summed over one container's distinct processes on one GPU."""

    memory_used_bytes: int = 0
    utilization: float = 0.0
    pids: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Attribution:
    """``by_container`` is keyed by (state directory name, GPU UUID)."""

    by_container: Mapping[tuple[str, GpuUuid], ProcessTotals]
    unattributed: Mapping[GpuUuid, int]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What ties a host PID to a container besides the shims' slots (the exporter and the watchdog read it
    each round): its cgroup (pod UID, container ID), the pods' status container IDs, its PID inside its
    namespace; for DRA, the claims each live container uses (PodResources) and the claim directories each pod
    uses (``shared``: pod UID -> directory names, whatever pod they name)."""

    cgroups: Mapping[int, CgroupRef | None]
    container_ids: Mapping[str, str]
    namespaced_pid: Callable[[int], NamespacedPid | None]
    claims: Mapping[ContainerName, frozenset[str]] | None = None
    shared: Mapping[str, Collection[str]] | None = None


def dedupe_samples(samples: Iterable[ProcessSample]) -> list[ProcessSample]:
    """One sample per (GPU, PID): the largest memory and utilisation seen for it."""
    best: dict[tuple[GpuUuid, int], ProcessSample] = {}
    for s in samples:
        old = best.get((s.gpu_uuid, s.host_pid))
        if old is not None:
            s = ProcessSample(
                s.gpu_uuid,
                s.host_pid,
                max(s.memory_used_bytes, old.memory_used_bytes),
                max(s.utilization, old.utilization),
            )
        best[(s.gpu_uuid, s.host_pid)] = s
    return list(best.values())


def attribute(
    samples: Sequence[ProcessSample],
    containers: Sequence[ContainerState],
    evidence: Evidence,
    *,
    live: Collection[str] | None = None,
) -> Attribution:
    """Sum deduplicated samples per (container, GPU); count the PIDs no live kube-vgpu container owns.

    ``containers`` should be every container with a state directory, even those the kubelet no longer lists,
    so that a dead sibling's PID is not pinned on the pod's one remaining container; ``live`` (state directory
    names) then decides which owners are reported.
    """
    placed = owners({s.host_pid for s in samples}, containers, evidence)
    if live is not None:
        placed = {pid: owner for pid, owner in placed.items() if owner in live}
    by_container: dict[tuple[str, GpuUuid], ProcessTotals] = {}
    unattributed: dict[GpuUuid, int] = {}
    for s in dedupe_samples(samples):
        owner = placed.get(s.host_pid)
        if owner is None:
            unattributed[s.gpu_uuid] = unattributed.get(s.gpu_uuid, 0) + 1
            continue
        totals = by_container.setdefault((owner, s.gpu_uuid), ProcessTotals())
        totals.memory_used_bytes += s.memory_used_bytes
        totals.utilization += s.utilization
        totals.pids.add(s.host_pid)
    return Attribution(by_container, unattributed)


def runs_under_shim(
    pid: int, container: ContainerState, namespaced_pid: Callable[[int], NamespacedPid | None]
) -> bool:
    """True when the container's shim has a live slot for this host PID (by host PID, or by namespaced PID
    and start time, as the shim records itself from inside its PID namespace)."""
    if any(p.host_pid == pid for p in container.processes):
        return True
    me = namespaced_pid(pid) if container.processes else None
    return me is not None and any(
        (p.pid, p.start_time) == (me.pid, me.start_time) for p in container.processes
    )


def owners(pids: Iterable[int], containers: Sequence[ContainerState], evidence: Evidence) -> dict[int, str]:
    """Host PID -> state directory name of the owning container, for the PIDs that can be placed (the
    exporter's :func:`attribute` and the watchdog use the same rules).

    Evidence first (pod status container IDs, shim slots); then a container ID placed by evidence places
    its other PIDs; last, a pod's only GPU container takes a PID unless evidence tied it to another ID.
    """
    cgroups, container_ids, nspid = evidence.cgroups, evidence.container_ids, evidence.namespaced_pid
    by_pod = _candidates(containers, evidence.shared or {})
    found: dict[int, str] = {}
    placed_ids: dict[str, str] = {}
    undecided: list[tuple[int, CgroupRef]] = []
    for pid in sorted(pids):
        ref = cgroups.get(pid)
        if ref is None or ref.pod_uid not in by_pod:
            continue
        candidates = by_pod[ref.pod_uid]
        if ref.container_id is not None and ref.container_id in container_ids:
            owner = _named_owner(pid, container_ids[ref.container_id], candidates, evidence)
        else:
            owner = _match_slots(pid, candidates, nspid)
            if owner is None:
                undecided.append((pid, ref))
                continue
        if owner is not None:
            found[pid] = owner
            if ref.container_id is not None:
                placed_ids[ref.container_id] = owner
    for pid, ref in undecided:
        owner = _fallback_owner(ref, by_pod[ref.pod_uid], placed_ids)
        if owner is not None:
            found[pid] = owner
    return found


def _candidates(
    containers: Sequence[ContainerState], shared: Mapping[str, Collection[str]]
) -> dict[str, list[ContainerState]]:
    """Pod UID -> the directories its processes may belong to: those naming it, and the claims it uses."""
    by_pod: dict[str, list[ContainerState]] = {}
    for c in containers:
        by_pod.setdefault(c.config.pod_uid, []).append(c)
    by_name = {c.name: c for c in containers}
    for pod_uid, names in shared.items():
        mine = by_pod.get(pod_uid, [])
        own = {c.name for c in mine}
        extra = [by_name[n] for n in sorted(names) if n in by_name and n not in own]
        if extra:
            by_pod[pod_uid] = [*mine, *extra]
    return by_pod


def dra_claim_uid(container: ContainerState) -> str | None:
    """The claim UID of a DRA claim's state directory (config container ``dra-<uid>``), else None."""
    return claim_of_container(container.config.container)


def _named_owner(pid: int, name: str, candidates: Sequence[ContainerState], evidence: Evidence) -> str | None:
    """The directory of container ``name`` itself, else of the DRA claim it uses (the shim's slots decide
    among several)."""
    owner = next((c.name for c in candidates if c.config.container == name), None)
    if owner is not None:
        return owner
    namespaces = {c.config.namespace for c in candidates}
    claims = evidence.claims or {}
    used = {uid for key, uids in claims.items() if key.container == name and key.namespace in namespaces
            for uid in uids}  # fmt: skip
    mine = [c for c in candidates if dra_claim_uid(c) in used]
    if len(mine) <= 1:
        return mine[0].name if mine else None
    return _match_slots(pid, mine, evidence.namespaced_pid)


def _fallback_owner(
    ref: CgroupRef, candidates: Sequence[ContainerState], placed_ids: Mapping[str, str]
) -> str | None:
    if ref.container_id is not None and ref.container_id in placed_ids:
        return placed_ids[ref.container_id]
    if len(candidates) != 1:
        return None
    only = candidates[0].name
    tied_elsewhere = any(owner == only and cid != ref.container_id for cid, owner in placed_ids.items())
    return None if tied_elsewhere else only


def _match_slots(
    pid: int, candidates: Sequence[ContainerState], namespaced_pid: Callable[[int], NamespacedPid | None]
) -> str | None:
    """The one candidate whose shim slots record this host PID, or (with several candidates only, as it costs
    two file reads) its namespaced PID and start time."""
    by_host = {c.name for c in candidates for p in c.processes if p.host_pid == pid}
    if len(by_host) == 1:
        return by_host.pop()
    me = namespaced_pid(pid) if len(candidates) > 1 else None
    if me is None:
        return None
    by_ns = {
        c.name for c in candidates for p in c.processes if (p.pid, p.start_time) == (me.pid, me.start_time)
    }
    return by_ns.pop() if len(by_ns) == 1 else None


def container_ids_from_pods(pods: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Container ID -> container name from pod objects' ``status`` (``containerd://<id>``, ``cri-o://``, ...).

    The plugin passes the pods it already watches on its node; init containers are included.
    """
    out: dict[str, str] = {}
    for pod in pods:
        status = pod.get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for c in status.get(key) or ():
                _, sep, container_id = str(c.get("containerID") or "").partition("://")
                if sep and container_id and c.get("name"):
                    out[container_id] = str(c["name"])
    return out
