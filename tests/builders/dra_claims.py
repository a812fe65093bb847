"""Builders of DRA objects as the simulated scheduler sees them: the chart's DeviceClasses, the slices the real
core publishes for a node, claims and share requests, and a claim allocated by the simulated allocator."""

from typing import Any

from plugin.core.gpu import NodeGpus
from plugin.core.resourceslice import SliceOptions, driver_name, pool_specs
from plugin.slicepublisher import slice_object
from tests.builders.plugin import gpus
from tests.sim.dra_allocator import allocate

DOMAIN = "nvidia.com"
DRIVER = driver_name(DOMAIN)
NODE = "n1"
SHARE_CLASS = f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "gpu"'
CLASSES = {
    name: {"metadata": {"name": name}, "spec": {"selectors": [{"cel": {"expression": expression}}]}}
    for name, expression in [
        ("vgpu.nvidia.com", SHARE_CLASS),
        ("gpu.nvidia.com", SHARE_CLASS),
        ("mig.nvidia.com", f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].type == "mig"'),
    ]
}
Obj = dict[str, Any]


def published(node: NodeGpus, **kwargs: Any) -> list[Obj]:
    defaults: dict[str, Any] = {"driver": DRIVER, "node": NODE, "unhealthy": {}, "pcie_roots": {}}
    options = SliceOptions(**(defaults | kwargs))
    return [slice_object(s, name=f"s{i}") for i, s in enumerate(pool_specs(node, options, 1))]


def claim(name: str, *requests: Obj, constraints: Any = (), config: Any = ()) -> Obj:
    devices = {"requests": list(requests), "constraints": list(constraints), "config": list(config)}
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"devices": devices}}


def share(
    cores: str | None = None, memory: str | None = None, cls: str = "vgpu.nvidia.com", **extra: Any
) -> Obj:
    capacity = {k: v for k, v in (("cores", cores), ("memory", memory)) if v is not None}
    exactly: Obj = (
        {"deviceClassName": cls} | ({"capacity": {"requests": capacity}} if capacity else {}) | extra
    )
    return {"name": "gpu", "exactly": exactly}


def allocated(name: str, *requests: Any, config: Any = ()) -> dict[str, Any]:
    wanted = claim(name, *requests, config=list(config))
    allocation = allocate(wanted, node=NODE, slices=published(gpus(1)), classes=CLASSES, claims=[])
    assert isinstance(allocation, dict)
    reserved = [{"resource": "pods", "name": f"{name}-pod", "uid": "u"}]
    return wanted | {"status": {"allocation": allocation, "reservedFor": reserved}}
