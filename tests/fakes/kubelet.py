# mypy: disable-error-code="no-untyped-call"
"""FakeKubelet: a test double of the kubelet's device-manager side, over real gRPC on Unix sockets.

It follows contracts §1.4 and §2:

- serves ``v1beta1.Registration`` on ``<dir>/kubelet.sock``; ``Register`` validates the version and the
  resource name, dials the plugin back at ``<dir>/<endpoint>``, calls ``GetDevicePluginOptions`` and starts
  reading ``ListAndWatch`` in the background into an :class:`asyncio.Queue` (every read is bounded);
- :meth:`admit` admits a pod like the kubelet: the pod becomes known to PodResources, then for each container
  in order (init containers first) it picks among healthy unallocated IDs, asks ``GetPreferredAllocation``
  when the plugin enabled it, takes the answer when it is valid, and calls ``Allocate`` with one container
  request; :meth:`start_container` calls ``PreStartContainer`` with that container's IDs;
- reuses init containers' devices as the real device manager does (``devicesToReuse``): the IDs of the
  pod's regular init containers (``init=``) form a pool every later container takes from *first*, in a
  random order (Go map order; seeded by ``reuse_seed``), without ``GetPreferredAllocation`` when the pool
  covers the request, else asking for the rest with the reused IDs as ``must_include``; a sidecar
  (``sidecars=``, ``restartPolicy: Always``) or app container removes the IDs it got from the pool, so
  nothing reuses them; every ID stays allocated until the pod is removed;
- serves ``v1.PodResourcesLister/List`` on its own socket with the allocations it recorded, listing app
  containers and sidecars but not regular init containers, as the real ``List`` does;
- :meth:`restart` behaves like a kubelet restart: deletes every non-directory entry in the plugin directory
  except ``kubelet_internal_checkpoint`` and re-creates ``kubelet.sock``; registrations are forgotten;
- :meth:`remove_pod` with ``stranded=True`` forgets a pod (``List`` no longer names it) but keeps its IDs
  allocated, as kubelet v1.37.2's device manager does right after a restart for a pod deleted meanwhile (e.g.
  ``--force``): it frees the IDs its checkpoint gives to pods no longer active only in
  ``UpdateAllocatedDevices``, which does nothing until every pod source has been seen (``sourcesReady``,
  ``pkg/kubelet/cm/devicemanager/manager.go``; found by tests/k8s, docs/testing.md); :meth:`release_stranded`
  is that first clean-up;
- :attr:`FakeKubelet.pod_resources_limit` rate-limits ``List`` as the real server's interceptor does
  (``pkg/kubelet/apis/podresources/grpc/ratelimit.go``): :class:`RateLimit` is its token bucket (100 QPS, burst
  10); a call finding no token is answered ``RESOURCE_EXHAUSTED`` "rejected by rate limit". Off unless a test
  sets it, so that tests admitting many pods at once do not depend on the machine's speed.

Hostile, as the real one, in short: ``Allocate`` names no pod (one call per container, the plugin must
attribute it); ``PreStartContainer`` comes before every start a test plays, restarts included; init
containers' devices go to later containers first; a restart deletes the plugin's socket and forgets the
registration; a pod can vanish from ``List`` while its devices stay allocated; ``List`` can be rate-limited.

It is a fake: no cgroups, no containers, no checkpoint, no topology manager; of PodResources only ``List``
is served (``Get`` and ``GetAllocatableResources`` answer UNIMPLEMENTED).
"""

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from plugin.api.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from plugin.api.podresources.v1 import api_pb2 as pr_pb2
from plugin.api.podresources.v1 import api_pb2_grpc as pr_grpc

__all__ = ["Admitted", "FakeKubelet", "PluginEndpoint"]

CHECKPOINT = "kubelet_internal_checkpoint"


