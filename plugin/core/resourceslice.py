"""The node's GPUs as DRA ResourceSlices (``resource.k8s.io/v1``, Go JSON shape). Standard library only.

One pool per node (named after the node), published by the driver ``kube-vgpu.<domain>``:

- a GPU without MIG is one device ``gpu-<uuid>`` with capacity ``memory`` (bytes) and ``cores`` (100),
  ``allowMultipleAllocations: true`` (KEP-5075 consumable capacity) and a request policy per capacity: a
  valid range with a step (``memory``: 256 MiB .. all of it, step 1 MiB; ``cores``: 1 .. 100, step 1). The
  policy's default is the whole capacity, so a request that names no capacity takes the GPU whole and no
  share fits beside it;
- a GPU with MIG on is not shareable: each MIG instance is a device ``mig-<uuid>``, taken whole (the node
  side prepares it with its device nodes and no shim, :mod:`plugin.core.dra_plan`), that consumes the
  parent's counters (KEP-4815 partitionable devices: ``sharedCounters`` in a slice of their
  own, since the API allows only one of ``devices`` and ``sharedCounters`` per slice);
- an unhealthy GPU (or MIG instance) is tainted ``<driver>/unhealthy=<reason>:NoSchedule`` (device taints
  are beta, on by default, since Kubernetes 1.36 and GA in 1.37) or, with ``UnhealthyPolicy.WITHDRAW``
  (clusters before 1.36), left out of the slice.

Attributes use the standard ``resource.kubernetes.io/`` names where Kubernetes defines one (``pciBusID``,
``pcieRoot``, ``numaNode``, from ``k8s.io/dynamic-resource-allocation/deviceattribute``); the rest are in the
driver's own domain (a name without a domain is the driver's). Versions are semantic versions as the API
requires (``9.0.0``, ``580.65.6``: leading zeros dropped).

Limits honoured (``k8s.io/api/resource/v1``): at most 128 devices per slice, 64 when any device consumes
counters or carries taints; at most 8 counter sets per slice; at most 32 attributes and capacities per
device. Quantities are written in Kubernetes' canonical form, so that what the API server stores reads back
equal and the publisher never rewrites an unchanged pool.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from plugin.core.dra import driver_name, pool_name
from plugin.core.gpu import Gpu, MigInstance, NodeGpus
from plugin.core.mig import partitioned, shareable
from vcuda.model import GpuLink, GpuUuid

__all__ = [
    "MAX_DEVICES",
    "MAX_DEVICES_ADVANCED",
    "SliceOptions",
    "UnhealthyPolicy",
    "architecture",
    "binary_quantity",
    "device_name",
    "driver_name",
    "nvlink_domains",
    "pool_specs",
    "semver",
]

MAX_DEVICES: Final = 128
MAX_DEVICES_ADVANCED: Final = 64  # any device with taints or consumesCounters
MAX_COUNTER_SETS: Final = 8
MIB: Final = 1 << 20
MIN_MEMORY_MIB: Final = 256
STANDARD: Final = "resource.kubernetes.io"
_LABEL_UNSAFE: Final = re.compile(r"[^a-z0-9-]+")

Spec = dict[str, Any]

_ARCHITECTURES: Final = {
    3: "Kepler",
    5: "Maxwell",
    6: "Pascal",
    7: "Volta",
    8: "Ampere",
    9: "Hopper",
    10: "Blackwell",
    12: "Blackwell",
}


class UnhealthyPolicy(StrEnum):
    TAINT = "taint"
    WITHDRAW = "withdraw"


@dataclass(frozen=True, slots=True)
class SliceOptions:
    """``unhealthy``: GPU or MIG UUID -> reason; ``pcie_roots``: GPU UUID -> ``pci<domain>:<bus>`` (sysfs)."""

    driver: str
    node: str
    unhealthy: Mapping[str, str]
    pcie_roots: Mapping[GpuUuid, str]
    policy: UnhealthyPolicy = UnhealthyPolicy.TAINT


def device_name(uuid: str) -> str:
    """``gpu-<uuid>`` / ``mig-<uuid>`` (lower case, a DNS label), from the UUID rather than the index: indexes
    may change across reboots while a slice or an allocated claim still names the device. For a GPU this is
    the node side's :func:`plugin.core.dra.device_name` (the name its prepare looks up)."""
    kind, _, tail = uuid.lower().partition("-")
    kind = "mig" if kind == "mig" else "gpu"
    return (kind + "-" + _LABEL_UNSAFE.sub("-", tail or kind))[:63].rstrip("-")


