"""``nvidia.com/gpu`` (and renamed shared resources) served as NVIDIA's device plugin does, beside vcuda.

:class:`NvidiaPlugins` registers one ``v1beta1.DevicePlugin`` per resource of the node's mode plan
(:mod:`plugin.core.gpumodes`): whole GPUs, time-slicing replicas or MPS replicas, device IDs as NVIDIA's
(:mod:`plugin.core.nvallocate`). Device lists and health go through :class:`plugin.server.DeviceBoard`, as
for ``vcuda-core``; MPS daemons are supervised by :class:`plugin.mps.MpsSupervisor`. The servicer only
translates protobuf; decisions are in the core.
"""

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from plugin.api.deviceplugin.v1beta1 import api_pb2
from plugin.core.allocate import NODE_DIR_NAME, PlanOptions
from plugin.core.gpu import Gpu
from plugin.core.gpumodes import (
    GpuPlan,
    ModePlan,
    decode_modes,
    encode_modes,
    gpu_of_device,
    hold_switches,
    withhold_unknown,
)
from plugin.core.nvallocate import (
    REPLICAS_DIR,
    ShareOptions,
    device_ids,
    plan_nvidia_container,
    preferred_devices,
)
from plugin.core.slices import Slice, SliceId
from plugin.kube import Cluster
from plugin.kubelet import Registrar
from plugin.mps import Mounter, MpsGpu, MpsShm, MpsSupervisor, SystemMounter, default_shm_size, quit_daemons
from plugin.podresources import ListPodResources, listing_or_none
from plugin.server import BoardServicer, ContainerEdits, DeviceBoard, allocate_response, preferred_response
from plugin.statedir import StateDir
from vcuda.model import GpuLink, GpuMode, GpuUuid
from vcuda.shimfile import NODE_TENANTS_DIR, ShimConfig

Ctx = grpc.aio.ServicerContext[Any, Any]

__all__ = [
    "MODES_FILE",
    "NvidiaOptions",
    "NvidiaPlugins",
    "NvidiaServicer",
    "resolve_modes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NvidiaOptions:
    plan: PlanOptions = field(default_factory=PlanOptions)
    share: ShareOptions = field(default_factory=ShareOptions)
    plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    mps_control: Path = Path("/usr/bin/nvidia-cuda-mps-control")
    mps_check_s: float = 5.0
    mps_shm_size: str = ""
    """Size of the MPS shared memory tmpfs (tmpfs `size=`: `8g`, `50%`); empty: half the node's memory."""
    mounter: Mounter = field(default_factory=SystemMounter)
    poll_s: float = 0.2


class NvidiaServicer(BoardServicer):
    """One resource's devices; Allocate needs no pod identity (NVIDIA's semantics), so no PreStart check."""

    preferred_allocation = True

    def __init__(
        self,
        resource: str,
        board: DeviceBoard,
        plans: Mapping[str, GpuPlan],
        gpus: Mapping[str, Gpu],
        links: Sequence[GpuLink],
        options: NvidiaOptions,
        state: StateDir,
    ) -> None:
        super().__init__(board)
        self._resource = resource
        self._plans = plans
        self._gpus = gpus
        self._links = tuple(links)
        self._options = options
        self._state = state

    async def GetPreferredAllocation(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.PreferredAllocationRequest, context: Ctx
    ) -> api_pb2.PreferredAllocationResponse:
        return await preferred_response(request, self._prefer, self._resource)

    async def _prefer(self, available: list[str], must_include: list[str], size: int) -> list[str]:
        return preferred_devices(
            available,
            must_include,
            size,
            plans=self._plans,
            links=self._links,
            numa={u: g.numa_node for u, g in self._gpus.items()},
            policy=self._options.share.policy,
        )

    async def Allocate(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.AllocateRequest, context: Ctx
    ) -> api_pb2.AllocateResponse:
        return await allocate_response(
            request, self._plan, context, resource=self._resource, refused=grpc.StatusCode.INVALID_ARGUMENT
        )

    async def _plan(self, ids: list[str]) -> ContainerEdits:
        plan = plan_nvidia_container(
            ids, gpus=self._gpus, plans=self._plans, options=self._options.plan, share=self._options.share
        )
        if plan.config is not None:
            await asyncio.to_thread(self._write_replica, plan.dir_name, plan.config, ids)
        log.info("allocated %s %s", self._resource, ",".join(ids))
        return plan

    def _write_replica(self, dir_name: str, config: ShimConfig, ids: Sequence[str]) -> None:
        """The replica set's shim files, after removing what earlier holders of any of ``ids`` left: their
        replica sets (so the GPU's placed neighbours are the live sets only: their device IDs are disjoint,
        their shares add up to at most the GPU) and this set's tenant-writable directories, whose name comes
        back with the same replicas (the last holder, ended or force-deleted and still running, would hand the
        next tenant its files: a crafted record, a FIFO). Each directory is renamed aside before it is
        removed: a holder still running keeps the old one (its bind mount follows the directory, not the
        path)."""
        root = self._state.root
        replicas = root / REPLICAS_DIR
        for folder in sorted(replicas.iterdir()) if replicas.is_dir() else ():
            if folder.name != dir_name and _recorded_ids(folder) & set(ids):
                _remove(folder)
                _remove(root / NODE_DIR_NAME / NODE_TENANTS_DIR / folder.name)
        _remove(replicas / dir_name / "usage")
        _remove(root / NODE_DIR_NAME / NODE_TENANTS_DIR / dir_name)
        (replicas / dir_name).mkdir(parents=True, exist_ok=True)
        (replicas / dir_name / _IDS_FILE).write_text(json.dumps(sorted(ids)))
        self._state.write_replica(dir_name, config)


_IDS_FILE = "device-ids.json"
"""The device IDs of a replica set (plugin-written, beside its config; not in the tenant's mounts)."""


def _recorded_ids(folder: Path) -> set[str]:
    try:
        ids = json.loads((folder / _IDS_FILE).read_text())
    except (OSError, ValueError):
        return set()
    return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()


def _remove(folder: Path) -> None:
    """Rename aside, then remove: whoever still has the directory mounted keeps it, nobody else sees it."""
    if folder.is_dir() and not folder.is_symlink():
        aside = folder.with_name(f".{folder.name}.{time.time_ns()}.gone")
        folder.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)


