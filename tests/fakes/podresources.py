"""A canned kubelet PodResources ``List`` server over real gRPC (asyncio) on a Unix socket, for the tests of the
plugin's PodResources client (``plugin.podresources``) that need exact answers and a call count rather than the
whole :class:`tests.fakes.kubelet.FakeKubelet`.

Real behaviours it reproduces: ``List`` answers every pod with devices of every resource (the real ``List``
never filters by resource) and containers holding none; answers change between calls as pods come and go.
It has no rate limit (the FakeKubelet's ``RateLimit`` imitates the kubelet's) and no ``Get``/``GetAllocatableResources``.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from plugin.api.podresources.v1 import api_pb2, api_pb2_grpc

__all__ = ["CannedPodResources", "serving"]


class CannedPodResources(api_pb2_grpc.PodResourcesListerServicer):
    """``List`` answers ``pods`` (replace it to change the node) and counts its calls."""

    def __init__(self, pods: Sequence[api_pb2.PodResources] = ()) -> None:
        self.pods = list(pods)
        self.calls = 0

    async def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:  # noqa: N802
        self.calls += 1
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


@asynccontextmanager
async def serving(
    socket: Path, pods: Sequence[api_pb2.PodResources] = ()
) -> AsyncIterator[CannedPodResources]:
    """A :class:`CannedPodResources` listening on ``socket`` while the block runs."""
    fake = CannedPodResources(pods)
    server = grpc.aio.server()
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        yield fake
    finally:
        await server.stop(grace=None)
