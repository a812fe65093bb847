"""Builders for the plugin's attribution core (``plugin.core.attribution``): pending pods with their requests
and assignments, and slice IDs, as the kubelet names them."""

from collections.abc import Iterable, Sequence

from plugin.core.attribution import PendingPod, PodRef
from plugin.core.slices import SliceId, slice_id
from vcuda.model import (
    Constraints,
    ContainerAssignment,
    ContainerRequest,
    GpuShare,
    GpuUuid,
    NodeName,
    PodAssignment,
    PodRequest,
)

A, B = GpuUuid("GPU-a"), GpuUuid("GPU-b")

Container = tuple[str, int, int, Sequence[tuple[GpuUuid, int]]]
"""(name, cores, MiB, [(GPU, cores)])"""


def pod(
    name: str,
    created: str,
    containers: Sequence[Container],
    *,
    allocated: Iterable[str] = (),
    constraints: Constraints | None = None,
) -> PendingPod:
    """A pending pod in namespace ``default`` with UID ``uid-<name>``, assigned to node ``n``."""
    request = PodRequest(
        tuple(ContainerRequest(n, c, m) for n, c, m, _ in containers), constraints or Constraints()
    )
    shares = tuple(
        ContainerAssignment(n, tuple(GpuShare(u, k, m) for u, k in gpus), min(100, c))
        for n, c, m, gpus in containers
    )
    return PendingPod(
        PodRef("default", name, f"uid-{name}"),
        created,
        request,
        PodAssignment(NodeName("n"), shares),
        frozenset(allocated),
    )


def ids(uuid: GpuUuid, *numbers: int) -> list[SliceId]:
    """The kubelet's device IDs of slices ``numbers`` of GPU ``uuid``."""
    return [slice_id(uuid, n) for n in numbers]