def binary_quantity(value: int) -> str:
    """Kubernetes' canonical BinarySI form: the largest power-of-1024 suffix that divides exactly."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = 1 << (10 * ("KMGTPE".index(suffix[0]) + 1))
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def semver(version: str) -> str:
    """``580.65.06`` -> ``580.65.6``, ``13.0`` -> ``13.0.0`` (semver, as ``version`` needs)."""
    parts = [str(int(p)) if p.isdigit() else "0" for p in version.split(".")[:3]]
    return ".".join(parts + ["0"] * (3 - len(parts)))


def architecture(compute_capability: tuple[int, int]) -> str:
    major, minor = compute_capability
    if (major, minor) == (8, 9):
        return "Ada Lovelace"
    if (major, minor) == (7, 5):
        return "Turing"
    return _ARCHITECTURES.get(major, "Unknown")


def nvlink_domains(links: Iterable[GpuLink]) -> dict[GpuUuid, str]:
    """GPUs joined by NVLink (directly or through others) -> the smallest UUID of their group."""
    parent: dict[GpuUuid, GpuUuid] = {}

    def root(uuid: GpuUuid) -> GpuUuid:
        while parent.setdefault(uuid, uuid) != uuid:
            uuid = parent[uuid]
        return uuid

    for link in links:
        if link.nvlinks > 0:
            a, b = root(link.a), root(link.b)
            parent[max(a, b)] = min(a, b)
    return {uuid: root(uuid) for uuid in list(parent)}


def _pci_bus_id(raw: str) -> str:
    """NVML's ``00000000:1B:00.0`` -> ``0000:1b:00.0``, the BDF of ``resource.kubernetes.io/pciBusID``."""
    parts = raw.lower().split(":")
    domain = parts[0][-4:].rjust(4, "0") if len(parts) == 3 else "0000"
    return ":".join([domain, *parts[-2:]])


def _attr(kind: str, value: object) -> dict[str, object]:
    return {kind: value}


def _common_attributes(gpu: Gpu, node: NodeGpus, options: SliceOptions) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "productName": _attr("string", gpu.model),
        "architecture": _attr("string", architecture(gpu.compute_capability)),
        "computeCapability": _attr("version", semver("{}.{}".format(*gpu.compute_capability))),
        "driverVersion": _attr("version", semver(node.driver_version)),
        "cudaVersion": _attr("version", semver(node.cuda_version)),
        "index": _attr("int", gpu.index),
        "minor": _attr("int", gpu.minor),
        f"{STANDARD}/pciBusID": _attr("string", _pci_bus_id(gpu.pci_bus_id)),
    }
    if gpu.uuid in options.pcie_roots:
        attrs[f"{STANDARD}/pcieRoot"] = _attr("string", options.pcie_roots[gpu.uuid])
    if gpu.numa_node >= 0:  # no NUMA affinity: the attribute must be absent (deviceattribute docs)
        attrs[f"{STANDARD}/numaNode"] = _attr("int", gpu.numa_node)
    return attrs


def _range_policy(total: int, minimum: int, step: int, quantity: Any) -> dict[str, Any]:
    return {
        "default": quantity(total),
        "validRange": {"min": quantity(minimum), "max": quantity(total), "step": quantity(step)},
    }


def _shareable_device(gpu: Gpu, node: NodeGpus, nvlink: Mapping[GpuUuid, str], options: SliceOptions) -> Spec:
    attrs = {"type": _attr("string", "gpu"), "uuid": _attr("string", gpu.uuid)}
    attrs |= _common_attributes(gpu, node, options)
    if gpu.uuid in nvlink:
        attrs["nvlinkDomain"] = _attr("string", nvlink[gpu.uuid])
    memory = gpu.memory_mib * MIB
    return {
        "name": device_name(gpu.uuid),
        "attributes": attrs,
        "capacity": {
            "cores": {"value": "100", "requestPolicy": _range_policy(100, 1, 1, str)},
            "memory": {
                "value": binary_quantity(memory),
                "requestPolicy": _range_policy(
                    memory, min(MIN_MEMORY_MIB * MIB, memory), MIB, binary_quantity
                ),
            },
        },
        "allowMultipleAllocations": True,
    }


