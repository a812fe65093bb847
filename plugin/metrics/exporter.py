"""The node exporter: a prometheus_client Collector reading the state directory, NVML and the kubelet.

Wiring (in ``plugin/__main__.py``; every source but the state directory is optional)::

    tally = XidTally(healthy=lambda: monitor.healthy)        # and HealthMonitor(..., on_xid=tally.record)
    collector = NodeCollector(
        node=settings.node_name,
        state_dir=Path(settings.state_dir),                  # vcuda.names.HOST_STATE_DIR
        root=Path("/"),                                      # hostPID: /proc shows the node's processes
        telemetry=NvmlTelemetry(nvml, gpus=node_gpus.gpus),  # plugin.metrics.nvml_telemetry
        pod_resources=PodResourcesCache(client.list, loop),  # plugin.podresources, the agent's client
        health=tally,
        container_ids=lambda: container_ids_from_pods(pods_on_this_node()),  # optional
        violations=agent.violations,                         # plugin.watchdog's counter, optional
        shared_claims=agent.watchdog.shared_claims,          # the DRA claims pods use (plugin.watchdog)
    )
    server, thread = serve(settings.metrics_port, collector)  # skip when the port is 0
    ...
    server.shutdown(); server.server_close()

A source that fails leaves its series out and ``kube_vgpu_exporter_source_up{source=...}`` at 0. No global
registry is used.
"""

import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from plugin.metrics.attribution import Attribution, Evidence, attribute, dra_claim_uid
from plugin.metrics.families import GpuLabels, ScrapeView, node_families
from plugin.metrics.procfs import read_cgroup, read_namespaced_pid
from plugin.metrics.sources import (
    ContainerName,
    GpuSample,
    GpuTelemetry,
    HealthView,
    PodResourcesSource,
    SourceError,
    ViolationView,
)
from plugin.metrics.usage import ContainerState, StateReader
from plugin.quietserve import QuietServing
from vcuda.model import GpuUuid

__all__ = ["DEFAULT_PORT", "NodeCollector", "serve"]

DEFAULT_PORT: Final = 9400


class NodeCollector:
    """Reads every source on each scrape and yields the families listed in ``docs/metrics.md``."""

    def __init__(
        self,
        *,
        node: str,
        state_dir: Path,
        root: Path = Path("/"),
        telemetry: GpuTelemetry | None = None,
        pod_resources: PodResourcesSource | None = None,
        health: HealthView | None = None,
        container_ids: Callable[[], Mapping[str, str]] | None = None,
        violations: ViolationView | None = None,
        shared_claims: Callable[[], Mapping[str, Collection[str]]] | None = None,
    ) -> None:
        self._node = node
        self._root = root
        self._state = StateReader(state_dir)
        self._telemetry = telemetry
        self._pod_resources = pod_resources
        self._health = health
        self._container_ids = container_ids
        self._violations = violations
        self._shared_claims = shared_claims
        """Pod UID -> the DRA claim directories it uses (a claim's directory may name another pod, or the
        claim itself: no cgroup names it); from the watchdog, which lists the pods."""
        self._gpu_labels: dict[GpuUuid, GpuLabels] = {}
        self._claims: dict[ContainerName, frozenset[str]] = {}  # of the current read (under the lock)
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            view = self.read()
        return list(node_families(view))

    def read(self) -> ScrapeView:
        start = time.perf_counter()
        state = self._state.read()
        up: dict[str, bool] = {"state": state.readable}
        containers = self._live(state.containers, up)
        gpus, attribution = self._nvml(state.containers, {c.name for c in containers}, up)
        return ScrapeView(
            node=self._node,
            containers=containers,
            usage=None if attribution is None else attribution.by_container,
            gpus=gpus,
            gpu_labels=dict(self._gpu_labels),
            healthy=self._health.healthy() if self._health else {},
            xids=self._health.xid_counts() if self._health else {},
            unattributed={} if attribution is None else attribution.unattributed,
            unreadable=state.unreadable,
            sources_up=up,
            duration_s=time.perf_counter() - start,
            violations=self._violations.violation_counts() if self._violations else {},
        )

    def _live(
        self, containers: tuple[ContainerState, ...], up: dict[str, bool]
    ) -> tuple[ContainerState, ...]:
        """Drop containers the kubelet no longer lists (their directory may outlive them a while); a DRA
        claim's directory lives while a listed container uses the claim."""
        self._claims = {}
        if self._pod_resources is None:
            return containers
        try:
            live = self._pod_resources.live_containers()
            self._claims = dict(self._pod_resources.container_claims())
        except SourceError:
            up["podresources"] = False
            return containers
        up["podresources"] = True
        in_use = {uid for uids in self._claims.values() for uid in uids}
        return tuple(
            c for c in containers
            if ContainerName(c.config.namespace, c.config.pod_name, c.config.container) in live
            or dra_claim_uid(c) in in_use
        )  # fmt: skip

    def _nvml(
        self, containers: tuple[ContainerState, ...], live: set[str], up: dict[str, bool]
    ) -> tuple[list[GpuSample] | None, Attribution | None]:
        if self._telemetry is None:
            return None, None
        try:
            gpus = list(self._telemetry.gpu_samples())
            samples = list(self._telemetry.process_samples())
        except SourceError:
            up["nvml"] = False
            return None, None
        up["nvml"] = True
        for g in gpus:
            self._gpu_labels[g.uuid] = GpuLabels(str(g.index), g.model)
        pids = {s.host_pid for s in samples}
        evidence = Evidence(
            cgroups={pid: read_cgroup(self._root, pid) for pid in pids},
            container_ids=self._container_ids() if self._container_ids else {},
            namespaced_pid=lambda pid: read_namespaced_pid(self._root, pid),
            claims=self._claims,
            shared=self._shared_claims() if self._shared_claims else None,
        )
        attribution = attribute(samples, containers, evidence, live=live)
        return gpus, attribution


class _Server(QuietServing, ThreadingWSGIServer):
    """prometheus_client's server (a thread per request) that sleeps while nobody scrapes."""


class _Silent(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged (as prometheus_client's handler)."""


def serve(port: int, collector: Collector, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
    """Serve ``collector`` alone on ``addr:port`` at ``/metrics`` in a daemon thread (port 0 picks one):
    ``start_http_server``'s app and server, minus its 0.5 s poll (:mod:`plugin.quietserve`).

    Stop with ``server.shutdown(); server.server_close()``.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    family, _, _, _, sockaddr = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # An IPv6 address binds AF_INET6 (as start_http_server picks the family).
    server_class: type[_Server] = type("_Server", (_Server,), {"address_family": family})
    server = make_server(str(sockaddr[0]), port, make_wsgi_app(registry), server_class, handler_class=_Silent)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
