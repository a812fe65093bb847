"""``vcuda-core`` device IDs: 100 slices per GPU, ``<gpu-uuid>::<n>``, and the list sent to the kubelet.

Standard library only.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NewType

from plugin.core.errors import AllocationError
from plugin.core.gpu import Gpu
from plugin.core.mig import shareable
from vcuda.model import GpuUuid
from vcuda.units import CORE_PER_GPU

__all__ = ["SEPARATOR", "Slice", "SliceId", "gpu_split", "parse_slice_id", "plain_pick", "slice_id", "slices"]

SliceId = NewType("SliceId", str)
SEPARATOR: Final = "::"


@dataclass(frozen=True, slots=True)
class Slice:
    """One advertised device: a hundredth of a GPU's compute, carrying the GPU's health and NUMA node."""

    id: SliceId
    uuid: GpuUuid
    healthy: bool
    numa_node: int


def slice_id(uuid: GpuUuid, n: int) -> SliceId:
    return SliceId(f"{uuid}{SEPARATOR}{n}")


def parse_slice_id(text: str) -> tuple[GpuUuid, int]:
    uuid, sep, n = text.rpartition(SEPARATOR)
    if not sep or not uuid or not n.isdigit() or not 0 <= int(n) < CORE_PER_GPU:
        raise AllocationError(f"device ID {text!r} is not a kube-vgpu slice (<gpu-uuid>::0..99)")
    return GpuUuid(uuid), int(n)


def gpu_split(ids: Iterable[str]) -> dict[GpuUuid, int]:
    """How many slices of each GPU a set of device IDs holds."""
    return dict(Counter(parse_slice_id(i)[0] for i in ids))


def plain_pick(available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
    """The answer when no preference applies: the must-include IDs, then the others in the kubelet's order.
    The kubelet's ``available`` already holds the must-include IDs (it sends their union), so each ID is
    named once."""
    must = set(must_include)
    return [*must_include, *(i for i in available if i not in must)][:size]


def slices(gpus: Sequence[Gpu], healthy: Mapping[GpuUuid, bool]) -> tuple[Slice, ...]:
    """Every slice of every shareable GPU, in GPU index order then slice number (stable across restarts).

    MIG-enabled GPUs (MIG on or pending) are not shared through the shim and get no slices.
    """
    return tuple(
        Slice(slice_id(g.uuid, n), g.uuid, healthy.get(g.uuid, True), g.numa_node)
        for g in sorted(gpus, key=lambda g: (g.index, g.uuid))
        if shareable(g)  # MIG GPUs are served whole by plugin.mig, never as vcuda-core
        for n in range(CORE_PER_GPU)
    )
