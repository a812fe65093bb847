"""``nvidia.com/gpu`` devices as NVIDIA's plugin names them: IDs, preferred sets, Allocate answers.

Device IDs are GPU UUIDs for whole GPUs and ``<uuid>::<n>`` (n = 0..replicas-1) for time-slicing and MPS
replicas, as NVIDIA's ``AnnotatedID``. ``GetPreferredAllocation``: whole GPUs are chosen for the best
connected set (most NVLinks, then the closest PCIe level, then one NUMA node; ties end on the UUIDs), the way
NVIDIA's aligned allocator does; replicas are spread over GPUs (``distributed``: the GPU with the fewest
replicas taken first) or packed (``packed``), as NVIDIA's ``sharedDevicesAllocationPolicy``.

The Allocate answer exposes the GPUs under the node's list strategy (as :mod:`plugin.core.allocate`), adds
for MPS the client environment of the GPU's daemon, and for isolated time-slicing the shim with memory =
the GPU's memory / replicas (or ``memoryMiB``) and compute = 100 / replicas per replica held. Pure.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb
from pathlib import PurePosixPath
from typing import Final

from plugin.core.allocate import (
    CONTROL_DEVICES,
    DeviceIdStrategy,
    DeviceListStrategy,
    DeviceNode,
    Mount,
    PlanOptions,
    shim_mounts,
)
from plugin.core.errors import AllocationError
from plugin.core.gpu import Gpu
from plugin.core.gpumodes import GpuPlan
from plugin.core.nvflags import AllocationPolicy
from vcuda.model import GpuLink, GpuMode, GpuUuid
from vcuda.shimfile import GpuLimit, ShimConfig
from vcuda.units import CORE_PER_GPU, mib_to_bytes

__all__ = [
    "MPS_PIPE_PATH",
    "REPLICAS_DIR",
    "NvidiaPlan",
    "ShareOptions",
    "device_ids",
    "parse_device_id",
    "plan_nvidia_container",
    "preferred_devices",
    "replica_dir_name",
]

MPS_PIPE_PATH: Final = "/var/run/kube-vgpu-mps"
"""Where an MPS client finds its GPU's daemon pipe (``CUDA_MPS_PIPE_DIRECTORY``)."""
REPLICAS_DIR: Final = "replicas"
"""``<state>/replicas/<dir>``: the shim files of isolated time-slicing replicas (no pod identity at
Allocate, so not under ``containers/``, which the reclaimer scans by pod)."""
_EXHAUSTIVE_LIMIT: Final = 5000


@dataclass(frozen=True, slots=True)
class ShareOptions:
    """Settings of the shared modes (from NVIDIA's config and its ``kubeVgpu`` section)."""

    mps_dir: str = "/var/lib/kube-vgpu/mps"
    isolation: bool = False
    memory_mib: int = 0
    fail_requests_greater_than_one: bool = False
    policy: AllocationPolicy = AllocationPolicy.DISTRIBUTED


@dataclass(frozen=True, slots=True)
class NvidiaPlan:
    """The Allocate answer for one container; ``config`` (isolated time-slicing) goes to ``dir_name``."""

    envs: Mapping[str, str]
    mounts: tuple[Mount, ...]
    devices: tuple[DeviceNode, ...]
    cdi_devices: tuple[str, ...]
    dir_name: str = ""
    config: ShimConfig | None = None


def device_ids(plans: Sequence[GpuPlan]) -> list[tuple[str, GpuUuid]]:
    """(device ID, GPU) for every device of ``plans``, in GPU index order then replica number."""
    out = []
    for p in sorted(plans, key=lambda p: (p.index, p.uuid)):
        if p.replicas > 1:
            out += [(f"{p.uuid}::{n}", p.uuid) for n in range(p.replicas)]
        else:
            out.append((str(p.uuid), p.uuid))
    return out


def parse_device_id(device_id: str, plans: Mapping[str, GpuPlan]) -> GpuPlan:
    """The plan of the GPU behind ``device_id``; raises :class:`AllocationError` for an ID not served."""
    uuid, sep, n = device_id.partition("::")
    plan = plans.get(uuid)
    replica_ok = plan is not None and (
        (not sep and plan.replicas == 1) or (sep and n.isdigit() and int(n) < plan.replicas)
    )
    if plan is None or not replica_ok:
        raise AllocationError(f"device ID {device_id!r} is not served by this resource")
    return plan


# --- GetPreferredAllocation -----------------------------------------------------------------------


