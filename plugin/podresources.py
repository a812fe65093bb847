"""The kubelet's PodResources API: the plugin's one client, and the one reading of its ``List`` answer.

:class:`PodResourcesClient` owns the one gRPC channel (``grpc.aio``, on the agent's event loop) to
``v1.PodResourcesLister/List``; each :meth:`~PodResourcesClient.list` is one call, parsed once into a
:class:`Listing`, whose projections serve every reader:

- the allocator and the reclaimer: :meth:`Listing.held` (every listed container with its ``vcuda-core`` IDs);
- MIG partitioning: :meth:`Listing.held_ids` (IDs held under any of several resources);
- NVIDIA's modes: :meth:`Listing.held_by_resource`;
- the exporter: :meth:`Listing.live_containers` and :meth:`Listing.container_claims`, through
  :class:`PodResourcesCache`, a synchronous view for the scrape thread that asks the same client on the
  agent's loop and keeps the answer ``ttl_s`` seconds.

Why cache: the kubelet rate-limits the API at 100 QPS shared with every other client (``DefaultQPS`` in the
kubelet's ``pkg/kubelet/apis/podresources/constants.go``), and a scrape needs no fresher view of which
containers exist. The allocator's calls are never cached: each kubelet call needs the kubelet's current book.

DRA containers: the kubelet lists, per container, the claims it uses (``dynamic_resources``) with the CDI
devices the driver prepared for them. kube-vgpu's are named ``kube-vgpu.<domain>/claim=<claim-uid>-<device>``
(:func:`plugin.core.dra.claim_cdi_name`), so the claim's UID, which names the claim's state directory
(``<pod-uid>_dra-<claim-uid>``), is read from them; other drivers' devices are ignored.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc

from plugin.api.podresources.v1 import api_pb2, api_pb2_grpc
from plugin.core.admission import Held
from plugin.core.dra import claim_of_cdi_device
from plugin.metrics.sources import ContainerName, SourceError

__all__ = [
    "ListPodResources",
    "Listed",
    "Listing",
    "PodResourcesCache",
    "PodResourcesClient",
    "listing_or_none",
]

log = logging.getLogger(__name__)
DEFAULT_WAIT_S: Final = 6.0  # the client's own 5 s deadline, and a second for a busy loop


@dataclass(frozen=True, slots=True)
class Listed:
    """One container as ``List`` names it: the device IDs it holds by resource, and the UIDs of the
    kube-vgpu claims whose devices it got (DRA)."""

    name: ContainerName
    devices: Mapping[str, frozenset[str]]
    claims: frozenset[str]


@dataclass(frozen=True, slots=True)
class Listing:
    """One ``ListPodResourcesResponse``, read once; every reader's projection of it."""

    containers: tuple[Listed, ...]

    @classmethod
    def of(cls, pod_resources: Iterable[Any]) -> "Listing":
        """From a ``ListPodResourcesResponse.pod_resources``."""
        return cls(tuple(_listed(p.namespace, p.name, c) for p in pod_resources for c in p.containers))

    def held(self, resource: str) -> list[Held]:
        """Every listed container with the IDs it holds of ``resource`` (maybe none)."""
        return [
            Held(c.name.namespace, c.name.pod, c.name.container, c.devices.get(resource, frozenset()))
            for c in self.containers
        ]

    def held_ids(self, resources: Collection[str]) -> frozenset[str]:
        """Every device ID a listed container holds under any of ``resources``."""
        return frozenset(i for c in self.containers for r in resources for i in c.devices.get(r, ()))

    def held_by_resource(self) -> dict[str, frozenset[str]]:
        """Every resource any listed container holds devices of -> those device IDs."""
        out: dict[str, set[str]] = {}
        for c in self.containers:
            for resource, ids in c.devices.items():
                out.setdefault(resource, set()).update(ids)
        return {r: frozenset(ids) for r, ids in out.items()}

    def live_containers(self) -> frozenset[ContainerName]:
        """Every (namespace, pod, container) listed."""
        return frozenset(c.name for c in self.containers)

    def container_claims(self) -> dict[ContainerName, frozenset[str]]:
        """(namespace, pod, container) -> UIDs of the kube-vgpu claims whose devices the container got."""
        return {c.name: c.claims for c in self.containers if c.claims}


