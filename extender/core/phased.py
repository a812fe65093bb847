"""Placing a pod with init containers or sidecars as the kubelet admits it. Pure.

Container by container in kubelet order (:mod:`extender.core.initreuse`): each container goes first on the
slices its init containers left to reuse, so an app container runs on its init container's GPU, and every fit
is checked against what the pod then holds (the larger of its phases), not the sum of its containers. The
policy's first choice for each container is tried first, then the others, depth first, at most
:data:`PHASED_TRIES` dead ends: an init container's GPU must also hold the containers that will reuse it.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from extender.core.initreuse import PodHold, admit, charges, held, reused
from extender.core.load import GpuLoad, NodeLoad, reserve
from extender.core.rejection import (
    Rejection,
    RejectReason,
    exclusive_rejection,
    random_reuse,
    reuse_full,
    share_rejection,
    spread_reuse,
)
from extender.core.topology import LinkMap, best_connected
from vcuda.model import ContainerAssignment, ContainerRequest, GpuInfo, GpuShare, GpuUuid, PodRequest
from vcuda.units import CORE_PER_GPU

__all__ = ["PHASED_TRIES", "GpuKey", "place_phased"]

GpuKey = Callable[[int, int], tuple[int, int]]
"""What a GPU policy minimises over fitting GPUs: (free cores after, free MiB after)."""
_IDLE: Final = GpuLoad()

PHASED_TRIES: Final = 16
"""Dead ends explored before a pod with init containers is refused on a node (bounds the filter's cost)."""


def place_phased(
    gpus: Sequence[GpuInfo], load: NodeLoad, request: PodRequest, key: GpuKey, links: LinkMap
) -> tuple[ContainerAssignment, ...] | Rejection:
    """Init containers and sidecars: in kubelet order, each container on the slices it will reuse first.
    The policy's first choice for each container, then the others (depth first, at most
    :data:`PHASED_TRIES` dead ends): an init container's GPU must also hold the app containers reusing it."""
    tries = [PHASED_TRIES]
    return _phased_from(gpus, load, request, key, links, PodHold(), 0, tries)


def _phased_from(
    gpus: Sequence[GpuInfo],
    load: NodeLoad,
    request: PodRequest,
    key: GpuKey,
    links: LinkMap,
    hold: PodHold,
    index: int,
    tries: list[int],
) -> tuple[ContainerAssignment, ...] | Rejection:
    if index == len(request.containers):
        return ()
    container = request.containers[index]
    taken = reused(hold.pool, container.cores)
    if taken is None:
        return random_reuse(container, hold)
    if container.exclusive:
        options = _place_exclusive_reusing(gpus, load, hold, container, taken, links)
    else:
        options = _share_options(gpus, load, hold, container, taken, key, request.core_limit)
    if isinstance(options, Rejection):
        return options
    first: Rejection | None = None
    for option in options:
        rest = _phased_from(gpus, load, request, key, links, admit(hold, container, option), index + 1, tries)
        if not isinstance(rest, Rejection):
            return (option, *rest)
        first = first or rest
        tries[0] -= 1
        if tries[0] <= 0:
            break
    assert first is not None
    return first


def _phased_fit(
    gpu: GpuInfo, load: NodeLoad, hold: PodHold, container: ContainerRequest, shares: tuple[GpuShare, ...]
) -> tuple[int, int]:
    """(free cores, free MiB) left on ``gpu`` once the pod also holds ``shares`` for ``container``."""
    trial = ContainerAssignment(container.name, shares, core_limit=0)
    mine = held(admit(hold, container, trial)).get(gpu.uuid, _IDLE)
    other = load.get(gpu.uuid, _IDLE)
    return CORE_PER_GPU - other.cores - mine.cores, gpu.memory_mib - other.memory_mib - mine.memory_mib


def _share_options(
    gpus: Sequence[GpuInfo],
    load: NodeLoad,
    hold: PodHold,
    container: ContainerRequest,
    taken: Mapping[GpuUuid, int],
    key: GpuKey,
    core_limit: int | None,
) -> list[ContainerAssignment] | Rejection:
    """A share of one GPU, best first: the GPU of the slices it reuses when it reuses any, else every GPU
    where it fits, in the policy's order."""
    if len(taken) > 1:
        return spread_reuse(container, taken)
    forced = next(iter(taken), None)
    fitting: list[tuple[tuple[int, int], str, GpuInfo]] = []
    for gpu in gpus:
        if forced is not None and gpu.uuid != forced:
            continue
        trial = (GpuShare(gpu.uuid, container.cores, container.memory_mib),)
        cores_left, mib_left = _phased_fit(gpu, load, hold, container, trial)
        if cores_left >= 0 and mib_left >= 0:
            fitting.append((key(cores_left, mib_left), gpu.uuid, gpu))
    if not fitting:
        if forced is not None:
            return reuse_full(container, forced)
        return share_rejection(gpus, reserve(load, charges(hold)), container)
    limit = max(container.cores, core_limit or 0)
    return [
        ContainerAssignment(container.name, (GpuShare(g.uuid, container.cores, container.memory_mib),), limit)
        for _, _, g in sorted(fitting, key=lambda f: f[:2])
    ]


def _place_exclusive_reusing(
    gpus: Sequence[GpuInfo],
    load: NodeLoad,
    hold: PodHold,
    container: ContainerRequest,
    taken: Mapping[GpuUuid, int],
    links: LinkMap,
) -> list[ContainerAssignment] | Rejection:
    """Whole GPUs: every GPU it reuses slices of must become wholly its own, the rest idle GPUs."""
    wanted = container.gpu_count
    usable = {g.uuid: g for g in gpus if g.memory_mib >= container.memory_mib}
    own = {g: n - hold.pool.get(g, 0) for g, n in hold.cores.items()}  # held by sidecars and apps
    must = [usable.get(g) for g in sorted(taken)]
    if len(taken) > wanted or any(g is None or not _whole(g, load, own) for g in must):
        where = ", ".join(sorted(taken))
        return Rejection(
            RejectReason.INIT_REUSE,
            f"container {container.name!r} asks {wanted} whole GPUs and reuses its init containers' slices "
            f"on {where}, which cannot all become wholly its own",
            resolvable=len(taken) <= wanted,
        )
    chosen_must = [g for g in must if g is not None]
    idle = [
        g
        for g in usable.values()
        if g.uuid not in taken and _whole(g, load, own) and not hold.cores.get(g.uuid)
    ]
    if len(idle) + len(chosen_must) < wanted:
        return exclusive_rejection(len(usable), len(idle) + len(chosen_must), container)
    chosen = best_connected([*chosen_must, *idle], wanted, links, must_include=chosen_must)
    shares = tuple(GpuShare(g.uuid, CORE_PER_GPU, g.memory_mib) for g in chosen)
    return [ContainerAssignment(container.name, shares, core_limit=CORE_PER_GPU)]


def _whole(gpu: GpuInfo, load: NodeLoad, own: Mapping[GpuUuid, int]) -> bool:
    """No other pod and none of this pod's running containers holds anything on the GPU."""
    return load.get(gpu.uuid, _IDLE).idle and not own.get(gpu.uuid)
