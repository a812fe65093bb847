"""What preparing one claim makes on the node: shim limits, a CDI spec, and the kubelet's answer. Pure.

Per claim (``<claim-uid>``, owner pod ``<pod-uid>`` or the claim itself, :mod:`plugin.core.dra`):

- the shim config of state directory ``<pod-uid>_dra-<claim-uid>`` (the shim finds its own node record
  directory as ``<config pod_uid>_<config container>``, so the config's container is ``dra-<claim-uid>``):
  one GPU record per allocated GPU, memory and cores from the consumed capacity summed over the claim's
  results on that GPU; all of a GPU when every core of it is taken; the soft limit from ``coreLimit``;
- a CDI spec of kind ``kube-vgpu.<domain>/claim``: one device ``<claim-uid>-<device>`` per GPU with its
  device node, and spec-wide edits (the driver's control nodes, libraries and hooks as in
  :mod:`plugin.core.cdi`, the shim mounts of :func:`plugin.core.allocate.shim_mounts`, identity env);
- the devices answered to the kubelet: one per result, with its request (sub-request names cut to the
  request, as containers name requests) and the CDI ID of its GPU.

A claim of MIG instances (``mig-<uuid>``) gets no shim: an instance is hardware-isolated and taken whole. Its
CDI device ``<claim-uid>-<device>`` carries the parent's ``/dev/nvidia<minor>`` and the instance's
capability devices (:func:`plugin.core.mig_allocate.instance_nodes`, as the MIG device plugin gives them);
the shim config has no GPU, so prepare writes no state files. Refused, for that claim: a consumed capacity
or a share ID on an instance (it is whole), an instance whose parent (or itself) is unhealthy, one the node
does not have or whose capability devices the driver does not list, and a claim mixing instances with
shim-shared GPUs (the shim would be preloaded beside an instance it does not know; use two claims).
"""

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from plugin.core.allocate import Mount, PlanOptions, shim_mounts
from plugin.core.cdi import DriverFiles, common_edits
from plugin.core.dra import (
    ClaimAllocation,
    ClaimError,
    ClaimRef,
    DeviceResult,
    claim_cdi_name,
    claim_container,
)
from plugin.core.errors import AllocationError
from plugin.core.gpu import Gpu
from plugin.core.mig import MigDevice
from plugin.core.mig_allocate import instance_nodes
from vcuda import names
from vcuda.shimfile import MAX_GPUS, GpuLimit, ShimConfig
from vcuda.units import CORE_PER_GPU, MIB, mib_to_bytes

__all__ = ["ClaimPlan", "PreparedDevice", "check_room", "claim_spec", "plan_claim"]


@dataclass(frozen=True, slots=True)
class PreparedDevice:
    """One device of the kubelet's answer."""

    requests: tuple[str, ...]
    pool: str
    device: str
    cdi_ids: tuple[str, ...]
    share_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """Everything prepare writes for one claim; ``gpus`` pairs each CDI device name with its GPU, ``migs``
    with its MIG instance's device nodes (a claim has one kind or the other; ``config`` lists no GPU for
    MIG instances: no shim)."""

    ref: ClaimRef
    dir_name: str
    config: ShimConfig
    gpus: tuple[tuple[str, Gpu], ...]
    devices: tuple[PreparedDevice, ...]
    migs: tuple[tuple[str, tuple[str, ...]], ...] = ()


def plan_claim(
    alloc: ClaimAllocation,
    gpus: Mapping[str, Gpu | MigDevice],
    *,
    pool: str,
    kind: str,
    unhealthy: Collection[str] = (),
    minors: Mapping[str, int] | None = None,
) -> ClaimPlan:
    """``gpus`` maps device names to this node's shareable GPUs and MIG instances, ``unhealthy`` holds the
    UUIDs of GPUs (or instances) out of service (a claim allocated before its GPU failed gets a clear error,
    not a GPU that cannot run CUDA), ``minors`` the driver's capability minors (``mig-minors``; needed for
    MIG instances only); raises :class:`ClaimError`."""
    ref = alloc.ref
    by_device: dict[str, list[DeviceResult]] = {}
    for r in alloc.results:
        if r.pool != pool:
            raise ClaimError(f"claim {ref}: device {r.device!r} of pool {r.pool!r} is not on this node")
        if r.device not in gpus:
            raise ClaimError(f"claim {ref}: device {r.device!r} is not a GPU of this node")
        _check_health(ref, r.device, gpus[r.device], unhealthy)
        by_device.setdefault(r.device, []).append(r)
    if len(by_device) > MAX_GPUS:
        raise ClaimError(f"claim {ref}: {len(by_device)} GPUs, at most {MAX_GPUS} per claim")
    cdi_names = {d: claim_cdi_name(ref.uid, d) for d in sorted(by_device)}
    shared = {d: g for d in sorted(by_device) if isinstance(g := gpus[d], Gpu)}
    migs = {d: m for d in sorted(by_device) if isinstance(m := gpus[d], MigDevice)}
    if shared and migs:
        raise ClaimError(
            f"claim {ref}: MIG instances ({', '.join(migs)}) and shared GPUs ({', '.join(shared)}) in one "
            "claim; ask for them in separate claims"
        )
    limits = tuple(_limit(ref, g, by_device[d]) for d, g in shared.items())
    nodes = tuple((cdi_names[d], _mig_nodes(ref, d, m, by_device[d], minors or {})) for d, m in migs.items())
    container = claim_container(ref.uid)
    config = ShimConfig(alloc.owner_uid, ref.namespace, alloc.owner_name, container, limits)
    devices = tuple(
        PreparedDevice(
            (r.request.split("/")[0],), r.pool, r.device, (f"{kind}={cdi_names[r.device]}",), r.share_id
        )
        for r in alloc.results
    )
    pairs = tuple((cdi_names[d], g) for d, g in shared.items())
    return ClaimPlan(ref, f"{alloc.owner_uid}_{container}", config, pairs, devices, nodes)