@dataclass
class PluginEndpoint:
    """One registered resource: the plugin's channel, options and the ListAndWatch queue."""

    resource: str
    endpoint: str
    options: api_pb2.DevicePluginOptions
    channel: grpc.aio.Channel
    stub: Any
    updates: asyncio.Queue[list[api_pb2.Device]] = field(default_factory=asyncio.Queue)
    devices: list[api_pb2.Device] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    registered_options: api_pb2.DevicePluginOptions | None = None
    """What ``Register`` carried (the kubelet uses ``GetDevicePluginOptions``'s answer; the two must agree)."""


@dataclass
class Admitted:
    """The kubelet's record of one container's allocation."""

    namespace: str
    pod: str
    container: str
    ids: list[str]
    resource: str = ""
    response: api_pb2.ContainerAllocateResponse | None = None
    preferred: list[str] | None = None
    preferred_s: float = 0.0  # GetPreferredAllocation round trip, as the kubelet sees it
    allocate_s: float = 0.0  # Allocate round trip


class _Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: "FakeKubelet") -> None:
        self._kubelet = kubelet

    async def Register(self, request, context):  # noqa: N802
        if request.version != "v1beta1":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version}")
        name = request.resource_name
        if "/" not in name or name.startswith("kubernetes.io/") or name.startswith("requests."):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an extended resource name: {name}")
        try:
            await self._kubelet._connect(request)
        except grpc.aio.AioRpcError as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot dial the plugin back: {err.details()}")
        return api_pb2.Empty()


@dataclass
class RateLimit:
    """The kubelet's PodResources limiter (``pkg/kubelet/apis/podresources/grpc/ratelimit.go``): a token bucket
    of ``burst`` tokens refilled at ``qps`` per second (``golang.org/x/time/rate``); a call finding no token is
    answered ``RESOURCE_EXHAUSTED`` "rejected by rate limit". The real kubelet: 100 QPS, burst 10."""

    qps: float = 100.0
    burst: int = 10
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self._at = float(self.burst), self.clock()

    def allow(self) -> bool:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self._at) * self.qps)
        self._at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _PodResources(pr_grpc.PodResourcesListerServicer):
    def __init__(self, kubelet: "FakeKubelet") -> None:
        self._kubelet = kubelet

    async def List(self, request, context):  # noqa: N802
        self._kubelet.list_calls += 1
        limit = self._kubelet.pod_resources_limit
        if limit is not None and not limit.allow():
            self._kubelet.list_refused += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit")
        return self._kubelet.pod_resources()


