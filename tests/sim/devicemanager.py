"""The SIMULATED kubelet's device manager (``pkg/kubelet/cm/devicemanager``), over the real gRPC API.

Serves ``Registration`` on ``<dir>/kubelet.sock`` and, like the kubelet, first deletes every other file in the
directory except ``kubelet_internal_checkpoint`` (so a restarted kubelet makes plugins register again). On
``Register`` it checks the version and the resource name, dials the plugin's socket, reads its options and
follows ``ListAndWatch``. Each message replaces the resource's device set; a stream that ends marks the
endpoint stopped (devices stay in capacity, allocatable drops to 0; upstream's 5-minute removal grace is not
simulated). ``allocate``, ``preferred`` and ``pre_start`` are the calls the kubelet makes per container;
``preferred`` carries ``must_include`` (the IDs a container reuses from its pod's init containers, which the
kubelet takes first: see :mod:`tests.sim.kubelet`).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from plugin.api.deviceplugin.v1beta1 import api_pb2 as dp
from plugin.api.deviceplugin.v1beta1 import api_pb2_grpc as dp_grpc

__all__ = ["CHECKPOINT_FILE", "DeviceManager", "DevicePluginError", "Endpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "kubelet_internal_checkpoint"
KUBELET_SOCKET = "kubelet.sock"
SUPPORTED_VERSIONS = ("v1beta1",)
PRE_START_TIMEOUT_S = 30.0  # KubeletPreStartContainerRPCTimeoutInSecs


class DevicePluginError(RuntimeError):
    """A device-plugin call failed (the kubelet turns this into an admission or start error)."""


@dataclass(slots=True)
class Endpoint:
    resource: str
    socket: Path
    channel: grpc.aio.Channel
    stub: dp_grpc.DevicePluginStub
    options: dp.DevicePluginOptions
    devices: dict[str, str] = field(default_factory=dict)  # ID -> health
    numa: dict[str, tuple[int, ...]] = field(default_factory=dict)
    stopped: bool = False
    task: "asyncio.Task[None] | None" = None
    listed: asyncio.Event = field(default_factory=asyncio.Event)

    def healthy(self) -> list[str]:
        return [] if self.stopped else sorted(i for i, h in self.devices.items() if h == "Healthy")


def _is_extended_resource_name(name: str) -> bool:
    return (
        "/" in name and not name.startswith(("kubernetes.io/", "requests.")) and "kubernetes.io/" not in name
    )


class DeviceManager(dp_grpc.RegistrationServicer):
    def __init__(self, plugin_dir: Path, on_change: Callable[[str], None]) -> None:
        self.plugin_dir = plugin_dir
        self.endpoints: dict[str, Endpoint] = {}
        self._on_change = on_change
        self._server: grpc.aio.Server | None = None
        self.registered = asyncio.Condition()

    async def start(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.plugin_dir.iterdir():
            if entry.name != CHECKPOINT_FILE and not entry.is_dir():
                entry.unlink(missing_ok=True)
        self._server = grpc.aio.server()
        dp_grpc.add_RegistrationServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"unix://{self.plugin_dir / KUBELET_SOCKET}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        for endpoint in list(self.endpoints.values()):
            await self._close(endpoint)
        self.endpoints.clear()
        (self.plugin_dir / KUBELET_SOCKET).unlink(missing_ok=True)

    async def _close(self, endpoint: Endpoint) -> None:
        if endpoint.task is not None:
            endpoint.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await endpoint.task
        await endpoint.channel.close(None)

    async def Register(self, request: dp.RegisterRequest, context: Any) -> dp.Empty:  # noqa: N802 (gRPC name)
        if request.version not in SUPPORTED_VERSIONS:
            await context.abort(grpc.StatusCode.UNKNOWN, f"version {request.version!r} is not supported")
        if not _is_extended_resource_name(request.resource_name):
            await context.abort(
                grpc.StatusCode.UNKNOWN, f"{request.resource_name!r} is not an extended resource"
            )
        socket = self.plugin_dir / request.endpoint
        channel = grpc.aio.insecure_channel(f"unix://{socket}")
        stub = dp_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
            options = await stub.GetDevicePluginOptions(dp.Empty(), timeout=10)
        except (TimeoutError, grpc.aio.AioRpcError) as err:
            await channel.close(None)
            await context.abort(grpc.StatusCode.UNKNOWN, f"cannot dial device plugin at {socket}: {err}")
        old = self.endpoints.get(request.resource_name)
        endpoint = Endpoint(request.resource_name, socket, channel, stub, options)
        endpoint.task = asyncio.create_task(self._list_and_watch(endpoint))
        self.endpoints[request.resource_name] = endpoint
        if old is not None:
            await self._close(old)
        log.info("kubelet: registered %s at %s", request.resource_name, socket)
        return dp.Empty()

    async def _list_and_watch(self, endpoint: Endpoint) -> None:
        try:
            async for message in endpoint.stub.ListAndWatch(dp.Empty()):
                endpoint.devices = {d.ID: d.health for d in message.devices}
                endpoint.numa = {d.ID: tuple(n.ID for n in d.topology.nodes) for d in message.devices}
                endpoint.listed.set()
                self._on_change(endpoint.resource)
                async with self.registered:
                    self.registered.notify_all()
        except grpc.aio.AioRpcError as err:
            log.info("kubelet: ListAndWatch of %s ended: %s", endpoint.resource, err.code())
        endpoint.stopped = True
        self._on_change(endpoint.resource)

    async def wait_ready(self, resource: str, timeout_s: float) -> Endpoint | None:
        """The resource's live endpoint once it has sent its device list, or ``None`` after the timeout."""

        def ready() -> bool:
            e = self.endpoints.get(resource)
            return e is not None and not e.stopped and e.listed.is_set()

        async with self.registered:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.registered.wait_for(ready), timeout_s)
        return self.endpoints[resource] if ready() else None

    async def preferred(
        self, endpoint: Endpoint, available: Sequence[str], size: int, must_include: Sequence[str] = ()
    ) -> list[str]:
        request = dp.PreferredAllocationRequest(
            container_requests=[dp.ContainerPreferredAllocationRequest(
                available_deviceIDs=list(available), must_include_deviceIDs=list(must_include),
                allocation_size=size)]
        )  # fmt: skip
        try:
            reply = await endpoint.stub.GetPreferredAllocation(request)  # no deadline upstream either
        except grpc.aio.AioRpcError as err:
            raise DevicePluginError(f"GetPreferredAllocation: {err.details()}") from err
        return list(reply.container_responses[0].deviceIDs) if reply.container_responses else []

    async def allocate(self, endpoint: Endpoint, ids: Sequence[str]) -> dp.ContainerAllocateResponse:
        request = dp.AllocateRequest(container_requests=[dp.ContainerAllocateRequest(devices_ids=list(ids))])
        try:
            reply = await endpoint.stub.Allocate(request)  # no deadline upstream either
        except grpc.aio.AioRpcError as err:
            raise DevicePluginError(f"Allocate: {err.details()}") from err
        if not reply.container_responses:
            raise DevicePluginError("no containers return in allocation response")
        answer: dp.ContainerAllocateResponse = reply.container_responses[0]
        return answer

    async def pre_start(self, endpoint: Endpoint, ids: Sequence[str]) -> None:
        try:
            await endpoint.stub.PreStartContainer(
                dp.PreStartContainerRequest(devices_ids=list(ids)), timeout=PRE_START_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            raise DevicePluginError(f"PreStartContainer: {err.details()}") from err