def check_room(plan: ClaimPlan, others: Iterable[ShimConfig]) -> None:
    """Refuse a claim whose shares, added to those of the claims prepared here (``others``: their configs,
    not this claim's), exceed a GPU's memory or cores. The scheduler keeps the sum within the device, but it
    may allocate the capacity of a claim it deallocated before the kubelet unprepared it here; the kubelet
    retries the prepare, which succeeds once the old claim is gone. Raises :class:`ClaimError`."""
    taken = list(others)
    for limit, (_, gpu) in zip(plan.config.gpus, plan.gpus, strict=True):
        used = [g for c in taken for g in c.gpus if g.uuid == limit.uuid]
        memory = limit.memory_limit_bytes + sum(g.memory_limit_bytes for g in used)
        cores = limit.core_limit + sum(g.core_limit for g in used)
        if memory > mib_to_bytes(gpu.memory_mib) or cores > CORE_PER_GPU:
            raise ClaimError(
                f"claim {plan.ref}: GPU {gpu.uuid} is in use by {len(used)} other prepared claims "
                f"({cores - limit.core_limit} % of cores, {(memory - limit.memory_limit_bytes) >> 20} MiB); "
                "its share does not fit until they are unprepared"
            )


def _check_health(ref: ClaimRef, name: str, device: Gpu | MigDevice, unhealthy: Collection[str]) -> None:
    if isinstance(device, MigDevice) and device.parent in unhealthy:
        raise ClaimError(
            f"claim {ref}: MIG instance {device.uuid} ({name}): its GPU {device.parent} is unhealthy"
        )
    if device.uuid in unhealthy:
        what = "MIG instance" if isinstance(device, MigDevice) else "GPU"
        raise ClaimError(f"claim {ref}: {what} {device.uuid} ({name}) is unhealthy")


def _mig_nodes(
    ref: ClaimRef, name: str, mig: MigDevice, results: list[DeviceResult], minors: Mapping[str, int]
) -> tuple[str, ...]:
    """The instance's device nodes; a result that consumed capacity or shares it is refused (it is whole)."""
    for r in results:
        if r.consumed or r.share_id is not None:
            taken = ", ".join(r.consumed) or f"share {r.share_id}"
            raise ClaimError(
                f"claim {ref}: MIG instance {name} is taken whole, but the allocation consumed {taken}"
            )
    if len(results) > 1:
        raise ClaimError(f"claim {ref}: MIG instance {name} is allocated {len(results)} times; it is whole")
    try:
        return instance_nodes(mig, minors)
    except AllocationError as err:
        raise ClaimError(f"claim {ref}: {err}") from err


def _limit(ref: ClaimRef, gpu: Gpu, results: list[DeviceResult]) -> GpuLimit:
    """The claim's limits on one GPU: its results' consumed capacity added up."""
    total = mib_to_bytes(gpu.memory_mib)
    memory = cores = 0
    for r in results:
        if r.memory_bytes is not None and not MIB <= r.memory_bytes <= total:
            raise ClaimError(
                f"claim {ref}: memory {r.memory_bytes} B of {r.device} is outside 1 MiB..{total}"
            )
        if r.cores is not None and not 1 <= r.cores <= CORE_PER_GPU:
            raise ClaimError(f"claim {ref}: cores {r.cores} of {r.device} is outside 1..{CORE_PER_GPU}")
        memory += total if r.memory_bytes is None else r.memory_bytes
        cores += CORE_PER_GPU if r.cores is None else r.cores
    if memory > total or cores > CORE_PER_GPU:
        raise ClaimError(f"claim {ref}: its results on {results[0].device} add up to more than the GPU")
    if cores == CORE_PER_GPU:
        return GpuLimit(gpu.uuid, total, CORE_PER_GPU, CORE_PER_GPU)
    asked = [r.parameters.core_limit for r in results if r.parameters.core_limit is not None]
    soft = min(CORE_PER_GPU, max([cores, *asked]))
    return GpuLimit(gpu.uuid, memory, cores, soft)


def _cdi_mount(m: Mount) -> dict[str, Any]:
    mode = "ro" if m.read_only else "rw"
    return {
        "hostPath": m.host_path,
        "containerPath": m.container_path,
        "options": [mode, "nosuid", "nodev", "bind"],
    }


def claim_spec(
    plan: ClaimPlan, files: DriverFiles, options: PlanOptions, *, kind: str, version: str
) -> dict[str, Any]:
    """The claim's CDI spec (a JSON-ready dict)."""
    edits = common_edits(files)
    config = plan.config
    mig_devices = [
        {"name": name, "containerEdits": {"deviceNodes": [{"path": p} for p in paths]}}
        for name, paths in plan.migs
    ]
    if not config.gpus:  # MIG instances only: hardware-isolated, no shim to preload or configure
        return {"cdiVersion": version, "kind": kind, "devices": mig_devices, "containerEdits": edits}
    identity = {
        names.ENV_POD_NAME: config.pod_name,
        names.ENV_NAMESPACE: config.namespace,
        names.ENV_POD_UID: config.pod_uid,
        names.ENV_CONTAINER_NAME: config.container,
    }
    edits["env"] = [*edits["env"], *(f"{k}={v}" for k, v in identity.items())]
    edits["mounts"] = [*edits.get("mounts", []), *map(_cdi_mount, shim_mounts(plan.dir_name, options))]
    devices = [
        {"name": name, "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{gpu.minor}"}]}}
        for name, gpu in plan.gpus
    ]
    return {"cdiVersion": version, "kind": kind, "devices": devices, "containerEdits": edits}