class FakeKubelet:
    def __init__(self, plugin_dir: Path, pod_resources_socket: Path) -> None:
        self.plugin_dir = plugin_dir
        self.pod_resources_socket = pod_resources_socket
        self.endpoints: dict[str, PluginEndpoint] = {}
        self.registered: asyncio.Queue[str] = asyncio.Queue()
        self.pods: dict[
            tuple[str, str], list[str]
        ] = {}  # (ns, pod) -> container names, as PodResources knows
        self.allocations: dict[tuple[str, str, str], Admitted] = {}
        self.unlisted: set[tuple[str, str, str]] = set()  # regular init containers: not in PodResources
        self.reuse_seed = 0
        self.list_calls = 0
        self.pod_resources_limit: RateLimit | None = None  # RateLimit(): the real kubelet's 100 QPS, burst 10
        self.list_refused = 0
        self._server: grpc.aio.Server | None = None
        self._pr_server: grpc.aio.Server | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.pod_resources_socket.parent.mkdir(parents=True, exist_ok=True)
        await self._start_registration()
        self._pr_server = grpc.aio.server()
        pr_grpc.add_PodResourcesListerServicer_to_server(_PodResources(self), self._pr_server)
        self._pr_server.add_insecure_port(f"unix://{self.pod_resources_socket}")
        await self._pr_server.start()

    async def _start_registration(self) -> None:
        self._server = grpc.aio.server()
        api_pb2_grpc.add_RegistrationServicer_to_server(_Registration(self), self._server)
        self._server.add_insecure_port(f"unix://{self.plugin_dir / 'kubelet.sock'}")
        await self._server.start()

    async def stop(self) -> None:
        await self._forget_endpoints()
        for server in (self._server, self._pr_server):
            if server is not None:
                await server.stop(grace=0)

    async def restart(self) -> None:
        """A kubelet restart: forget plugins, CleanupPluginDirectory, serve a new ``kubelet.sock``."""
        if self._server is not None:
            await self._server.stop(grace=0)
        await self._forget_endpoints()
        for entry in os.scandir(self.plugin_dir):
            if not entry.is_dir() and entry.name != CHECKPOINT:
                # os.RemoveAll, as CleanupPluginDirectory: a socket a plugin removed meanwhile is no error
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        await self._start_registration()

    async def _forget_endpoints(self) -> None:
        for ep in self.endpoints.values():
            if ep.reader is not None:
                ep.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ep.reader
            await ep.channel.close(None)
        self.endpoints.clear()

    # --- registration and ListAndWatch --------------------------------------------------------

    async def _connect(self, request: api_pb2.RegisterRequest) -> None:
        channel = grpc.aio.insecure_channel(f"unix://{self.plugin_dir / request.endpoint}")
        stub = api_pb2_grpc.DevicePluginStub(channel)
        options = await stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=10)
        old = self.endpoints.pop(request.resource_name, None)
        if old is not None and old.reader is not None:
            old.reader.cancel()
        ep = PluginEndpoint(request.resource_name, request.endpoint, options, channel, stub)
        ep.registered_options = request.options
        ep.reader = asyncio.get_running_loop().create_task(self._read(ep))
        self.endpoints[request.resource_name] = ep
        self.registered.put_nowait(request.resource_name)

    async def _read(self, ep: PluginEndpoint) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for reply in ep.stub.ListAndWatch(api_pb2.Empty()):
                ep.devices = list(reply.devices)
                ep.updates.put_nowait(ep.devices)

    async def wait_registered(self, resource: str, timeout: float = 5.0) -> PluginEndpoint:
        async def wait() -> PluginEndpoint:
            while resource not in self.endpoints:
                await self.registered.get()
            return self.endpoints[resource]

        return await asyncio.wait_for(wait(), timeout)

    async def next_devices(self, resource: str, timeout: float = 2.0) -> list[api_pb2.Device]:
        ep = await self.wait_registered(resource, timeout)
        return await asyncio.wait_for(ep.updates.get(), timeout)

    async def devices_until(
        self, resource: str, predicate: Any, timeout: float = 2.0
    ) -> list[api_pb2.Device]:
        """Read ListAndWatch messages until one satisfies ``predicate`` (bounded by ``timeout``)."""

        async def wait() -> list[api_pb2.Device]:
            ep = await self.wait_registered(resource, timeout)
            if ep.devices and predicate(ep.devices):
                return ep.devices
            while True:
                devices = await ep.updates.get()
                if predicate(devices):
                    return devices

        return await asyncio.wait_for(wait(), timeout)

    # --- admission ----------------------------------------------------------------------------

    def _free(self, resource: str) -> list[str]:
        taken = {i for a in self.allocations.values() for i in a.ids}
        ep = self.endpoints[resource]
        return [d.ID for d in ep.devices if d.health == "Healthy" and d.ID not in taken]

    async def admit(
        self,
        namespace: str,
        pod: str,
        containers: Sequence[tuple[str, int]],
        resource: str,
        *,
        all_containers: Sequence[str] | None = None,
        follow_preference: bool = True,
        init: Collection[str] = (),
        sidecars: Collection[str] = (),
    ) -> list[Admitted]:
        """Admit a pod: ``containers`` = (name, vcuda-core count) of its GPU containers, in kubelet order;
        ``init`` names its regular init containers (their IDs are reused), ``sidecars`` its sidecars."""
        ep = self.endpoints[resource]
        if not ep.devices:  # the kubelet knows no devices before the first ListAndWatch message
            await self.devices_until(resource, bool)
        self.pods[(namespace, pod)] = list(all_containers or [c for c, _ in containers])
        self.unlisted |= {(namespace, pod, name) for name in init}
        rng = random.Random(f"{self.reuse_seed}/{namespace}/{pod}")
        reusable: set[str] = set()
        done = []
        for name, count in containers:
            reused = rng.sample(sorted(reusable), min(count, len(reusable)))
            admitted = Admitted(namespace, pod, name, reused, resource)
            if len(reused) < count:
                await self._choose(ep, admitted, count, follow_preference)
            await self._allocate(ep, admitted)
            if name in init:
                reusable |= set(admitted.ids)
            else:
                reusable -= set(admitted.ids)
            done.append(admitted)
        return done

    async def _choose(self, ep: PluginEndpoint, admitted: Admitted, count: int, follow: bool) -> None:
        """The IDs beyond the reused ones: healthy free IDs, steered by GetPreferredAllocation."""
        reused = list(admitted.ids)
        free = self._free(ep.resource)
        ids = reused + free[: count - len(reused)]
        if ep.options.get_preferred_allocation_available:
            req = api_pb2.ContainerPreferredAllocationRequest(
                available_deviceIDs=reused + free, must_include_deviceIDs=reused, allocation_size=count
            )
            started = time.perf_counter()
            reply = await ep.stub.GetPreferredAllocation(
                api_pb2.PreferredAllocationRequest(container_requests=[req]), timeout=10
            )
            admitted.preferred_s = time.perf_counter() - started
            preferred = list(reply.container_responses[0].deviceIDs)
            admitted.preferred = preferred
            valid = set(reused) <= set(preferred) <= set(free) | set(reused)
            if follow and len(set(preferred)) == count and valid:
                ids = preferred
        admitted.ids = ids

    async def _allocate(self, ep: PluginEndpoint, admitted: Admitted) -> None:
        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=admitted.ids)]
        )
        started = time.perf_counter()
        reply = await ep.stub.Allocate(request, timeout=10)
        admitted.allocate_s = time.perf_counter() - started
        if not reply.container_responses:
            raise AssertionError("no containers return in allocation response")
        admitted.response = reply.container_responses[0]
        # As the kubelet: podDevices (what PodResources reports) is updated after Allocate returns.
        self.allocations[(admitted.namespace, admitted.pod, admitted.container)] = admitted

    async def start_container(self, namespace: str, pod: str, container: str, resource: str) -> None:
        """``PreStartContainer`` with the container's IDs; raises ``AioRpcError`` when the plugin refuses."""
        ep = self.endpoints[resource]
        if not ep.options.pre_start_required:
            return
        ids = self.allocations[(namespace, pod, container)].ids
        await ep.stub.PreStartContainer(api_pb2.PreStartContainerRequest(devices_ids=ids), timeout=30)

    def remove_pod(self, namespace: str, pod: str, *, stranded: bool = False) -> None:
        """The pod is gone; ``stranded``: its IDs stay allocated until :meth:`release_stranded`."""
        self.pods.pop((namespace, pod), None)
        self.unlisted = {k for k in self.unlisted if k[:2] != (namespace, pod)}
        if not stranded:
            self.release_stranded()

    def release_stranded(self) -> None:
        """``UpdateAllocatedDevices`` once the sources are ready: free the IDs of pods no longer known."""
        for key in [k for k in self.allocations if k[:2] not in self.pods]:
            del self.allocations[key]

    def pod_resources(self) -> pr_pb2.ListPodResourcesResponse:
        pods = []
        for (namespace, pod), names in self.pods.items():
            containers = []
            for name in names:
                if (namespace, pod, name) in self.unlisted:
                    continue  # List reports app containers and sidecars only
                admitted = self.allocations.get((namespace, pod, name))
                devices = []
                if admitted is not None:
                    devices = [
                        pr_pb2.ContainerDevices(resource_name=admitted.resource, device_ids=admitted.ids)
                    ]
                containers.append(pr_pb2.ContainerResources(name=name, devices=devices))
            pods.append(pr_pb2.PodResources(name=pod, namespace=namespace, containers=containers))
        return pr_pb2.ListPodResourcesResponse(pod_resources=pods)
