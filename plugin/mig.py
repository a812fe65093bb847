"""MIG device plugins: one ``v1beta1.DevicePlugin`` per MIG resource, with per-instance health.

:class:`MigPlugins` builds, from discovery and the strategy (:mod:`plugin.core.mig`), one resource per
profile (``mixed``) or ``<domain>/gpu`` (``single``); each gets its own socket, :class:`MigServicer` and
:class:`plugin.kubelet.Registrar`, as the kubelet needs one registration per resource. Device lists live
in :class:`plugin.server.DeviceBoard` (a MIG instance travels as a one-device
:class:`plugin.core.slices.Slice` whose ID is the MIG UUID) and go out through
:func:`plugin.server.device_list`, exactly as ``vcuda-core``'s; Allocate answers through
:func:`plugin.server.allocate_response`, as every servicer's do.

Health reuses :class:`plugin.health.HealthMonitor` over :class:`MigEventSource`, which names MIG instances
instead of GPUs: an XID carrying GPU/compute instance ids marks only that instance, a whole-GPU XID or a
lost GPU marks every instance of the GPU (:func:`plugin.core.mig.xid_targets`).
"""

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc

from plugin.api.deviceplugin.v1beta1 import api_pb2
from plugin.cdi import read_mig_minors
from plugin.core.allocate import DeviceListStrategy, PlanOptions
from plugin.core.cdi import DEFAULT_CDI_VERSION, DriverFiles, with_common_edits
from plugin.core.errors import InvalidDeviceIdsError
from plugin.core.gpu import Gpu, GpuSource, NodeGpus, XidEvent
from plugin.core.health import HealthPolicy
from plugin.core.mig import MigDevice, MigStrategy, mig_devices, mig_resources, xid_targets
from plugin.core.mig_allocate import MIG_MINORS_PATH, cdi_spec, plan_mig_container
from plugin.core.slices import Slice, SliceId, plain_pick
from plugin.health import HealthMonitor
from plugin.kubelet import Registrar
from plugin.server import BoardServicer, ContainerEdits, DeviceBoard, allocate_response, preferred_response
from vcuda.model import GpuUuid
from vcuda.names import Names

Ctx = grpc.aio.ServicerContext[Any, Any]

__all__ = [
    "MigEventSource",
    "MigOptions",
    "MigPlugins",
    "MigServicer",
    "mig_capable",
]

log = logging.getLogger(__name__)


@runtime_checkable
class _ProfileSource(Protocol):
    def mig_profiles(self, uuid: GpuUuid) -> tuple[Any, ...]: ...


def mig_capable(source: object, gpus: Iterable[Gpu]) -> frozenset[GpuUuid]:
    """GPUs that offer MIG profiles (asked of NVML when the source can tell; else those with MIG on)."""
    if isinstance(source, _ProfileSource):
        return frozenset(g.uuid for g in gpus if source.mig_profiles(g.uuid))
    return frozenset(g.uuid for g in gpus if g.mig_enabled or g.mig_pending)


def _board_entries(devices: Sequence[MigDevice], healthy: Mapping[GpuUuid, bool]) -> list[Slice]:
    return [
        Slice(SliceId(d.uuid), d.parent, healthy.get(GpuUuid(d.uuid), True), d.numa_node) for d in devices
    ]


async def _plain_pick(available: list[str], must_include: list[str], size: int) -> list[str]:
    return plain_pick(available, must_include, size)


class MigServicer(BoardServicer):
    """One MIG resource. Instances are whole and isolated: no attribution, no PreStartContainer check."""

    def __init__(
        self,
        board: DeviceBoard,
        devices: Sequence[MigDevice],
        options: PlanOptions,
        minors: Callable[[], Mapping[str, int]],
    ) -> None:
        super().__init__(board)
        self._devices = {d.uuid: d for d in devices}
        self._options = options
        self._minors = minors

    async def GetPreferredAllocation(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.PreferredAllocationRequest, context: Ctx
    ) -> api_pb2.PreferredAllocationResponse:
        return await preferred_response(request, _plain_pick, "MIG")  # whole instances: any will do

    async def Allocate(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.AllocateRequest, context: Ctx
    ) -> api_pb2.AllocateResponse:
        return await allocate_response(
            request,
            self._plan,
            context,
            resource="MIG devices",
            refused=grpc.StatusCode.FAILED_PRECONDITION,
        )

    async def _plan(self, ids: list[str]) -> ContainerEdits:
        unknown = [i for i in ids if i not in self._devices]
        if unknown:
            raise InvalidDeviceIdsError(f"unknown MIG devices {unknown}")
        if len(set(ids)) != len(ids):  # the kubelet never asks so; NVIDIA's plugin refuses it too
            raise InvalidDeviceIdsError(f"a MIG device is listed more than once in {ids}")
        minors = self._minors() if self._options.list_strategy is DeviceListStrategy.DEVICE_SPECS else {}
        plan = plan_mig_container([self._devices[i] for i in ids], self._options, minors)
        log.info("allocated MIG instances %s", ",".join(ids))
        return plan


