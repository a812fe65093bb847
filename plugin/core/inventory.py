"""What the plugin publishes on its Node: the inventory annotation, GPU labels and ``vcuda-memory`` capacity.

``vcuda-memory`` is a node extended resource in MiB (contracts §1.5 option b): the sum over healthy,
shareable GPUs of their memory after ``deviceMemoryScaling``, written into the node status by a patch.
Standard library only.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from plugin.core.gpu import NodeGpus
from plugin.core.mig import mig_devices, shareable
from vcuda.model import GpuInfo, GpuUuid, MigInfo, NodeInventory, OtherModeGpu
from vcuda.names import Names

__all__ = ["NodeView", "gpu_labels", "node_inventory", "node_view", "scaled_mib"]


@dataclass(frozen=True, slots=True)
class NodeView:
    """Everything the plugin keeps true on its Node object."""

    inventory: NodeInventory
    labels: Mapping[str, str]
    memory_mib: int


def scaled_mib(memory_mib: int, scaling: float) -> int:
    """Schedulable MiB of a GPU: whole MiB, rounded down."""
    return int(memory_mib * scaling)


def node_inventory(
    node: NodeGpus,
    healthy: Mapping[GpuUuid, bool],
    scaling: float,
    other: Sequence[OtherModeGpu] = (),
) -> NodeInventory:
    """``other``: GPUs sold in another mode (plugin.core.gpumodes); they leave ``gpus`` and the links."""
    elsewhere = {o.uuid for o in other}
    gpus = tuple(
        GpuInfo(
            g.uuid,
            g.index,
            g.model,
            scaled_mib(g.memory_mib, scaling),
            healthy.get(g.uuid, True),
            g.numa_node,
        )
        for g in node.gpus
        if shareable(g) and g.uuid not in elsewhere  # MIG and other-mode GPUs: never shared by the extender
    )
    known = {g.uuid for g in gpus}
    links = tuple(link for link in node.links if link.a in known and link.b in known)
    mig = tuple(
        MigInfo(d.uuid, d.parent, d.profile, d.memory_mib, d.multiprocessors) for d in mig_devices(node.gpus)
    )
    return NodeInventory(gpus, links, mig, tuple(other))


def gpu_labels(node: NodeGpus, names: Names) -> dict[str, str]:
    """Product, count, memory (MiB, of the first GPU), driver, CUDA version and compute capability."""
    if not node.gpus:
        return {names.label("gpu.present"): "false", names.label("gpu.count"): "0"}
    first = node.gpus[0]
    major, minor = first.compute_capability
    cuda_major, _, cuda_minor = node.cuda_version.partition(".")
    driver = node.driver_version.split(".")
    return {
        names.label("gpu.present"): "true",
        names.label("gpu.product"): _label_value(first.model),
        names.label("gpu.count"): str(len(node.gpus)),
        names.label("gpu.memory"): str(first.memory_mib),
        names.label("gpu.compute.major"): str(major),
        names.label("gpu.compute.minor"): str(minor),
        names.label("cuda.driver.major"): driver[0] if driver else "",
        names.label("cuda.driver.minor"): driver[1] if len(driver) > 1 else "",
        names.label("cuda.driver.rev"): driver[2] if len(driver) > 2 else "",
        names.label("cuda.runtime.major"): cuda_major,
        names.label("cuda.runtime.minor"): cuda_minor,
    }


def _label_value(text: str) -> str:
    """A label value: [A-Za-z0-9._-], at most 63 characters, alphanumeric at both ends (as NVIDIA's GFD)."""
    value = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text.strip())
    return value[:63].strip("._-")


def node_view(
    node: NodeGpus,
    healthy: Mapping[GpuUuid, bool],
    scaling: float,
    names: Names,
    other: Sequence[OtherModeGpu] = (),
) -> NodeView:
    """``vcuda-memory`` counts only the healthy GPUs sold as vcuda shares."""
    inventory = node_inventory(node, healthy, scaling, other)
    memory = sum(g.memory_mib for g in inventory.gpus if g.healthy)
    return NodeView(inventory, gpu_labels(node, names), memory)
