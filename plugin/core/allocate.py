"""What one container gets from ``Allocate``: GPU visibility, the shim, its config and usage files, identity.

A pure plan over plain values; :mod:`plugin.server` turns it into protobuf and :mod:`plugin.statedir` writes
the files. Standard library only.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath

from plugin.core.attribution import Candidate
from plugin.core.errors import AllocationError
from plugin.core.gpu import Gpu
from vcuda import names
from vcuda.model import GpuShare
from vcuda.shimfile import NODE_TENANTS_DIR, GpuLimit, ShimConfig
from vcuda.units import CORE_PER_GPU, mib_to_bytes

__all__ = [
    "CONFIG_FILE_NAME",
    "CONTAINERS_DIR",
    "CONTROL_DEVICES",
    "ContainerPlan",
    "DeviceIdStrategy",
    "DeviceListStrategy",
    "DeviceNode",
    "Mount",
    "NODE_DIR_NAME",
    "PlanOptions",
    "container_dir_name",
    "plan_container",
    "shim_config",
    "shim_mounts",
]

CONFIG_FILE_NAME = "vcuda.config"
CONTAINERS_DIR = "containers"
"""<state>/containers/<dir name>: one vcuda-core container's config and usage directory."""
# <state>/node: the containers' record files and the plugin's placement lists, mounted read-only at
# vcuda.names.CONTAINER_NODE_DIR; each container's own tenants/<dir name> is mounted writable over it.
NODE_DIR_NAME = "node"
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


class DeviceListStrategy(StrEnum):
    """How the container runtime learns which GPUs to expose."""

    ENVVAR = "envvar"
    CDI = "cdi"
    DEVICE_SPECS = "device-specs"


class DeviceIdStrategy(StrEnum):
    UUID = "uuid"
    INDEX = "index"


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class DeviceNode:
    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """Node-wide allocation settings. ``driver_files`` maps container paths to host paths (device-specs)."""

    list_strategy: DeviceListStrategy = DeviceListStrategy.ENVVAR
    id_strategy: DeviceIdStrategy = DeviceIdStrategy.UUID
    cdi_prefix: str = "kube-vgpu.io/gpu"
    state_dir: str = names.HOST_STATE_DIR
    shim_dir: str = "/usr/local/kube-vgpu"
    driver_files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    """The Allocate answer for one container, and the files to write before answering."""

    dir_name: str
    config: ShimConfig
    envs: Mapping[str, str]
    mounts: tuple[Mount, ...]
    devices: tuple[DeviceNode, ...]
    cdi_devices: tuple[str, ...]


def container_dir_name(pod_uid: str, container: str) -> str:
    """``<pod-uid>_<container>``: the per-container directory under ``<state>/containers``."""
    return f"{pod_uid}_{container}"


def shim_config(cand: Candidate, gpus: Mapping[str, Gpu]) -> ShimConfig:
    """The limits the shim enforces: the recorded shares; whole GPUs get all memory and no throttling."""
    return ShimConfig(
        pod_uid=cand.key.pod.uid,
        namespace=cand.key.pod.namespace,
        pod_name=cand.key.pod.name,
        container=cand.key.container,
        gpus=tuple(_limit(s, cand.assignment.core_limit, gpus) for s in cand.assignment.shares),
    )


def _limit(share: GpuShare, core_limit: int, gpus: Mapping[str, Gpu]) -> GpuLimit:
    gpu = gpus.get(share.uuid)
    if gpu is None:
        raise AllocationError(f"assigned GPU {share.uuid} is not on this node")
    if share.cores >= CORE_PER_GPU:
        return GpuLimit(share.uuid, mib_to_bytes(gpu.memory_mib), CORE_PER_GPU, CORE_PER_GPU)
    if share.memory_mib <= 0:
        raise AllocationError(f"assigned share of GPU {share.uuid} has no memory")
    soft = min(CORE_PER_GPU, max(core_limit, share.cores))
    return GpuLimit(share.uuid, mib_to_bytes(min(share.memory_mib, gpu.memory_mib)), share.cores, soft)


