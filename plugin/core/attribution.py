"""Which pod and container a kubelet call is for. Standard library only.

The kubelet's ``GetPreferredAllocation`` and ``Allocate`` carry no pod identity, only device IDs. The extender
records each container's GPUs in a signed assignment when it binds the pod, so the plugin knows the
*candidates*: the GPU containers of pods bound to this node that are not allocated yet. Then:

- :func:`prefer` steers the kubelet to the GPUs of the most likely candidate of the requested size: a pod
  already part-way through admission first (the kubelet allocates a pod's containers one after another),
  then the pod known to be admitted now (listed by PodResources), then the oldest pod, then container order.
- :func:`attribute` picks, for the IDs the kubelet actually chose, a candidate whose recorded GPUs are exactly
  those IDs' GPUs with as many slices each; several matches are resolved by the same priority.
- ``plugin.core.verify.verify`` (``PreStartContainer``) compares the attribution with PodResources'
  answer: the same container is confirmed; an interchangeable container (identical request, constraints
  and core limit) may have swapped places; anything else is a mismatch and the container must not start.

Init containers: the kubelet gives later containers of the pod the IDs its init containers held first (the
extender places them on those GPUs), so an app container's IDs may be an init container's; and PodResources
lists app containers and sidecars only, so :func:`unlisted_init` confirms a regular init container by its pod.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from plugin.core.errors import AllocationError
from plugin.core.slices import gpu_split, parse_slice_id
from vcuda.model import (
    Constraints,
    ContainerAssignment,
    ContainerKind,
    ContainerRequest,
    GpuUuid,
    PodAssignment,
    PodRequest,
)

__all__ = [
    "Candidate",
    "ContainerKey",
    "PendingPod",
    "PodRef",
    "attribute",
    "candidates",
    "container_name",
    "interchangeable",
    "prefer",
    "shortfall",
    "unlisted_init",
]


@dataclass(frozen=True, slots=True, order=True)
class PodRef:
    """A pod by namespace, name and UID (the extender's ``PodKey`` is the UID alone)."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True, order=True)
class ContainerKey:
    pod: PodRef
    container: str


@dataclass(frozen=True, slots=True)
class PendingPod:
    """A pod bound to this node with a valid assignment. ``allocated``: containers already attributed."""

    key: PodRef
    created: str
    request: PodRequest
    assignment: PodAssignment
    allocated: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Candidate:
    """One not-yet-allocated GPU container; ``rank`` orders candidates (lower = more likely next)."""

    key: ContainerKey
    request: ContainerRequest
    assignment: ContainerAssignment
    constraints: Constraints
    rank: tuple[int, int, str, PodRef, int]

    @property
    def split(self) -> dict[GpuUuid, int]:
        return {s.uuid: s.cores for s in self.assignment.shares}


def candidates(pods: Iterable[PendingPod], admitting: frozenset[PodRef] = frozenset()) -> list[Candidate]:
    """Every unallocated GPU container with an assignment, best first."""
    found: list[Candidate] = []
    for pod in pods:
        in_progress = 0 if pod.allocated else 1
        known = 0 if pod.key in admitting else 1
        for index, request in enumerate(pod.request.containers):
            assigned = pod.assignment.container(request.name)
            if request.name in pod.allocated or assigned is None or assigned.cores != request.cores:
                continue
            rank = (in_progress, known, pod.created, pod.key, index)
            key = ContainerKey(pod.key, request.name)
            found.append(Candidate(key, request, assigned, pod.request.constraints, rank))
    return sorted(found, key=lambda c: c.rank)


def prefer(
    ranked: Sequence[Candidate], available: Sequence[str], must_include: Sequence[str], size: int
) -> list[str]:
    """The IDs to suggest: the best candidate's GPUs, lowest slice numbers first, else a plain pick."""
    by_gpu: dict[GpuUuid, list[tuple[int, str]]] = {}
    for text in available:
        uuid, n = parse_slice_id(text)
        by_gpu.setdefault(uuid, []).append((n, text))
    must = gpu_split(must_include)
    for cand in ranked:
        split = cand.split
        if cand.request.cores != size or any(split.get(u, 0) < k for u, k in must.items()):
            continue
        chosen = _take(split, by_gpu, must_include)
        if chosen is not None:
            return chosen
    rest = sorted(set(available) - set(must_include))
    return [*must_include, *rest][:size]


def shortfall(
    ranked: Sequence[Candidate], available: Sequence[str], must_include: Sequence[str], size: int
) -> tuple[Candidate, dict[GpuUuid, int]] | None:
    """The best candidate of ``size`` and, per GPU of its assignment, how many slices the kubelet's offer
    lacks; None when no candidate has that size. (An empty dict: the offer covers it.)"""
    best = next((c for c in ranked if c.request.cores == size), None)
    if best is None:
        return None
    offered = gpu_split(set(available) | set(must_include))
    return best, {u: k - offered.get(u, 0) for u, k in sorted(best.split.items()) if offered.get(u, 0) < k}


def _take(
    split: Mapping[GpuUuid, int], by_gpu: Mapping[GpuUuid, list[tuple[int, str]]], must_include: Sequence[str]
) -> list[str] | None:
    chosen = list(must_include)
    have = gpu_split(must_include)
    for uuid, count in sorted(split.items()):
        free = [t for _, t in sorted(by_gpu.get(uuid, [])) if t not in must_include]
        need = count - have.get(uuid, 0)
        if len(free) < need:
            return None
        chosen += free[:need]
    return chosen


def attribute(ranked: Sequence[Candidate], ids: Sequence[str]) -> tuple[Candidate, bool]:
    """The candidate the IDs belong to, and whether the choice was ambiguous (non-interchangeable matches)."""
    split = gpu_split(ids)
    matches = [c for c in ranked if c.split == split]
    if not matches:
        where = ", ".join(f"{u} x{k}" for u, k in sorted(split.items()))
        raise AllocationError(f"no pending container on this node is assigned {len(ids)} slices as [{where}]")
    best = matches[0]
    return best, any(not interchangeable(best, other) for other in matches[1:])


def interchangeable(a: Candidate, b: Candidate) -> bool:
    """Identical requests, selection constraints and limits: either may run with the other's record."""
    shape_a = sorted((s.cores, s.memory_mib) for s in a.assignment.shares)
    shape_b = sorted((s.cores, s.memory_mib) for s in b.assignment.shares)
    return (
        (a.request.cores, a.request.memory_mib) == (b.request.cores, b.request.memory_mib)
        and a.constraints == b.constraints
        and a.assignment.core_limit == b.assignment.core_limit
        and shape_a == shape_b
    )


def container_name(key: ContainerKey) -> str:
    return f"{key.pod.namespace}/{key.pod.name}/{key.container}"


def unlisted_init(
    owner: ContainerKey,
    pod: PendingPod | None,
    listed: Iterable[tuple[str, str, frozenset[str]]],
    ids: frozenset[str],
) -> bool:
    """True when ``owner`` is a regular init container of ``pod`` holding ``ids`` as far as PodResources can
    tell: ``List`` never reports regular init containers (only app containers and sidecars), so its pod must
    be listed and no container of another pod may hold any of the IDs (the pod's own app containers may: the
    kubelet reuses init containers' IDs). ``listed``: (namespace, pod, IDs) per listed container."""
    request = next((c for c in pod.request.containers if c.name == owner.container), None) if pod else None
    if request is None or request.kind is not ContainerKind.INIT:
        return False
    home = (owner.pod.namespace, owner.pod.name)
    seen = False
    for namespace, name, held in listed:
        if (namespace, name) == home:
            seen = True
        elif held & ids:
            return False
    return seen
