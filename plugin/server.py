"""The ``v1beta1.DevicePlugin`` servicer for ``vcuda-core``: translates protobuf to the allocator and back.

``ListAndWatch`` follows grpc's asyncio health servicer: the current device list lives in a
:class:`DeviceBoard` with an :class:`asyncio.Condition`; each stream sends the list, waits for the version
to change and sends the whole list again. Errors leave as gRPC status codes.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import grpc

from plugin.allocator import Allocator
from plugin.api.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from plugin.core.allocate import DeviceNode, Mount
from plugin.core.errors import AllocationError, AttributionMismatchError, InvalidDeviceIdsError
from plugin.core.slices import Slice, plain_pick
from plugin.kube import KubeError

Ctx = grpc.aio.ServicerContext[Any, Any]

__all__ = [
    "BoardServicer",
    "ContainerEdits",
    "DeviceBoard",
    "DevicePluginServicer",
    "PlanContainer",
    "allocate_response",
    "device_list",
    "plan_response",
    "preferred_response",
]

log = logging.getLogger(__name__)
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


class DeviceBoard:
    """The advertised slices and a version bumped on every change; streams wait on its condition."""

    def __init__(self, slices: Sequence[Slice] = ()) -> None:
        self._slices = tuple(slices)
        self._version = 0
        self._cond = asyncio.Condition()

    @property
    def slices(self) -> tuple[Slice, ...]:
        return self._slices

    async def publish(self, slices: Sequence[Slice]) -> None:
        async with self._cond:
            if tuple(slices) == self._slices:
                return
            self._slices = tuple(slices)
            self._version += 1
            self._cond.notify_all()

    async def watch(self) -> AsyncIterator[tuple[Slice, ...]]:
        seen = -1
        while True:
            async with self._cond:
                await self._cond.wait_for(self._changed_since(seen))
                seen = self._version
                current = self._slices
            yield current

    def _changed_since(self, seen: int) -> "Callable[[], bool]":
        return lambda: self._version != seen


def device_list(slices: Sequence[Slice]) -> api_pb2.ListAndWatchResponse:
    return api_pb2.ListAndWatchResponse(
        devices=[
            api_pb2.Device(
                ID=s.id,
                health=HEALTHY if s.healthy else UNHEALTHY,
                topology=api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=s.numa_node)])
                if s.numa_node >= 0
                else None,
            )
            for s in slices
        ]
    )


class ContainerEdits(Protocol):
    """What an Allocate answer gives one container; every plan of the core has these four (vcuda's
    :class:`plugin.core.allocate.ContainerPlan`, MIG's, and NVIDIA's modes')."""

    @property
    def envs(self) -> Mapping[str, str]: ...
    @property
    def mounts(self) -> Sequence[Mount]: ...
    @property
    def devices(self) -> Sequence[DeviceNode]: ...
    @property
    def cdi_devices(self) -> Sequence[str]: ...


def plan_response(plan: ContainerEdits) -> api_pb2.ContainerAllocateResponse:
    """The one protobuf answer for a container, whichever servicer planned it."""
    return api_pb2.ContainerAllocateResponse(
        envs=dict(plan.envs),
        mounts=[
            api_pb2.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in plan.mounts
        ],
        devices=[
            api_pb2.DeviceSpec(
                container_path=d.container_path, host_path=d.host_path, permissions=d.permissions
            )
            for d in plan.devices
        ],
        cdi_devices=[api_pb2.CDIDevice(name=n) for n in plan.cdi_devices],
    )


PlanContainer = Callable[[list[str]], Awaitable[ContainerEdits]]
"""One container's device IDs -> its edits; raises AllocationError or KubeError to refuse the call."""


async def allocate_response(
    request: api_pb2.AllocateRequest,
    plan: PlanContainer,
    context: Ctx,
    *,
    resource: str,
    refused: grpc.StatusCode,
) -> api_pb2.AllocateResponse:
    """Each container's plan in order, whichever servicer plans it; the first refusal fails the whole call
    (the kubelet fails the pod's admission): ``refused`` is the servicer's status code for a refusal,
    INVALID_ARGUMENT the code for IDs the resource does not serve."""
    responses = []
    for req in request.container_requests:
        try:
            edits = await plan(list(req.devices_ids))
        except (AllocationError, KubeError) as err:
            log.error("Allocate of %s refused: %s", resource, err)
            code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(err, InvalidDeviceIdsError) else refused
            await context.abort(code, f"kube-vgpu: {err}")
        responses.append(plan_response(edits))
    return api_pb2.AllocateResponse(container_responses=responses)


Prefer = Callable[[list[str], list[str], int], Awaitable[list[str]]]
"""(available, must include, size) -> the IDs to suggest; raises AllocationError or KubeError."""


async def preferred_response(
    request: api_pb2.PreferredAllocationRequest, prefer: Prefer, resource: str
) -> api_pb2.PreferredAllocationResponse:
    """Each container's suggestion; when ``prefer`` cannot choose, a plain pick leaves it to the kubelet."""
    responses = []
    for req in request.container_requests:
        available, must, size = (
            list(req.available_deviceIDs),
            list(req.must_include_deviceIDs),
            req.allocation_size,
        )
        try:
            ids = await prefer(available, must, size)
        except (AllocationError, KubeError) as err:
            log.warning("GetPreferredAllocation of %s: %s; leaving the choice to the kubelet", resource, err)
            ids = plain_pick(available, must, size)
        responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
    return api_pb2.PreferredAllocationResponse(container_responses=responses)


class BoardServicer(api_pb2_grpc.DevicePluginServicer):
    """A resource whose device list is a :class:`DeviceBoard`'s: the options from two class flags, the
    ``ListAndWatch`` stream, and no ``PreStartContainer`` check. Each resource's servicer (vcuda shares, MIG
    instances, NVIDIA's modes) adds its own ``Allocate`` and ``GetPreferredAllocation``."""

    pre_start_required: ClassVar[bool] = False
    preferred_allocation: ClassVar[bool] = False

    def __init__(self, board: DeviceBoard) -> None:
        self._board = board

    def add_to(self, server: grpc.aio.Server) -> None:
        """Serve this resource on ``server`` (a :class:`plugin.kubelet.Registrar`'s ``add_servicer``)."""
        api_pb2_grpc.add_DevicePluginServicer_to_server(self, server)  # type: ignore[no-untyped-call]

    async def GetDevicePluginOptions(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.Empty, context: Ctx
    ) -> api_pb2.DevicePluginOptions:
        return api_pb2.DevicePluginOptions(
            pre_start_required=self.pre_start_required,
            get_preferred_allocation_available=self.preferred_allocation,
        )

    async def ListAndWatch(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.Empty, context: Ctx
    ) -> AsyncIterator[api_pb2.ListAndWatchResponse]:
        async for slices in self._board.watch():
            yield device_list(slices)

    async def PreStartContainer(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.PreStartContainerRequest, context: Ctx
    ) -> api_pb2.PreStartContainerResponse:
        return api_pb2.PreStartContainerResponse()


class DevicePluginServicer(BoardServicer):
    """``vcuda-core``: the allocator decides; ``PreStartContainer`` verifies its attribution."""

    pre_start_required = True
    preferred_allocation = True

    def __init__(self, board: DeviceBoard, allocator: Allocator) -> None:
        super().__init__(board)
        self._allocator = allocator

    async def GetPreferredAllocation(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.PreferredAllocationRequest, context: Ctx
    ) -> api_pb2.PreferredAllocationResponse:
        return await preferred_response(request, self._allocator.preferred, "vcuda-core")

    async def Allocate(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.AllocateRequest, context: Ctx
    ) -> api_pb2.AllocateResponse:
        return await allocate_response(
            request,
            self._allocator.allocate,
            context,
            resource="vcuda-core",
            refused=grpc.StatusCode.FAILED_PRECONDITION,
        )

    async def PreStartContainer(  # noqa: N802 (gRPC method name)
        self, request: api_pb2.PreStartContainerRequest, context: Ctx
    ) -> api_pb2.PreStartContainerResponse:
        try:
            await self._allocator.prestart(list(request.devices_ids))
        except AttributionMismatchError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except (KubeError, grpc.aio.AioRpcError) as err:
            log.error("PreStartContainer could not verify: %s", err)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"kube-vgpu: cannot verify attribution: {err}")
        return api_pb2.PreStartContainerResponse()