def _counter_set(gpu: Gpu) -> str:
    return f"gpu-{gpu.index}-counters"


def _counters(gpu: Gpu) -> Spec:
    return {
        "name": _counter_set(gpu),
        "counters": {"memory": {"value": binary_quantity(gpu.memory_mib * MIB)}},
    }


def _mig_device(gpu: Gpu, mig: MigInstance, node: NodeGpus, options: SliceOptions) -> Spec:
    attrs = {
        "type": _attr("string", "mig"),
        "uuid": _attr("string", mig.uuid),
        "parentUUID": _attr("string", gpu.uuid),
        "profile": _attr("string", mig.profile),
    }
    attrs |= _common_attributes(gpu, node, options)
    memory = binary_quantity(mig.memory_mib * MIB)
    return {
        "name": device_name(mig.uuid),
        "attributes": attrs,
        "capacity": {"memory": {"value": memory}, "multiprocessors": {"value": str(mig.multiprocessors)}},
        "consumesCounters": [{"counterSet": _counter_set(gpu), "counters": {"memory": {"value": memory}}}],
    }


def _health(device: Spec, uuid: str, options: SliceOptions) -> Spec | None:
    """The device as published for its health: unchanged, tainted, or None (withdrawn)."""
    reason = options.unhealthy.get(uuid)
    if reason is None:
        return device
    if options.policy is UnhealthyPolicy.WITHDRAW:
        return None
    taint = {"key": f"{options.driver}/unhealthy", "value": _label_value(reason), "effect": "NoSchedule"}
    return device | {"taints": [taint]}


def _label_value(reason: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in reason)[:63]
    return cleaned.strip("-_.")


def _devices(node: NodeGpus, options: SliceOptions) -> tuple[list[Spec], list[Spec]]:
    """(devices, counter sets) of the node, each device judged by its health."""
    nvlink = nvlink_domains(node.links)
    devices: list[Spec] = []
    counters: list[Spec] = []
    for gpu in sorted(node.gpus, key=lambda g: (g.index, g.uuid)):
        if not shareable(gpu) and not partitioned(gpu):
            continue  # neither whole nor partitioned until the mode change lands (NVML's pending mode)
        if not gpu.mig_enabled:
            candidates = [(_shareable_device(gpu, node, nvlink, options), str(gpu.uuid))]
        else:
            counters.append(_counters(gpu))
            candidates = [
                (_mig_device(gpu, mig, node, options), mig.uuid)
                for mig in sorted(gpu.mig_instances, key=lambda m: (m.gpu_instance_id, m.compute_instance_id))
            ]
        for device, uuid in candidates:
            parent_bad = options.unhealthy.get(str(gpu.uuid))
            judged = _health(device, uuid if parent_bad is None else str(gpu.uuid), options)
            if judged is not None:
                devices.append(judged)
    return devices, counters


def _chunks(items: Sequence[Spec], size: int) -> list[list[Spec]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def pool_specs(node: NodeGpus, options: SliceOptions, generation: int) -> list[Spec]:
    """The ``spec`` of every ResourceSlice of the node's pool at ``generation`` (at least one slice, possibly
    with no devices, so that the pool exists and says it is empty)."""
    devices, counters = _devices(node, options)
    advanced = any("taints" in d or "consumesCounters" in d for d in devices)
    bodies: list[Spec] = [{"sharedCounters": c} for c in _chunks(counters, MAX_COUNTER_SETS)]
    per_slice = MAX_DEVICES_ADVANCED if advanced else MAX_DEVICES
    bodies += [{"devices": d} for d in _chunks(devices, per_slice)] or ([{}] if not bodies else [])
    pool = {"name": pool_name(options.node), "generation": generation, "resourceSliceCount": len(bodies)}
    return [{"driver": options.driver, "pool": dict(pool), "nodeName": options.node} | b for b in bodies]
