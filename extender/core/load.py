"""How much of each GPU is taken: the ledger values placement reads, with pure reserve and release."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vcuda.model import ContainerAssignment, GpuInfo, GpuUuid
from vcuda.units import CORE_PER_GPU

__all__ = ["Charge", "GpuLoad", "NodeLoad", "charge_every_gpu", "free_space", "release", "reserve"]

Charge = tuple[int, int]
"""A container of unknown placement: (cores, MiB) it may hold on any one GPU; 0 MiB is a whole GPU."""


@dataclass(frozen=True, slots=True)
class GpuLoad:
    """Cores (percent, 100 = the whole GPU) and MiB given out on one GPU."""

    cores: int = 0
    memory_mib: int = 0

    @property
    def idle(self) -> bool:
        return self.cores == 0 and self.memory_mib == 0


NodeLoad = Mapping[GpuUuid, GpuLoad]
_IDLE = GpuLoad()


def free_space(gpus: Sequence[GpuInfo], load: NodeLoad) -> tuple[tuple[int, int], ...]:
    """(free cores, free MiB) of each of ``gpus``, in their order."""
    return tuple(
        (CORE_PER_GPU - load.get(g.uuid, _IDLE).cores, g.memory_mib - load.get(g.uuid, _IDLE).memory_mib)
        for g in gpus
    )


def _apply(load: NodeLoad, containers: Iterable[ContainerAssignment], sign: int) -> dict[GpuUuid, GpuLoad]:
    out = dict(load)
    for container in containers:
        for share in container.shares:
            old = out.get(share.uuid, _IDLE)
            new = GpuLoad(old.cores + sign * share.cores, old.memory_mib + sign * share.memory_mib)
            if new.idle:
                out.pop(share.uuid, None)
            else:
                out[share.uuid] = new
    return out


def reserve(load: NodeLoad, containers: Iterable[ContainerAssignment]) -> dict[GpuUuid, GpuLoad]:
    """The load after giving out ``containers``' shares (a new mapping; idle GPUs are absent)."""
    return _apply(load, containers, +1)


def release(load: NodeLoad, containers: Iterable[ContainerAssignment]) -> dict[GpuUuid, GpuLoad]:
    """The load after taking the shares back: ``release(reserve(l, c), c) == l`` for a normalised ``l``."""
    return _apply(load, containers, -1)


def charge_every_gpu(
    load: NodeLoad, gpus: Iterable[GpuInfo], charges: Iterable[Charge]
) -> dict[GpuUuid, GpuLoad]:
    """The load after charging ``charges`` on *every* GPU, up to each GPU's capacity: a pod whose
    assignment is lost may run on any of them, so none may be sold as if it were not there."""
    charged = list(charges)
    out = dict(load)
    for gpu in gpus:
        old = out.get(gpu.uuid, _IDLE)
        cores = old.cores + sum(c for c, _ in charged)
        mib = old.memory_mib + sum(m or gpu.memory_mib for _, m in charged)
        out[gpu.uuid] = GpuLoad(
            max(old.cores, min(CORE_PER_GPU, cores)), max(old.memory_mib, min(gpu.memory_mib, mib))
        )
    return out
