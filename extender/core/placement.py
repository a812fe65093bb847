"""Where a pod's GPU containers go on one node: the pure placement core both the filter and bind trust.

``place_pod`` returns a :class:`Placement` (per container: GPU shares and the soft limit, plus a 0..10 node
score) or a typed :class:`Rejection` whose ``detail`` is the sentence a user reads in ``kubectl describe``.
Deterministic: the same input gives the same output, ties end on the GPU UUID.

A pod with init containers or sidecars is placed as the kubelet admits it (:mod:`extender.core.initreuse`):
container by container, each first on the slices its init containers left to reuse, so an app container runs
on its init container's GPU; what the pod reserves is what it holds, the larger of its phases, not the sum.
Shapes where the kubelet's choice among reusable slices is random (a container smaller than the slices left
by init containers spread over several GPUs) are refused: no assignment could say where it runs.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from extender.core.initreuse import net_charges, plain
from extender.core.load import GpuLoad, NodeLoad, reserve
from extender.core.phased import place_phased
from extender.core.rejection import Rejection, RejectReason, exclusive_rejection, share_rejection
from extender.core.score import node_score
from extender.core.topology import LinkMap, best_connected, link_map
from vcuda.model import (
    ContainerAssignment,
    ContainerRequest,
    GpuInfo,
    GpuShare,
    NodeInventory,
    PodRequest,
    Policy,
)
from vcuda.units import CORE_PER_GPU

__all__ = ["Placement", "RejectReason", "Rejection", "place_pod"]

_IDLE: Final = GpuLoad()


@dataclass(frozen=True, slots=True)
class Placement:
    """``containers``: each container's GPUs (the assignment); ``reserved``: what the ledger holds for the
    pod (the containers themselves, or their net when init containers' slices are reused)."""

    containers: tuple[ContainerAssignment, ...]
    score: int
    reserved: tuple[ContainerAssignment, ...] = ()


# The key a GPU policy minimises over fitting GPUs: (free cores after, free MiB after).
_GpuKey = Callable[[int, int], tuple[int, int]]
GPU_POLICIES: Final[Mapping[Policy, _GpuKey]] = {
    Policy.BINPACK: lambda cores_left, mib_left: (cores_left, mib_left),
    Policy.SPREAD: lambda cores_left, mib_left: (-cores_left, -mib_left),
}


def place_pod(
    inventory: NodeInventory,
    load: NodeLoad,
    request: PodRequest,
    *,
    gpu_policy: Policy,
    node_policy: Policy,
) -> Placement | Rejection:
    gpus = _usable_gpus(inventory, request)
    if isinstance(gpus, Rejection):
        return gpus
    links = link_map(inventory.links)
    policy = request.constraints.gpu_policy or gpu_policy
    placed = (
        _place_plain(gpus, load, request, policy, links)
        if plain(request.containers)
        else place_phased(gpus, load, request, GPU_POLICIES[policy], links)
    )
    if isinstance(placed, Rejection):
        return placed
    reserved = net_charges(request.containers, placed)
    wanted = request.constraints.node_policy or node_policy
    return Placement(placed, _score(inventory, reserve(load, reserved), wanted is Policy.BINPACK), reserved)


def _place_plain(
    gpus: Sequence[GpuInfo], load: NodeLoad, request: PodRequest, policy: Policy, links: LinkMap
) -> tuple[ContainerAssignment, ...] | Rejection:
    """Only app containers: each takes fresh slices, the pod holds their sum."""
    working: NodeLoad = load
    placed: list[ContainerAssignment] = []
    for container in request.containers:
        result = _place_container(gpus, working, container, policy, links, request.core_limit)
        if isinstance(result, Rejection):
            return result
        placed.append(result)
        working = reserve(working, [result])
    return tuple(placed)


def _score(inventory: NodeInventory, load: NodeLoad, binpack: bool) -> int:
    """The node score with ``load`` given out (``inventory`` has GPUs)."""
    return node_score(
        used_cores=sum(load.get(g.uuid, _IDLE).cores for g in inventory.gpus),
        core_capacity=CORE_PER_GPU * len(inventory.gpus),
        used_mib=sum(load.get(g.uuid, _IDLE).memory_mib for g in inventory.gpus),
        memory_capacity=sum(g.memory_mib for g in inventory.gpus) or 1,
        binpack=binpack,
    )


def _usable_gpus(inventory: NodeInventory, request: PodRequest) -> list[GpuInfo] | Rejection:
    if not inventory.gpus:
        return Rejection(RejectReason.NO_GPUS, "node has no GPUs", resolvable=False)
    matching = [g for g in inventory.gpus if request.constraints.accepts(g)]
    if not matching:
        return Rejection(
            RejectReason.NO_MATCHING_GPU,
            "no GPU on the node matches the pod's GPU model or UUID selection",
            resolvable=False,
        )
    healthy = [g for g in matching if g.healthy]
    if not healthy:
        return Rejection(RejectReason.NO_HEALTHY_GPU, "every matching GPU is unhealthy", resolvable=True)
    return healthy


def _place_container(
    gpus: Sequence[GpuInfo],
    load: NodeLoad,
    container: ContainerRequest,
    policy: Policy,
    links: LinkMap,
    core_limit: int | None,
) -> ContainerAssignment | Rejection:
    if container.exclusive:
        return _place_exclusive(gpus, load, container, links)
    return _place_share(gpus, load, container, policy, core_limit)


def _place_share(
    gpus: Sequence[GpuInfo],
    load: NodeLoad,
    container: ContainerRequest,
    policy: Policy,
    core_limit: int | None,
) -> ContainerAssignment | Rejection:
    key = GPU_POLICIES[policy]
    best: tuple[tuple[int, int], str, GpuInfo] | None = None
    for gpu in gpus:
        used = load.get(gpu.uuid, _IDLE)
        cores_left = CORE_PER_GPU - used.cores - container.cores
        mib_left = gpu.memory_mib - used.memory_mib - container.memory_mib
        if cores_left < 0 or mib_left < 0:
            continue
        candidate = (key(cores_left, mib_left), gpu.uuid, gpu)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    if best is None:
        return share_rejection(gpus, load, container)
    share = GpuShare(best[2].uuid, container.cores, container.memory_mib)
    limit = max(container.cores, core_limit or 0)
    return ContainerAssignment(container.name, (share,), core_limit=limit)


def _place_exclusive(
    gpus: Sequence[GpuInfo], load: NodeLoad, container: ContainerRequest, links: LinkMap
) -> ContainerAssignment | Rejection:
    wanted = container.gpu_count
    big_enough = [g for g in gpus if g.memory_mib >= container.memory_mib]
    idle = [g for g in big_enough if load.get(g.uuid, _IDLE).idle]
    if len(idle) < wanted:
        return exclusive_rejection(len(big_enough), len(idle), container)
    chosen = best_connected(idle, wanted, links)
    shares = tuple(GpuShare(g.uuid, CORE_PER_GPU, g.memory_mib) for g in chosen)
    return ContainerAssignment(container.name, shares, core_limit=CORE_PER_GPU)
