"""A :class:`~plugin.metrics.sources.PodResourcesSource` over the kubelet PodResources ``List`` (gRPC).

Answers are cached for ``ttl_s`` seconds: the kubelet rate-limits the API at 100 QPS shared with every other
client (``DefaultQPS`` in the kubelet's ``pkg/kubelet/apis/podresources/constants.go``), and a scrape needs no
fresher view of which containers exist.
"""

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import grpc

from plugin.api.podresources.v1 import api_pb2, api_pb2_grpc
from plugin.metrics.sources import ContainerName, SourceError

__all__ = ["DEFAULT_SOCKET", "KubeletPodResources", "live_from_response"]

DEFAULT_SOCKET: Final = "/var/lib/kubelet/pod-resources/kubelet.sock"


def live_from_response(pod_resources: Iterable[Any]) -> frozenset[ContainerName]:
    """Every (namespace, pod, container) in a ``ListPodResourcesResponse.pod_resources``."""
    return frozenset(ContainerName(p.namespace, p.name, c.name) for p in pod_resources for c in p.containers)


class KubeletPodResources:
    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        *,
        ttl_s: float = 10.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = f"unix://{socket_path}"
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, frozenset[ContainerName]] | None = None
        self._channel = grpc.insecure_channel(self._target)
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]

    def live_containers(self) -> frozenset[ContainerName]:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._ttl_s:
                return self._cached[1]
            try:
                response = self._stub.List(api_pb2.ListPodResourcesRequest(), timeout=self._timeout_s)
            except grpc.RpcError as err:
                raise SourceError(f"kubelet PodResources List failed at {self._target}: {err}") from err
            live = live_from_response(response.pod_resources)
            self._cached = (now, live)
            return live

    def close(self) -> None:
        self._channel.close()