def plan_container(cand: Candidate, gpus: Mapping[str, Gpu], options: PlanOptions) -> ContainerPlan:
    config = shim_config(cand, gpus)
    assigned = [gpus[s.uuid] for s in cand.assignment.shares]
    dir_name = container_dir_name(cand.key.pod.uid, cand.key.container)
    envs = {
        names.ENV_POD_NAME: cand.key.pod.name,
        names.ENV_NAMESPACE: cand.key.pod.namespace,
        names.ENV_POD_UID: cand.key.pod.uid,
        names.ENV_CONTAINER_NAME: cand.key.container,
        **_visibility_env(assigned, options),
    }
    return ContainerPlan(
        dir_name=dir_name,
        config=config,
        envs=envs,
        mounts=(*shim_mounts(dir_name, options), *_driver_mounts(options)),
        devices=_device_nodes(assigned, options),
        cdi_devices=_cdi_devices(assigned, options),
    )


def _visibility_env(assigned: Sequence[Gpu], options: PlanOptions) -> dict[str, str]:
    if options.list_strategy is not DeviceListStrategy.ENVVAR:
        # Keep the nvidia runtime hook (if any) from exposing the image's default "all".
        return {"NVIDIA_VISIBLE_DEVICES": "void"}
    if options.id_strategy is DeviceIdStrategy.INDEX:
        return {"NVIDIA_VISIBLE_DEVICES": ",".join(str(g.index) for g in assigned)}
    return {"NVIDIA_VISIBLE_DEVICES": ",".join(g.uuid for g in assigned)}


def shim_mounts(dir_name: str, options: PlanOptions, under: str = CONTAINERS_DIR) -> tuple[Mount, ...]:
    """The shim, ``ld.so.preload``, the config, the usage and node directories of state dir
    ``<state>/<under>/<dir_name>`` (vcuda-core's answer, the DRA driver's CDI spec and NVIDIA's shared
    replicas mount the same)."""
    state = PurePosixPath(options.state_dir)
    container_dir = state / under / dir_name
    shim_rel = PurePosixPath(names.CONTAINER_SHIM_PATH).relative_to("/usr/local/kube-vgpu")
    own_records = state / NODE_DIR_NAME / NODE_TENANTS_DIR / dir_name
    return (
        Mount(names.CONTAINER_SHIM_PATH, str(PurePosixPath(options.shim_dir) / shim_rel)),
        Mount(names.LD_SO_PRELOAD_PATH, str(state / "ld.so.preload")),
        Mount(names.CONTAINER_CONFIG_PATH, str(container_dir / CONFIG_FILE_NAME)),
        Mount(names.CONTAINER_USAGE_DIR, str(container_dir / "usage"), read_only=False),
        # Every tenant's records read-only; only the container's own record directory writable (docs/shim.md).
        Mount(names.CONTAINER_NODE_DIR, str(state / NODE_DIR_NAME)),
        Mount(f"{names.CONTAINER_NODE_DIR}/{NODE_TENANTS_DIR}/{dir_name}", str(own_records), read_only=False),
    )


def _driver_mounts(options: PlanOptions) -> tuple[Mount, ...]:
    if options.list_strategy is not DeviceListStrategy.DEVICE_SPECS:
        return ()
    return tuple(Mount(c, h) for c, h in sorted(options.driver_files.items()))


def _device_nodes(assigned: Sequence[Gpu], options: PlanOptions) -> tuple[DeviceNode, ...]:
    if options.list_strategy is not DeviceListStrategy.DEVICE_SPECS:
        return ()
    paths = [*(f"/dev/nvidia{g.minor}" for g in assigned), *CONTROL_DEVICES]
    return tuple(DeviceNode(p, p) for p in paths)


def _cdi_devices(assigned: Sequence[Gpu], options: PlanOptions) -> tuple[str, ...]:
    if options.list_strategy is not DeviceListStrategy.CDI:
        return ()
    return tuple(f"{options.cdi_prefix}={g.uuid}" for g in assigned)
