"""What a container gets from ``Allocate`` for MIG instances, under each ``--device-list-strategy``.

- ``envvar``: ``NVIDIA_VISIBLE_DEVICES`` = the MIG UUIDs (the nvidia container runtime resolves them and adds
  the capability devices itself; MIG devices are always named by UUID, whatever ``--device-id-strategy``);
- ``cdi``: one CDI device per instance, ``<cdi-prefix>=<MIG UUID>``, described by :func:`cdi_spec`;
- ``device-specs``: the parent ``/dev/nvidia<minor>``, the instance's two capability devices
  ``/dev/nvidia-caps/nvidia-cap<N>`` (GPU instance and compute instance ``access``, minors from
  ``/proc/driver/nvidia-caps/mig-minors``), the control devices and the driver files, as for whole GPUs.

Instances are hardware-isolated and whole: no shim, no config file, no usage directory. The node-wide
options (:class:`plugin.core.allocate.PlanOptions`) and value types are the ones whole-GPU allocation uses.
Standard library only.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from plugin.core.allocate import CONTROL_DEVICES, DeviceListStrategy, DeviceNode, Mount, PlanOptions
from plugin.core.errors import AllocationError
from plugin.core.mig import MigDevice

__all__ = [
    "CAPS_DEVICE_DIR",
    "MIG_MINORS_PATH",
    "MigPlan",
    "capability_devices",
    "cdi_spec",
    "instance_nodes",
    "parse_mig_minors",
    "plan_mig_container",
]

MIG_MINORS_PATH: Final = "/proc/driver/nvidia-caps/mig-minors"
CAPS_DEVICE_DIR: Final = "/dev/nvidia-caps"


@dataclass(frozen=True, slots=True)
class MigPlan:
    """The Allocate answer for one container holding MIG instances."""

    envs: Mapping[str, str]
    mounts: tuple[Mount, ...]
    devices: tuple[DeviceNode, ...]
    cdi_devices: tuple[str, ...]


def parse_mig_minors(text: str) -> dict[str, int]:
    """``gpu0/gi1/access 12`` lines (and ``config 1``, ``monitor 2``) -> capability name -> device minor."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, minor = line.strip().partition(" ")
        if name and minor.strip().isdigit():
            found[name] = int(minor)
    return found


def capability_devices(device: MigDevice, minors: Mapping[str, int]) -> tuple[str, ...]:
    """The instance's capability device nodes (GPU instance, then compute instance)."""
    gi = f"gpu{device.parent_minor}/gi{device.gpu_instance_id}/access"
    ci = f"gpu{device.parent_minor}/gi{device.gpu_instance_id}/ci{device.compute_instance_id}/access"
    paths = []
    for cap in (gi, ci):
        if cap not in minors:
            raise AllocationError(
                f"MIG instance {device.uuid}: capability {cap} is not in {MIG_MINORS_PATH} (driver not "
                "loaded, or the instance was destroyed)"
            )
        paths.append(f"{CAPS_DEVICE_DIR}/nvidia-cap{minors[cap]}")
    return tuple(paths)


def instance_nodes(device: MigDevice, minors: Mapping[str, int]) -> tuple[str, ...]:
    """Every device node the instance needs: its parent GPU's, then its capabilities (device plugin and DRA
    alike); raises :class:`AllocationError` when a capability is unknown."""
    return (f"/dev/nvidia{device.parent_minor}", *capability_devices(device, minors))


def _device_paths(devices: Sequence[MigDevice], minors: Mapping[str, int]) -> list[str]:
    paths: list[str] = []
    for device in devices:
        for path in instance_nodes(device, minors):
            if path not in paths:
                paths.append(path)
    return paths


def plan_mig_container(
    devices: Sequence[MigDevice], options: PlanOptions, minors: Mapping[str, int]
) -> MigPlan:
    """The answer for one container; raises :class:`AllocationError` when a capability is unknown."""
    strategy = options.list_strategy
    if strategy is DeviceListStrategy.ENVVAR:
        return MigPlan({"NVIDIA_VISIBLE_DEVICES": ",".join(d.uuid for d in devices)}, (), (), ())
    # Keep the nvidia runtime hook (if any) from exposing the image's default "all".
    void = {"NVIDIA_VISIBLE_DEVICES": "void"}
    if strategy is DeviceListStrategy.CDI:
        return MigPlan(void, (), (), tuple(f"{options.cdi_prefix}={d.uuid}" for d in devices))
    paths = [*_device_paths(devices, minors), *CONTROL_DEVICES]
    mounts = tuple(Mount(c, h) for c, h in sorted(options.driver_files.items()))
    return MigPlan(void, mounts, tuple(DeviceNode(p, p) for p in paths), ())


def cdi_spec(kind: str, devices: Sequence[MigDevice], minors: Mapping[str, int]) -> dict[str, Any]:
    """A CDI spec (``cdiVersion`` 0.5.0) naming each MIG instance by UUID. It shares ``kind`` with the
    whole-GPU spec (names never clash: ``MIG-`` versus ``GPU-``); instances whose capabilities are unknown
    are left out (their Allocate then fails clearly in the runtime instead of starting without access)."""
    entries = []
    for device in devices:
        try:
            nodes = instance_nodes(device, minors)
        except AllocationError:
            continue
        entries.append({"name": device.uuid, "containerEdits": {"deviceNodes": [{"path": p} for p in nodes]}})
    return {
        "cdiVersion": "0.5.0",
        "kind": kind,
        "devices": entries,
        "containerEdits": {"deviceNodes": [{"path": p} for p in CONTROL_DEVICES]},
    }