def _listed(namespace: str, pod: str, container: Any) -> Listed:
    devices: dict[str, set[str]] = {}
    for d in container.devices:  # one resource may come in several entries (one per NUMA node)
        devices.setdefault(d.resource_name, set()).update(d.device_ids)
    claims = frozenset(
        uid
        for d in container.dynamic_resources
        for r in d.claim_resources
        for cdi in r.cdi_devices
        if (uid := claim_of_cdi_device(cdi.name)) is not None
    )
    by_resource = {r: frozenset(ids) for r, ids in devices.items()}
    return Listed(ContainerName(namespace, pod, container.name), by_resource, claims)


ListPodResources = Callable[[], Awaitable[Listing]]
"""One PodResources ``List``, read (:meth:`PodResourcesClient.list`); raises ``grpc.aio.AioRpcError``."""


async def listing_or_none(list_pods: ListPodResources) -> Listing | None:
    """One ``List`` for a start-up decision (MIG partitioning, NVIDIA's modes); ``None`` (logged) when the
    kubelet does not answer, and the caller then changes nothing a pod may hold."""
    try:
        return await list_pods()
    except grpc.aio.AioRpcError as err:
        log.warning("cannot read PodResources: %s %s", err.code(), err.details())
        return None


class PodResourcesClient:
    """``v1.PodResourcesLister/List`` over the kubelet's PodResources socket; one call per use, no polling.
    The channel is made on first use, on the event loop that uses it (``grpc.aio`` channels belong to one
    loop): every reader, the exporter's scrape thread included, asks on the agent's loop."""

    def __init__(self, socket: Path, timeout_s: float = 5.0) -> None:
        self._socket = socket
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def list(self) -> Listing:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(f"unix://{self._socket}")
            self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        reply: api_pb2.ListPodResourcesResponse = await self._stub.List(
            api_pb2.ListPodResourcesRequest(), timeout=self._timeout_s
        )
        return Listing.of(reply.pod_resources)

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close(None)
            self._channel = self._stub = None


class PodResourcesCache:
    """The exporter's :class:`~plugin.metrics.sources.PodResourcesSource`: synchronous, thread-safe, each
    ``List`` kept ``ttl_s`` seconds. It runs ``list`` (the agent's :meth:`PodResourcesClient.list`) on
    ``loop`` and waits at most ``wait_s``: a loop that does not answer in time (blocked, or stopped) makes
    that scrape's :class:`SourceError`, never a hung scrape. Failures are not cached."""

    def __init__(
        self,
        list_pods: ListPodResources,
        loop: asyncio.AbstractEventLoop,
        *,
        ttl_s: float = 10.0,
        wait_s: float = DEFAULT_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list = list_pods
        self._loop = loop
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Listing] | None = None

    def live_containers(self) -> frozenset[ContainerName]:
        return self._read().live_containers()

    def container_claims(self) -> Mapping[ContainerName, frozenset[str]]:
        return self._read().container_claims()

    def _read(self) -> Listing:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._ttl_s:
                return self._cached[1]
            listing = self._ask()
            self._cached = (now, listing)
            return listing

    def _ask(self) -> Listing:
        if _loop_of_this_thread() is self._loop:  # waiting here would block the very loop it waits for
            raise SourceError("PodResources read from its own event loop's thread")
        call = _on_loop(self._list)
        try:
            future = asyncio.run_coroutine_threadsafe(call, self._loop)
        except RuntimeError as err:  # the loop is closed
            call.close()
            raise SourceError(f"kubelet PodResources List failed: the agent's loop is gone ({err})") from err
        try:
            return future.result(self._wait_s)
        except TimeoutError as err:
            future.cancel()
            raise SourceError(
                f"kubelet PodResources List failed: the agent's loop did not answer within {self._wait_s} s"
            ) from err
        except CancelledError as err:  # the agent is stopping
            raise SourceError("kubelet PodResources List failed: cancelled") from err
        except grpc.aio.AioRpcError as err:
            raise SourceError(f"kubelet PodResources List failed: {err.code()} {err.details()}") from err


def _loop_of_this_thread() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # none runs here: the scrape thread, as expected
        return None


async def _on_loop(list_pods: ListPodResources) -> Listing:
    """The call itself is made on the loop, so a loop that never runs it leaves nothing half-made."""
    return await list_pods()