class NvidiaPlugins:
    """Every ``nvidia.com/gpu``-style resource of the mode plan, with its board, registrar and MPS daemons."""

    def __init__(
        self,
        modes: ModePlan,
        gpus: Sequence[Gpu],
        links: Sequence[GpuLink],
        options: NvidiaOptions,
        state: StateDir,
    ) -> None:
        self._options = options
        self.resources = modes.resources()
        self._gpus: dict[str, Gpu] = {g.uuid: g for g in gpus}
        self.boards = {r: DeviceBoard() for r in self.resources}
        self.registrars = [self._registrar(r, plans, links, state) for r, plans in self.resources.items()]
        mps = [p for plans in self.resources.values() for p in plans if p.mode is GpuMode.MPS]
        self.mps = MpsSupervisor(
            [self._mps_gpu(p) for p in mps],
            options.mps_control,
            Path(options.share.mps_dir),
            check_s=options.mps_check_s,
            every=[g.uuid for g in gpus],
            shm=MpsShm(
                Path(options.share.mps_dir) / "shm", options.mps_shm_size or _half_memory(), options.mounter
            ),
        )

    def _mps_gpu(self, plan: GpuPlan) -> MpsGpu:
        gpu = self._gpus[plan.uuid]
        memory = self._options.share.memory_mib or gpu.memory_mib // plan.replicas
        return MpsGpu(plan.uuid, max(1, 100 // plan.replicas), memory)

    def _registrar(
        self, resource: str, plans: Sequence[GpuPlan], links: Sequence[GpuLink], state: StateDir
    ) -> Registrar:
        by_uuid: dict[str, GpuPlan] = {p.uuid: p for p in plans}
        servicer = NvidiaServicer(
            resource, self.boards[resource], by_uuid, self._gpus, links, self._options, state
        )
        return Registrar.serving(  # no pod attribution to verify (nor has NVIDIA's): no PreStartContainer
            servicer,
            resource,
            plugin_dir=self._options.plugin_dir,
            socket_prefix="kube-vgpu-nv-",
            poll_s=self._options.poll_s,
        )

    async def publish(self, healthy: Mapping[GpuUuid, bool]) -> None:
        """Device lists with each GPU's health (its replicas share it)."""
        for resource, plans in self.resources.items():
            entries = [
                Slice(SliceId(i), uuid, healthy.get(uuid, True), self._gpus[uuid].numa_node)
                for i, uuid in device_ids(plans)
            ]
            await self.boards[resource].publish(entries)

    async def run(self) -> None:
        await self.mps.reset_left()  # GPUs an earlier MPS plan (or a SIGKILLed plugin) left exclusive
        if not self.resources:
            return
        log.info("serving %s", ", ".join(f"{r} ({len(p)} GPUs)" for r, p in self.resources.items()))
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.mps.run())
            if self.mps.starts:  # MPS clients need their daemon: register only once every daemon answered
                await self.mps.ready.wait()
            for registrar in self.registrars:
                tasks.create_task(registrar.run())


def _half_memory() -> str:
    try:
        return default_shm_size(Path("/proc/meminfo").read_text())
    except OSError:
        return default_shm_size("")


MODES_FILE = "modes.json"


async def _refuse(refused: Sequence[str], cluster: Cluster, node: str) -> None:
    for sentence in refused:
        log.error("GPU mode switch refused: %s", sentence)
        involved = {"kind": "Node", "namespace": "default", "name": node, "uid": ""}
        await cluster.pod_event(involved, "VGPUModeSwitchRefused", sentence)


async def resolve_modes(
    wanted: ModePlan,
    *,
    state_root: Path,
    pod_resources: ListPodResources,
    core: str,
    cluster: Cluster,
    node: str,
) -> ModePlan:
    """The plan to serve: ``wanted``, but a GPU whose mode would change while a container holds it keeps its
    previous mode (logged, and a Warning event on the Node) until a later start finds it free. The served
    plan is recorded in ``<state>/modes.json`` (none yet: every GPU was vcuda, as before NVIDIA's modes
    existed); when PodResources cannot be read every switch waits. An unreadable record says nothing of
    the previous modes: a GPU a container holds in a way ``wanted`` would not serve it is withheld
    (:func:`plugin.core.gpumodes.withhold_unknown`), and the record is rewritten only once none is."""
    record = state_root / MODES_FILE
    try:
        previous = decode_modes(json.loads(record.read_text()))
    except FileNotFoundError:  # before the first record every GPU was sold as vcuda shares
        previous = {p.uuid: GpuPlan(p.uuid, p.index, GpuMode.VCUDA) for p in wanted.gpus}
    except (OSError, ValueError) as err:
        log.error(
            "the record of served GPU modes %s is unreadable (%s): a GPU a container holds in another mode "
            "than this plan's is withheld until it is free",
            record,
            err,
        )
        listing = await listing_or_none(pod_resources)
        held_by = None if listing is None else listing.held_by_resource()
        effective, refused = withhold_unknown(wanted, held_by, core)
        await _refuse(refused, cluster, node)
        if not refused:  # kept unreadable while a GPU is withheld: the next start withholds it again
            _write_record(record, effective)
        return effective
    held: frozenset[str] = frozenset()
    if any(previous.get(p.uuid) not in (None, p) for p in wanted.gpus):
        resources = sorted({core, *(p.resource for p in previous.values() if p.resource)})
        listing = await listing_or_none(pod_resources)
        held = (
            frozenset(previous)
            if listing is None
            else frozenset(gpu_of_device(i) for i in listing.held_ids(resources))
        )
    effective, refused = hold_switches(previous, wanted, held)
    await _refuse(refused, cluster, node)
    _write_record(record, effective)
    return effective


def _write_record(record: Path, plan: ModePlan) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(encode_modes(plan)))
    os.replace(tmp, record)


async def quit_recorded_mps(
    state_root: Path, control: Path, mps_dir: Path, mounter: Mounter | None = None
) -> list[str]:
    """``--uninstall``: tell the MPS daemon of every GPU the last served plan shared by MPS to quit, then
    unmount and empty their shared memory."""
    mounter = mounter or SystemMounter()
    try:
        served = decode_modes(json.loads((state_root / MODES_FILE).read_text()))
    except (OSError, ValueError):
        return []
    uuids: list[str] = sorted(p.uuid for p in served.values() if p.mode is GpuMode.MPS)
    await quit_daemons(control, mps_dir, uuids)
    if uuids:  # the daemons' shared memory goes with them
        await asyncio.to_thread(MpsShm(mps_dir / "shm", "", mounter).release)
    return uuids
