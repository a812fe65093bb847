"""The SIMULATED kubelet's PodResources ``v1`` server (``List``, ``Get``, ``GetAllocatableResources``).

Answers from the device checkpoint, for the pods the kubelet considers active (admitted, or in admission
right now, as upstream's pod manager holds a pod from the start of its admission). No rate limit. On a DRA
node each container also lists the claims it uses (``dynamic_resources``: claim name and namespace, and per
prepared device the driver, pool, device, share ID and CDI device IDs the driver answered), as upstream's
DRA manager reports them.
"""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from plugin.api.podresources.v1 import api_pb2 as pr
from plugin.api.podresources.v1 import api_pb2_grpc as pr_grpc
from tests.sim.checkpoint import Checkpoint
from tests.sim.devicemanager import DeviceManager

__all__ = ["ActivePod", "PodResourcesServer"]

ActivePod = tuple[str, str, str, list[str]]  # uid, namespace, name, container names
Dynamic = Callable[[str, str], list[pr.DynamicResource]]  # (pod uid, container) -> its claims


def _no_claims(uid: str, container: str) -> list[pr.DynamicResource]:
    return []


class PodResourcesServer(pr_grpc.PodResourcesListerServicer):
    def __init__(
        self,
        socket: Path,
        checkpoint: Checkpoint,
        devices: DeviceManager,
        active: Callable[[], Iterable[ActivePod]],
        dynamic: Dynamic = _no_claims,
    ) -> None:
        self.socket, self._checkpoint, self._devices, self._active = socket, checkpoint, devices, active
        self._dynamic = dynamic
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self._server = grpc.aio.server()
        pr_grpc.add_PodResourcesListerServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"unix://{self.socket}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    def _pod(self, uid: str, namespace: str, name: str, containers: Iterable[str]) -> pr.PodResources:
        held = self._checkpoint.pods.get(uid)
        out = []
        for container in containers:
            allocations = held.containers.get(container, {}) if held else {}
            out.append(pr.ContainerResources(
                name=container,
                devices=[pr.ContainerDevices(resource_name=r, device_ids=a.ids) for r, a in sorted(allocations.items())],
                dynamic_resources=self._dynamic(uid, container),
            ))  # fmt: skip
        return pr.PodResources(name=name, namespace=namespace, containers=out)

    async def List(self, request: pr.ListPodResourcesRequest, context: Any) -> pr.ListPodResourcesResponse:  # noqa: N802
        return pr.ListPodResourcesResponse(pod_resources=[self._pod(*entry) for entry in self._active()])

    async def Get(self, request: pr.GetPodResourcesRequest, context: Any) -> pr.GetPodResourcesResponse:  # noqa: N802
        for entry in self._active():
            _, namespace, name, _ = entry
            if (namespace, name) == (request.pod_namespace, request.pod_name):
                return pr.GetPodResourcesResponse(pod_resources=self._pod(*entry))
        await context.abort(
            grpc.StatusCode.NOT_FOUND, f"pod {request.pod_namespace}/{request.pod_name} not found"
        )
        raise AssertionError("unreachable")

    async def GetAllocatableResources(self, request: Any, context: Any) -> pr.AllocatableResourcesResponse:  # noqa: N802
        devices = [
            pr.ContainerDevices(resource_name=r, device_ids=e.healthy())
            for r, e in sorted(self._devices.endpoints.items())
        ]
        return pr.AllocatableResourcesResponse(devices=devices)
