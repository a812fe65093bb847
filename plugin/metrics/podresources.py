"""A :class:`~plugin.metrics.sources.PodResourcesSource` over the kubelet PodResources ``List`` (gRPC).

Answers are cached for ``ttl_s`` seconds: the kubelet rate-limits the API at 100 QPS shared with every other
client (``DefaultQPS`` in the kubelet's ``pkg/kubelet/apis/podresources/constants.go``), and a scrape needs no
fresher view of which containers exist.

DRA containers: the kubelet lists, per container, the claims it uses (``dynamic_resources``) with the CDI
devices the driver prepared for them. kube-vgpu's are named ``kube-vgpu.<domain>/claim=<claim-uid>-<device>``
(:func:`plugin.core.dra.claim_cdi_name`), so the claim's UID, which names the claim's state directory
(``<pod-uid>_dra-<claim-uid>``), is read from them; other drivers' devices are ignored.
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import grpc

from plugin.api.podresources.v1 import api_pb2, api_pb2_grpc
from plugin.core.dra import claim_of_cdi_device
from plugin.metrics.sources import ContainerName, SourceError

__all__ = ["DEFAULT_SOCKET", "KubeletPodResources", "claims_from_response", "live_from_response"]

DEFAULT_SOCKET: Final = "/var/lib/kubelet/pod-resources/kubelet.sock"


def live_from_response(pod_resources: Iterable[Any]) -> frozenset[ContainerName]:
    """Every (namespace, pod, container) in a ``ListPodResourcesResponse.pod_resources``."""
    return frozenset(ContainerName(p.namespace, p.name, c.name) for p in pod_resources for c in p.containers)


def claims_from_response(pod_resources: Iterable[Any]) -> dict[ContainerName, frozenset[str]]:
    """(namespace, pod, container) -> UIDs of the kube-vgpu claims whose devices the container got."""
    out: dict[ContainerName, frozenset[str]] = {}
    for p in pod_resources:
        for c in p.containers:
            uids = {
                uid
                for d in c.dynamic_resources
                for r in d.claim_resources
                for cdi in r.cdi_devices
                if (uid := claim_of_cdi_device(cdi.name)) is not None
            }
            if uids:
                out[ContainerName(p.namespace, p.name, c.name)] = frozenset(uids)
    return out


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
        self._cached: tuple[float, frozenset[ContainerName], dict[ContainerName, frozenset[str]]] | None = (
            None
        )
        self._channel = grpc.insecure_channel(self._target)
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]

    def live_containers(self) -> frozenset[ContainerName]:
        return self._list()[0]

    def container_claims(self) -> Mapping[ContainerName, frozenset[str]]:
        return self._list()[1]

    def _list(self) -> tuple[frozenset[ContainerName], dict[ContainerName, frozenset[str]]]:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._ttl_s:
                return self._cached[1], self._cached[2]
            try:
                response = self._stub.List(api_pb2.ListPodResourcesRequest(), timeout=self._timeout_s)
            except grpc.RpcError as err:
                raise SourceError(f"kubelet PodResources List failed at {self._target}: {err}") from err
            live = live_from_response(response.pod_resources)
            claims = claims_from_response(response.pod_resources)
            self._cached = (now, live, claims)
            return live, claims

    def close(self) -> None:
        self._channel.close()
