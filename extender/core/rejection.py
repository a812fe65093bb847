"""Why a pod does not fit a node: a typed reason and the sentence a user reads in ``kubectl describe``."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from extender.core.initreuse import PodHold
from extender.core.load import NodeLoad, free_space
from vcuda.model import ContainerRequest, GpuInfo, GpuUuid

__all__ = [
    "RejectReason",
    "Rejection",
    "exclusive_rejection",
    "free_share_rejection",
    "random_reuse",
    "reuse_full",
    "share_rejection",
    "spread_reuse",
]


class RejectReason(StrEnum):
    NO_GPUS = "no-gpus"
    NO_MATCHING_GPU = "no-matching-gpu"
    NO_HEALTHY_GPU = "no-healthy-gpu"
    TOO_LARGE = "too-large"
    INSUFFICIENT_MEMORY = "insufficient-memory"
    INSUFFICIENT_CORES = "insufficient-cores"
    INSUFFICIENT_GPUS = "insufficient-gpus"
    INIT_REUSE = "init-reuse"
    # decided outside placement, by the scheduler over its ledgers:
    NO_INVENTORY = "no-inventory"
    INVENTORY_REFUSED = "inventory-refused"
    TIME_BUDGET = "time-budget"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the pod does not fit. ``resolvable`` is False when no change in load can ever make it fit."""

    reason: RejectReason
    detail: str
    resolvable: bool


def share_rejection(gpus: Sequence[GpuInfo], load: NodeLoad, container: ContainerRequest) -> Rejection:
    """Why no GPU of ``gpus`` (not empty) takes ``container``'s fractional share under ``load``."""
    largest = max(g.memory_mib for g in gpus)
    return free_share_rejection(free_space(gpus, load), largest, container.cores, container.memory_mib)


def free_share_rejection(
    free: Sequence[tuple[int, int]], largest_mib: int, cores: int, mib: int
) -> Rejection:
    """Why a (``cores``, ``mib``) share fits none of the GPUs with ``free`` (free cores, free MiB) each (not
    empty), the largest of which has ``largest_mib``: the one rule behind ``place_pod``'s answer and the
    summary's (:mod:`extender.core.summary`), so both give the same sentence."""
    if mib > largest_mib:
        return Rejection(
            RejectReason.TOO_LARGE, f"no GPU has {mib} MiB, the largest has {largest_mib}", resolvable=False
        )
    most_memory = max((m for c, m in free if c >= cores), default=None)
    if most_memory is not None:
        return Rejection(
            RejectReason.INSUFFICIENT_MEMORY,
            f"no single GPU has {mib} MiB free, the largest has {most_memory}",
            resolvable=True,
        )
    most_cores = max(c for c, _ in free)
    return Rejection(
        RejectReason.INSUFFICIENT_CORES,
        f"no GPU has {cores} % compute free, the most free is {most_cores} %",
        resolvable=True,
    )


def exclusive_rejection(matching: int, idle: int, container: ContainerRequest) -> Rejection:
    wanted = container.gpu_count
    memory = f" with {container.memory_mib} MiB" if container.memory_mib else ""
    if matching < wanted:
        return Rejection(
            RejectReason.TOO_LARGE,
            f"needs {wanted} whole GPUs{memory}, the node has {matching} usable",
            resolvable=False,
        )
    return Rejection(
        RejectReason.INSUFFICIENT_GPUS,
        f"needs {wanted} idle GPUs{memory}, the node has {idle} idle",
        resolvable=True,
    )


def random_reuse(container: ContainerRequest, hold: PodHold) -> Rejection:
    pool = {g: n for g, n in hold.pool.items() if n > 0}
    return Rejection(
        RejectReason.INIT_REUSE,
        f"container {container.name!r} asks {container.cores} vcuda-core but its init containers leave "
        f"{sum(pool.values())} slices on {len(pool)} GPUs, which the kubelet reuses first, picking at "
        "random: no assignment can say which GPUs it gets (ask for all of them, or run it in another pod)",
        resolvable=False,
    )


def spread_reuse(container: ContainerRequest, taken: Mapping[GpuUuid, int]) -> Rejection:
    return Rejection(
        RejectReason.INIT_REUSE,
        f"container {container.name!r} asks a share of one GPU but the kubelet would first give it the "
        f"slices its init containers held on {len(taken)} GPUs ({', '.join(sorted(taken))})",
        resolvable=False,
    )


def reuse_full(container: ContainerRequest, gpu: GpuUuid) -> Rejection:
    return Rejection(
        RejectReason.INIT_REUSE,
        f"container {container.name!r} reuses its init containers' slices on GPU {gpu}, "
        f"which has no room left for its {container.cores} % compute and {container.memory_mib} MiB",
        resolvable=True,
    )