def _pair_score(link: GpuLink | None) -> tuple[int, int]:
    return (link.nvlinks, -int(link.pcie)) if link else (0, -50)


def _set_score(
    uuids: Sequence[str], links: Mapping[frozenset[str], GpuLink], numa: Mapping[str, int]
) -> tuple[int, int, int]:
    pairs = [_pair_score(links.get(frozenset(p))) for p in combinations(uuids, 2)]
    return (sum(p[0] for p in pairs), sum(p[1] for p in pairs), -len({numa.get(u, -1) for u in uuids}))


def _whole(
    available: Sequence[str],
    must: Sequence[str],
    size: int,
    links: Sequence[GpuLink],
    numa: Mapping[str, int],
) -> list[str]:
    by_pair: dict[frozenset[str], GpuLink] = {frozenset((str(x.a), str(x.b))): x for x in links}
    rest = sorted(set(available) - set(must))
    need = size - len(must)
    if need <= 0:
        return list(must)[:size]
    if comb(len(rest), need) > _EXHAUSTIVE_LIMIT:  # a huge node: the first set by UUID, still deterministic
        return [*must, *rest[:need]]
    # max keeps the first best set; combinations of the sorted IDs come in order: ties end on the UUIDs
    best = max(combinations(rest, need), key=lambda extra: _set_score([*must, *extra], by_pair, numa))
    return [*must, *best]


def _gpu(device_id: str) -> str:
    return device_id.partition("::")[0]


def _replicas(
    available: Sequence[str],
    must: Sequence[str],
    size: int,
    plans: Mapping[str, GpuPlan],
    policy: AllocationPolicy,
) -> list[str]:
    """NVIDIA's greedy pick: each step takes a replica of the GPU with the fewest (distributed) or most
    (packed) replicas already taken, then the GPU picked from least in this request, then the ID."""
    free = sorted(i for i in available if i not in set(must))
    gpus = {_gpu(i) for i in [*available, *must]}
    taken = {u: plans[u].replicas - sum(_gpu(i) == u for i in available) for u in gpus}
    picked: dict[str, int] = {}
    sign = 1 if policy is AllocationPolicy.DISTRIBUTED else -1
    chosen = list(must)
    for _ in range(size - len(must)):
        free.sort(key=lambda i: (sign * taken[_gpu(i)], picked.get(_gpu(i), 0), i))
        device = free.pop(0)
        taken[_gpu(device)] += 1
        picked[_gpu(device)] = picked.get(_gpu(device), 0) + 1
        chosen.append(device)
    return chosen


def preferred_devices(
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    *,
    plans: Mapping[str, GpuPlan],
    links: Sequence[GpuLink],
    numa: Mapping[str, int],
    policy: AllocationPolicy,
) -> list[str]:
    """The devices to suggest; raises :class:`AllocationError` when ``available`` cannot fill ``size``."""
    if len(set(available) | set(must_include)) < size:
        raise AllocationError(f"not enough available devices to satisfy an allocation of {size}")
    served = [parse_device_id(i, plans) for i in [*available, *must_include]]  # every ID, before any is used
    if any(p.replicas > 1 for p in served):
        return _replicas(available, must_include, size, plans, policy)
    return _whole(available, must_include, size, links, numa)


# --- Allocate -------------------------------------------------------------------------------------


REPLICA_CONTAINER: Final = "replica"


def replica_dir_name(ids: Sequence[str]) -> str:
    """The shim directory of isolated replicas, ``<key>_replica``: the shim names its own record directory
    ``<config pod_uid>_<config container>``, so the config carries ``<key>`` and ``replica`` (plugin-written,
    never a tenant's). ``<key>`` is the first device ID (``::`` as ``.``) and the count: unique among the
    containers running, since a device is held by one container at a time."""
    first = sorted(ids)[0].replace("::", ".")
    return f"{first}-n{len(ids)}_{REPLICA_CONTAINER}"


def _visibility(
    gpus: Sequence[Gpu], options: PlanOptions
) -> tuple[dict[str, str], tuple[DeviceNode, ...], tuple[str, ...]]:
    strategy = options.list_strategy
    if strategy is DeviceListStrategy.ENVVAR:
        named = [str(g.index) if options.id_strategy is DeviceIdStrategy.INDEX else g.uuid for g in gpus]
        return {"NVIDIA_VISIBLE_DEVICES": ",".join(named)}, (), ()
    void = {"NVIDIA_VISIBLE_DEVICES": "void"}  # keep the runtime hook from exposing the image's "all"
    if strategy is DeviceListStrategy.CDI:
        return void, (), tuple(f"{options.cdi_prefix}={g.uuid}" for g in gpus)
    paths = [*(f"/dev/nvidia{g.minor}" for g in gpus), *CONTROL_DEVICES]
    return void, tuple(DeviceNode(p, p) for p in paths), ()


