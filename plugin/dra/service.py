"""The kubelet's ``DRAPlugin`` gRPC service, ``v1`` and ``v1beta1``: translates protobuf to the preparer.

Both versions carry the same messages (``v1`` adds ``Device.share_id``, KEP-5075) and are served on the
one DRA socket, ``v1beta1`` by converting to ``v1`` and back; the kubelet picks the first version of our
registration list it supports. Every claim of a request gets an entry in the answer (the kubelet treats a
missing one as a failure), its devices or an error string; the call itself fails only when the request
cannot be read at all.
"""

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from plugin.api.dra.v1 import api_pb2 as v1
from plugin.api.dra.v1 import api_pb2_grpc as v1_grpc
from plugin.api.dra.v1beta1 import api_pb2 as v1beta1
from plugin.api.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from plugin.core.dra import ClaimRef
from plugin.dra.prepare import ClaimPreparer, Outcome

__all__ = ["SUPPORTED_VERSIONS", "DraV1Servicer", "DraV1beta1Servicer", "add_dra_services"]

Ctx = grpc.aio.ServicerContext[Any, Any]
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
"""Registration's ``supported_versions``, preferred first (kubelet 1.34+ knows both)."""


def _refs(claims: Iterable[Any]) -> list[ClaimRef]:
    return [ClaimRef(c.namespace, c.name, c.uid) for c in claims]


def _expired(context: Ctx) -> Callable[[], bool]:
    """Whether the kubelet's deadline for this call has passed (it no longer waits for the answer)."""

    def expired() -> bool:
        left = context.time_remaining()
        return left is not None and left <= 0

    return expired


def _v1_result(o: Outcome) -> v1.NodePrepareResourceResponse:
    if o.error:
        return v1.NodePrepareResourceResponse(error=o.error)
    devices = [
        v1.Device(
            request_names=d.requests,
            pool_name=d.pool,
            device_name=d.device,
            cdi_device_ids=d.cdi_ids,
            share_id=d.share_id,
        )
        for d in o.devices
    ]
    return v1.NodePrepareResourceResponse(devices=devices)


class DraV1Servicer(v1_grpc.DRAPluginServicer):
    def __init__(self, preparer: ClaimPreparer) -> None:
        self._preparer = preparer

    async def NodePrepareResources(  # noqa: N802 (gRPC method name)
        self, request: v1.NodePrepareResourcesRequest, context: Ctx
    ) -> v1.NodePrepareResourcesResponse:
        outcomes = await self._preparer.prepare(_refs(request.claims), _expired(context))
        return v1.NodePrepareResourcesResponse(claims={u: _v1_result(o) for u, o in outcomes.items()})

    async def NodeUnprepareResources(  # noqa: N802 (gRPC method name)
        self, request: v1.NodeUnprepareResourcesRequest, context: Ctx
    ) -> v1.NodeUnprepareResourcesResponse:
        errors = await self._preparer.unprepare(_refs(request.claims))
        claims = {u: v1.NodeUnprepareResourceResponse(error=e) for u, e in errors.items()}
        return v1.NodeUnprepareResourcesResponse(claims=claims)


class DraV1beta1Servicer(v1beta1_grpc.DRAPluginServicer):
    """``v1beta1`` as k8s.io/kubelet's ``v1beta1.V1ServerWrapper`` serves it: each call converted to ``v1``
    and its answer back. The two carry the same field numbers (tests/unit/plugin/test_dra_proto_fields.py),
    and the answer drops what ``v1beta1`` does not know (``Device.share_id``)."""

    def __init__(self, preparer: ClaimPreparer) -> None:
        self._v1 = DraV1Servicer(preparer)

    async def NodePrepareResources(  # noqa: N802 (gRPC method name)
        self, request: v1beta1.NodePrepareResourcesRequest, context: Ctx
    ) -> v1beta1.NodePrepareResourcesResponse:
        answer = await self._v1.NodePrepareResources(
            _convert(request, v1.NodePrepareResourcesRequest), context
        )
        return _convert(answer, v1beta1.NodePrepareResourcesResponse)

    async def NodeUnprepareResources(  # noqa: N802 (gRPC method name)
        self, request: v1beta1.NodeUnprepareResourcesRequest, context: Ctx
    ) -> v1beta1.NodeUnprepareResourcesResponse:
        answer = await self._v1.NodeUnprepareResources(
            _convert(request, v1.NodeUnprepareResourcesRequest), context
        )
        return _convert(answer, v1beta1.NodeUnprepareResourcesResponse)


_M = TypeVar("_M", bound=Message)


def _convert(message: Message, into: type[_M]) -> _M:
    """``message`` read as the other version's ``into``; fields ``into`` lacks are dropped, not carried."""
    converted = into.FromString(message.SerializeToString())
    converted.DiscardUnknownFields()
    return converted


def add_dra_services(server: grpc.aio.Server, preparer: ClaimPreparer) -> None:
    v1_grpc.add_DRAPluginServicer_to_server(DraV1Servicer(preparer), server)  # type: ignore[no-untyped-call]
    v1beta1_grpc.add_DRAPluginServicer_to_server(  # type: ignore[no-untyped-call]
        DraV1beta1Servicer(preparer), server
    )
