"""What discovery finds on a node, as plain values (filled by :mod:`plugin.nvml`, used everywhere else)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from vcuda.model import GpuLink, GpuUuid

__all__ = ["Gpu", "GpuSource", "MigInstance", "NodeGpus", "XidEvent"]


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG device (a GPU instance + compute instance) on a MIG-enabled GPU."""

    uuid: str
    parent_uuid: GpuUuid
    profile: str  # e.g. "1g.10gb"
    gpu_instance_id: int
    compute_instance_id: int
    memory_mib: int
    multiprocessors: int


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU. ``memory_mib`` is the physical total, before any per-node scaling."""

    uuid: GpuUuid
    index: int
    minor: int
    model: str
    memory_mib: int
    pci_bus_id: str
    numa_node: int = -1
    compute_capability: tuple[int, int] = (0, 0)
    mig_enabled: bool = False
    mig_pending: bool = False
    mig_instances: tuple[MigInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeGpus:
    """Everything discovery reports about a node, GPUs ordered by index."""

    gpus: tuple[Gpu, ...]
    links: tuple[GpuLink, ...]
    driver_version: str
    cuda_version: str  # "major.minor"


@dataclass(frozen=True, slots=True)
class XidEvent:
    """An NVML XID error event. ``gpu_instance_id``/``compute_instance_id`` are set for MIG devices."""

    uuid: GpuUuid
    xid: int
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class GpuSource(Protocol):
    """Discovery and health as the rest of the plugin needs them (implemented over pynvml)."""

    def discover(self) -> NodeGpus: ...

    def is_reachable(self, uuid: GpuUuid) -> bool:
        """False when NVML can no longer talk to the GPU (fallen off the bus, lost)."""
        ...

    def xid_events(self) -> AsyncIterator[XidEvent]: ...
