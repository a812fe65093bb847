"""Plain values shared by every component: GPUs, topology, requests and assignments. Standard library only."""

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import NewType

from vcuda.units import CORE_PER_GPU

__all__ = [
    "Constraints",
    "ContainerAssignment",
    "ContainerKind",
    "ContainerRequest",
    "GpuInfo",
    "GpuLink",
    "GpuMode",
    "GpuShare",
    "GpuUuid",
    "MigInfo",
    "NodeInventory",
    "OtherModeGpu",
    "NodeName",
    "PcieLevel",
    "Phase",
    "PodAssignment",
    "PodRequest",
    "Policy",
]

GpuUuid = NewType("GpuUuid", str)
NodeName = NewType("NodeName", str)


class Policy(StrEnum):
    """How to choose among GPUs (or nodes) that fit: pack onto the fullest, or spread onto the emptiest."""

    BINPACK = "binpack"
    SPREAD = "spread"


class PcieLevel(IntEnum):
    """NVML's topology common-ancestor levels (``nvmlGpuTopologyLevel_t``): smaller is closer."""

    INTERNAL = 0
    SINGLE = 10
    MULTIPLE = 20
    HOSTBRIDGE = 30
    NODE = 40
    SYSTEM = 50


class Phase(StrEnum):
    """Life of an assignment: written at bind, confirmed by the plugin at Allocate, or failed."""

    ASSUMED = "assumed"
    ALLOCATED = "allocated"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU as the scheduler sees it. ``memory_mib`` is schedulable memory (after scaling)."""

    uuid: GpuUuid
    index: int
    model: str
    memory_mib: int
    healthy: bool = True
    numa_node: int = -1


@dataclass(frozen=True, slots=True)
class GpuLink:
    """How two GPUs of one node are connected. Stored once per unordered pair, ``a < b``."""

    a: GpuUuid
    b: GpuUuid
    nvlinks: int
    pcie: PcieLevel


class GpuMode(StrEnum):
    """How a node sells one GPU; a GPU has exactly one mode at a time (docs/nvidia-plugin.md).

    ``vcuda``: shares (``vcuda-core`` / ``vcuda-memory``), placed by the extender. ``whole``: whole GPUs as
    ``nvidia.com/gpu`` (NVIDIA's device plugin). ``time-slicing`` / ``mps``: ``nvidia.com/gpu`` replicas, as
    NVIDIA's sharing strategies. ``dra``: claims of the DRA driver (``resource.k8s.io``).
    ``mig``: MIG instances (listed in ``NodeInventory.mig``)."""

    VCUDA = "vcuda"
    WHOLE = "whole"
    TIME_SLICING = "time-slicing"
    MPS = "mps"
    DRA = "dra"
    MIG = "mig"


@dataclass(frozen=True, slots=True)
class OtherModeGpu:
    """A GPU of the node sold other than as vcuda shares (whole, replicas, MPS clients or DRA claims): the
    extender never places shares on it; the kube-scheduler counts it through its own resource. ``resource``
    is the extended resource (or DRA driver) it is sold through, ``replicas`` how many pods may share it."""

    uuid: GpuUuid
    index: int
    model: str
    memory_mib: int
    mode: GpuMode
    resource: str
    replicas: int = 1
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class MigInfo:
    """One MIG instance (GPU instance + compute instance) of a MIG-enabled GPU: served whole, never shared."""

    uuid: str
    parent: GpuUuid
    profile: str  # e.g. "3g.40gb"
    memory_mib: int
    multiprocessors: int


@dataclass(frozen=True, slots=True)
class NodeInventory:
    """What the plugin publishes about a node's GPUs for the extender.

    ``gpus`` are the GPUs shared through vcuda; MIG-enabled GPUs are not among them, their instances are
    listed in ``mig``; GPUs sold in another mode (whole, time-slicing, MPS, DRA) are listed in ``other``
    (both for operators and ``kubectl vgpu``; the scheduler counts them through their own resources).
    No GPU appears twice across the three.
    """

    gpus: tuple[GpuInfo, ...]
    links: tuple[GpuLink, ...] = ()
    mig: tuple[MigInfo, ...] = ()
    other: tuple[OtherModeGpu, ...] = ()

    def gpu(self, uuid: str) -> GpuInfo | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)


class ContainerKind(StrEnum):
    """How the kubelet runs a container: init containers one after another before the app containers (their
    devices are reused by later containers), sidecars (``restartPolicy: Always`` init containers) for the
    pod's whole life (their devices are kept), app containers together."""

    INIT = "init"
    SIDECAR = "sidecar"
    APP = "app"


@dataclass(frozen=True, slots=True)
class ContainerRequest:
    """One container's validated GPU request.

    ``cores`` is the ``vcuda-core`` value as written (1..100, or a multiple of 100); ``memory_mib`` is the
    per-GPU memory, 0 when the request is exclusive and takes whole GPUs.
    """

    name: str
    cores: int
    memory_mib: int = 0
    kind: ContainerKind = ContainerKind.APP

    @property
    def exclusive(self) -> bool:
        return self.cores % CORE_PER_GPU == 0

    @property
    def gpu_count(self) -> int:
        return max(1, self.cores // CORE_PER_GPU)

    @property
    def cores_per_gpu(self) -> int:
        return min(self.cores, CORE_PER_GPU)


@dataclass(frozen=True, slots=True)
class Constraints:
    """Which GPUs a pod accepts and how it wants to be placed (from user-facing annotations)."""

    include_models: frozenset[str] = frozenset()
    exclude_models: frozenset[str] = frozenset()
    include_uuids: frozenset[str] = frozenset()
    exclude_uuids: frozenset[str] = frozenset()
    gpu_policy: Policy | None = None
    node_policy: Policy | None = None

    def accepts(self, gpu: GpuInfo) -> bool:
        model = gpu.model.lower()
        if self.include_models and not any(m in model for m in self.include_models):
            return False
        if any(m in model for m in self.exclude_models):
            return False
        if self.include_uuids and gpu.uuid not in self.include_uuids:
            return False
        return gpu.uuid not in self.exclude_uuids


@dataclass(frozen=True, slots=True)
class PodRequest:
    """A pod's GPU containers (init containers first, as the kubelet admits them) and constraints."""

    containers: tuple[ContainerRequest, ...]
    constraints: Constraints = field(default_factory=Constraints)
    core_limit: int | None = None


@dataclass(frozen=True, slots=True, order=True)
class GpuShare:
    """A slice of one GPU given to one container: percent of its compute and MiB of its memory."""

    uuid: GpuUuid
    cores: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class ContainerAssignment:
    """The GPUs one container gets. ``core_limit`` is the soft limit in percent (= cores when hard)."""

    name: str
    shares: tuple[GpuShare, ...]
    core_limit: int

    @property
    def cores(self) -> int:
        """The ``vcuda-core`` count this assignment answers (what the kubelet's Allocate carries)."""
        return sum(s.cores for s in self.shares)


@dataclass(frozen=True, slots=True)
class PodAssignment:
    """The extender's decision for a pod on one node."""

    node: NodeName
    containers: tuple[ContainerAssignment, ...]

    def container(self, name: str) -> ContainerAssignment | None:
        return next((c for c in self.containers if c.name == name), None)