class MigEventSource:
    """A :class:`plugin.core.gpu.GpuSource` whose "GPUs" are MIG instances, over the physical source."""

    def __init__(self, source: GpuSource, devices: Sequence[MigDevice]) -> None:
        self._source = source
        self._devices = tuple(devices)
        self._parent = {d.uuid: d.parent for d in devices}

    def discover(self) -> NodeGpus:
        return self._source.discover()

    def is_reachable(self, uuid: GpuUuid) -> bool:
        return self._source.is_reachable(self._parent[uuid])

    async def xid_events(self) -> AsyncIterator[XidEvent]:
        stream = self._source.xid_events()
        try:
            async for event in stream:
                for target in xid_targets(event, self._devices):
                    yield XidEvent(GpuUuid(target), event.xid)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()


@dataclass(frozen=True, slots=True)
class MigOptions:
    """MIG serving settings; ``minors_path`` and ``poll_s`` are for tests."""

    strategy: MigStrategy = MigStrategy.NONE
    plan: PlanOptions = field(default_factory=PlanOptions)
    cdi_dir: Path = Path("/var/run/cdi")
    cdi_files: DriverFiles | None = None
    """The driver's files for the spec's common edits (plugin.cdi); None: device nodes only."""
    cdi_version: str = DEFAULT_CDI_VERSION
    plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    probe_s: float = 0.5
    poll_s: float = 0.2
    minors_path: Path = Path(MIG_MINORS_PATH)


class MigPlugins:
    """Every MIG resource of the node (none under ``none`` or without instances). Raises
    :class:`plugin.core.mig.MigConfigError` for ``single`` with several profiles."""

    def __init__(self, node: NodeGpus, source: GpuSource, names: Names, options: MigOptions) -> None:
        self._options = options
        self.devices = mig_devices(node.gpus)
        self.resources = mig_resources(self.devices, options.strategy, names)
        self.boards = {r: DeviceBoard() for r in self.resources}
        self.registrars = [self._registrar(r, devices) for r, devices in self.resources.items()]
        served = [d for devices in self.resources.values() for d in devices]
        self.health = HealthMonitor(
            MigEventSource(source, served),
            [GpuUuid(d.uuid) for d in served],
            options.policy,
            self._health_changed,
            options.probe_s,
        )

    def _registrar(self, resource: str, devices: Sequence[MigDevice]) -> Registrar:
        servicer = MigServicer(
            self.boards[resource],
            devices,
            self._options.plan,
            lambda: read_mig_minors(self._options.minors_path),
        )
        return Registrar.serving(
            servicer,
            resource,
            plugin_dir=self._options.plugin_dir,
            socket_prefix="kube-vgpu-",
            poll_s=self._options.poll_s,
        )

    async def _health_changed(self, healthy: Mapping[GpuUuid, bool]) -> None:
        for resource, devices in self.resources.items():
            await self.boards[resource].publish(_board_entries(devices, healthy))

    def write_cdi_spec(self) -> Path:
        """The MIG spec next to the whole-GPU one: ``<cdi-dir>/<kind>-mig.json``."""
        kind = self._options.plan.cdi_prefix
        served = [d for devices in self.resources.values() for d in devices]
        spec = cdi_spec(kind, served, read_mig_minors(self._options.minors_path))
        if self._options.cdi_files is not None:
            spec = with_common_edits(spec, self._options.cdi_files, self._options.cdi_version)
        missing = len(served) - len(spec["devices"])
        if missing:
            log.error("%d MIG instances have no capability minors in %s", missing, self._options.minors_path)
        self._options.cdi_dir.mkdir(parents=True, exist_ok=True)
        path = self._options.cdi_dir / (kind.replace("/", "-") + "-mig.json")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(spec, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path

    async def start(self) -> None:
        """Device lists (all healthy until told otherwise) and the CDI spec, before any registration."""
        if self.resources and self._options.plan.list_strategy is DeviceListStrategy.CDI:
            await asyncio.to_thread(self.write_cdi_spec)
        await self._health_changed(self.health.healthy)

    async def run(self) -> None:
        await self.start()
        if not self.resources:
            return
        log.info("serving MIG resources %s", ", ".join(f"{r} ({len(d)})" for r, d in self.resources.items()))
        async with asyncio.TaskGroup() as tasks:
            for registrar in self.registrars:
                tasks.create_task(registrar.run())
            tasks.create_task(self.health.run())
