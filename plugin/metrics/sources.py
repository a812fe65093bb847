"""What the exporter reads, as Protocols and plain values, so tests can hand it fakes.

Implementations live elsewhere: :mod:`plugin.metrics.nvml_telemetry` over ``plugin.nvml`` for
:class:`GpuTelemetry`, :class:`plugin.podresources.PodResourcesCache` over the plugin's one kubelet
PodResources client for :class:`PodResourcesSource`, and :class:`XidTally` (fed by the plugin's health
monitor) for :class:`HealthView`.
"""

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from plugin.core.gpu import XidEvent
from vcuda.model import GpuUuid

__all__ = [
    "ContainerName",
    "HealthView",
    "GpuSample",
    "GpuTelemetry",
    "PodResourcesSource",
    "ProcessSample",
    "SourceError",
    "ViolationLabels",
    "ViolationTally",
    "ViolationView",
    "XidTally",
]


class SourceError(Exception):
    """A source could not be read this scrape (NVML error, kubelet unreachable); its series are skipped."""


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One physical GPU as NVML sees it now. ``utilization`` is 0..1 over the driver's sample window, None
    when the driver does not report it (its series is then left out)."""

    uuid: GpuUuid
    index: int
    model: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization: float | None


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process on one GPU. ``host_pid`` is the PID on the node; ``utilization`` is SM use 0..1."""

    gpu_uuid: GpuUuid
    host_pid: int
    memory_used_bytes: int
    utilization: float = 0.0


class GpuTelemetry(Protocol):
    """Live NVML readings. Both methods raise :class:`SourceError` when NVML cannot answer."""

    def gpu_samples(self) -> Sequence[GpuSample]: ...

    def process_samples(self) -> Sequence[ProcessSample]:
        """Compute processes with their memory, and SM utilisation where the driver samples it."""
        ...


@dataclass(frozen=True, slots=True, order=True)
class ContainerName:
    """A container as the kubelet names it."""

    namespace: str
    pod: str
    container: str


class PodResourcesSource(Protocol):
    """The kubelet PodResources ``List``: which containers are live on this node."""

    def live_containers(self) -> frozenset[ContainerName]:
        """Raises :class:`SourceError` when the kubelet cannot be asked."""
        ...

    def container_claims(self) -> Mapping[ContainerName, frozenset[str]]:
        """DRA: the UIDs of the kube-vgpu ResourceClaims each live container uses (PodResources'
        ``dynamic_resources``); raises :class:`SourceError` when the kubelet cannot be asked."""
        ...


class HealthView(Protocol):
    def healthy(self) -> Mapping[GpuUuid, bool]:
        """The health each GPU is advertised with; GPUs not in the map are unknown."""
        ...

    def xid_counts(self) -> Mapping[tuple[GpuUuid, int], int]:
        """XID events seen since start, by (GPU, XID code)."""
        ...


class XidTally:
    """A :class:`HealthView` the plugin's health monitor feeds; safe to read from the scrape thread.

    Wiring: ``HealthMonitor(..., on_xid=tally.record)`` counts XIDs; health comes from ``healthy`` (e.g.
    ``lambda: monitor.healthy``) or from :meth:`set_healthy` calls.
    """

    def __init__(self, healthy: Callable[[], Mapping[GpuUuid, bool]] | None = None) -> None:
        self._lock = threading.Lock()
        self._source = healthy
        self._healthy: dict[GpuUuid, bool] = {}
        self._xids: dict[tuple[GpuUuid, int], int] = {}

    def record(self, event: XidEvent) -> None:
        with self._lock:
            key = (event.uuid, event.xid)
            self._xids[key] = self._xids.get(key, 0) + 1

    def set_healthy(self, uuid: GpuUuid, healthy: bool) -> None:
        with self._lock:
            self._healthy[uuid] = healthy

    def healthy(self) -> Mapping[GpuUuid, bool]:
        if self._source is not None:
            return dict(self._source())
        with self._lock:
            return dict(self._healthy)

    def xid_counts(self) -> Mapping[tuple[GpuUuid, int], int]:
        with self._lock:
            return dict(self._xids)


ViolationLabels = tuple[str, str, str, str]
"""(namespace, pod, container, reason) of ``kube_vgpu_container_limit_violations_total``."""


class ViolationView(Protocol):
    def violation_counts(self) -> Mapping[ViolationLabels, int]:
        """Watchdog violations reported since start, by (namespace, pod, container, reason)."""
        ...


class ViolationTally:
    """A :class:`ViolationView` the watchdog (:mod:`plugin.watchdog`) feeds; safe to read from the scrape
    thread. At most ``max_series`` label sets: past that, new pods count under empty namespace, pod and
    container (the reason kept), so a stream of short-lived violating pods cannot grow the exporter."""

    def __init__(self, max_series: int = 1000) -> None:
        self._lock = threading.Lock()
        self._max = max_series
        self._counts: dict[ViolationLabels, int] = {}

    def record(self, namespace: str, pod: str, container: str, reason: str) -> None:
        key = (namespace, pod, container, reason)
        with self._lock:
            if key not in self._counts and len(self._counts) >= self._max:
                key = ("", "", "", reason)
            self._counts[key] = self._counts.get(key, 0) + 1

    def violation_counts(self) -> Mapping[ViolationLabels, int]:
        with self._lock:
            return dict(self._counts)
