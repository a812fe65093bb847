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
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from plugin.core.allocate import Mount, PlanOptions, shim_mounts
from plugin.core.cdi import DriverFiles, common_edits
from plugin.core.dra import ClaimAllocation, ClaimError, ClaimRef, DeviceResult
from plugin.core.gpu import Gpu
from vcuda import names
from vcuda.shimfile import MAX_GPUS, GpuLimit, ShimConfig
from vcuda.units import CORE_PER_GPU, MIB, mib_to_bytes

__all__ = ["ClaimPlan", "PreparedDevice", "claim_spec", "plan_claim"]


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
    """Everything prepare writes for one claim; ``gpus`` pairs each CDI device name with its GPU."""

    ref: ClaimRef
    dir_name: str
    config: ShimConfig
    gpus: tuple[tuple[str, Gpu], ...]
    devices: tuple[PreparedDevice, ...]


def plan_claim(
    alloc: ClaimAllocation,
    gpus: Mapping[str, Gpu],
    *,
    pool: str,
    kind: str,
    unhealthy: Collection[str] = (),
) -> ClaimPlan:
    """``gpus`` maps device names to this node's shareable GPUs, ``unhealthy`` holds the UUIDs of those out of
    service (a claim allocated before its GPU failed gets a clear error, not a GPU that cannot run CUDA);
    raises :class:`ClaimError`."""
    ref = alloc.ref
    by_device: dict[str, list[DeviceResult]] = {}
    for r in alloc.results:
        if r.pool != pool:
            raise ClaimError(f"claim {ref}: device {r.device!r} of pool {r.pool!r} is not on this node")
        if r.device not in gpus:
            raise ClaimError(f"claim {ref}: device {r.device!r} is not a GPU of this node")
        if gpus[r.device].uuid in unhealthy:
            raise ClaimError(f"claim {ref}: GPU {gpus[r.device].uuid} ({r.device}) is unhealthy")
        by_device.setdefault(r.device, []).append(r)
    if len(by_device) > MAX_GPUS:
        raise ClaimError(f"claim {ref}: {len(by_device)} GPUs, at most {MAX_GPUS} per claim")
    cdi_names = {d: f"{ref.uid}-{d}" for d in sorted(by_device)}
    limits = tuple(_limit(ref, gpus[d], rs) for d, rs in sorted(by_device.items()))
    container = f"dra-{ref.uid}"
    config = ShimConfig(alloc.owner_uid, ref.namespace, alloc.owner_name, container, limits)
    devices = tuple(
        PreparedDevice(
            (r.request.split("/")[0],), r.pool, r.device, (f"{kind}={cdi_names[r.device]}",), r.share_id
        )
        for r in alloc.results
    )
    pairs = tuple((cdi_names[d], gpus[d]) for d in sorted(by_device))
    return ClaimPlan(ref, f"{alloc.owner_uid}_{container}", config, pairs, devices)


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