def _mps(gpu: Gpu, held: int, plan: GpuPlan, share: ShareOptions) -> tuple[dict[str, str], tuple[Mount, ...]]:
    root = PurePosixPath(share.mps_dir) / gpu.uuid
    memory = (share.memory_mib or gpu.memory_mib // plan.replicas) * held
    envs = {
        "CUDA_MPS_PIPE_DIRECTORY": MPS_PIPE_PATH,
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(min(100, 100 * held // plan.replicas)),
        # By the client's device ordinal (it sees this GPU alone): the driver ignores a limit keyed by UUID,
        # which NVIDIA's plugin found out and worked around the same way (v0.15.0).
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={min(memory, gpu.memory_mib)}M",
    }
    mounts = (
        Mount(MPS_PIPE_PATH, str(root / "pipe"), read_only=False),
        Mount("/dev/shm", str(PurePosixPath(share.mps_dir) / "shm"), read_only=False),
    )
    return envs, mounts


def _isolation(
    ids: Sequence[str],
    counts: Mapping[str, int],
    gpus: Mapping[str, Gpu],
    plans: Mapping[str, GpuPlan],
    share: ShareOptions,
    options: PlanOptions,
) -> tuple[str, ShimConfig, tuple[Mount, ...]]:
    dir_name = replica_dir_name(ids)
    limits = []
    for uuid, held in counts.items():
        replicas, gpu = plans[uuid].replicas, gpus[uuid]
        per_replica = gpu.memory_mib if replicas == 1 else share.memory_mib or gpu.memory_mib // replicas
        memory = min(gpu.memory_mib, per_replica * held)
        cores = max(1, min(CORE_PER_GPU, CORE_PER_GPU * held // replicas))
        limits.append(GpuLimit(GpuUuid(uuid), mib_to_bytes(memory), cores, cores))
    key = dir_name.rpartition("_")[0]
    config = ShimConfig(key, "", key, REPLICA_CONTAINER, tuple(limits))
    mounts = shim_mounts(dir_name, options, under=REPLICAS_DIR)
    return dir_name, config, mounts


def plan_nvidia_container(
    ids: Sequence[str],
    *,
    gpus: Mapping[str, Gpu],
    plans: Mapping[str, GpuPlan],
    options: PlanOptions,
    share: ShareOptions,
) -> NvidiaPlan:
    """The answer for one container; raises :class:`AllocationError` for an ID not served or given twice, a
    shared request over one device with ``failRequestsGreaterThanOne``, or MPS replicas of two GPUs."""
    if len(set(ids)) != len(ids):  # a device counted twice would give the container twice its share
        raise AllocationError(f"a device ID is listed more than once in {list(ids)}")
    held = [parse_device_id(i, plans) for i in ids]
    counts: dict[str, int] = {}
    for p in held:
        counts[p.uuid] = counts.get(p.uuid, 0) + 1
    shared = [p for p in held if p.replicas > 1]
    if shared and len(ids) > 1 and share.fail_requests_greater_than_one:
        raise AllocationError(
            f"request for '{shared[0].resource}: {len(ids)}' too large: maximum request size for shared "
            "resources is 1 (failRequestsGreaterThanOne)"
        )
    visible = [gpus[u] for u in sorted(counts, key=lambda u: (gpus[u].index, u))]
    envs, devices, cdi = _visibility(visible, options)
    mounts: tuple[Mount, ...] = (
        tuple(Mount(c, h) for c, h in sorted(options.driver_files.items())) if devices else ()
    )
    if any(p.mode is GpuMode.MPS for p in held):
        if len(counts) > 1:
            raise AllocationError(
                "MPS replicas of two GPUs in one container: each GPU has its own MPS daemon"
            )
        uuid = next(iter(counts))
        mps_env, mps_mounts = _mps(gpus[uuid], counts[uuid], plans[uuid], share)
        return NvidiaPlan({**envs, **mps_env}, (*mounts, *mps_mounts), devices, cdi)
    if share.isolation and shared:
        dir_name, config, shim = _isolation(ids, counts, gpus, plans, share, options)
        return NvidiaPlan(envs, (*mounts, *shim), devices, cdi, dir_name, config)
    return NvidiaPlan(envs, mounts, devices, cdi)
