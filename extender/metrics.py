"""The extender's Prometheus metrics, on its own registry (no global state), served at ``/metrics``.

Counters and histograms are updated by the HTTP layer (latency per verb), the scheduler (decisions, rejections
by reason) and the state (forged assignments, expired reservations). Allocation versus capacity per node and
GPU and the in-flight reservations are read from the state at scrape time, so nothing is kept twice.
"""

from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from extender.core.ledger import Expiry
from extender.state import ClusterState
from vcuda.units import CORE_PER_GPU, mib_to_bytes

__all__ = ["PREFIX", "ExtenderMetrics"]

PREFIX: Final = "kube_vgpu_extender"
# From 0.5 ms (a filter over a few nodes) to 10 s (a bind waiting on a slow API server).
_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ExtenderMetrics:
    """Implements the scheduler's ``Recorder`` and the state's ``StateEvents``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time to answer one call, by verb (filter, prioritize, bind, preempt, validate, mutate).",
            ["verb"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            f"{PREFIX}_decisions",
            "Decisions by verb and outcome: filter and prioritize "
            "count nodes (fit, unfit), bind counts pods (bound, refused).",
            ["verb", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            f"{PREFIX}_rejections",
            "Nodes refused in filter and binds refused, by verb "
            "and reason (placement reasons, invalid-request reasons, in-flight-conflict, "
            "no-inventory, api-error).",
            ["verb", "reason"],
            registry=r,
        )
        self.bad_requests = Counter(
            f"{PREFIX}_bad_requests", "Calls answered 400 (malformed JSON or shape).", ["verb"], registry=r
        )
        self.forged = Counter(
            f"{PREFIX}_forged_assignments",
            "Pod assignment annotations that failed "
            "verification and were ignored (not written by kube-vgpu).",
            registry=r,
        )
        self.expired_total = Counter(
            f"{PREFIX}_reservations_expired",
            "In-flight holdings ended by the grace: "
            "settled (bound, kept) or dropped (never bound, GPUs given back).",
            ["outcome"],
            registry=r,
        )

    def watch(self, state: ClusterState) -> None:
        """Report the state's allocation and in-flight reservations at each scrape."""
        self.registry.register(_StateCollector(state))

    def observe(self, verb: str, seconds: float) -> None:
        self.latency.labels(verb).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # Recorder
    def decided(self, verb: str, outcome: str, count: int = 1) -> None:
        if count:
            self.decisions.labels(verb, outcome).inc(count)

    def rejected(self, verb: str, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            self.rejections.labels(verb, reason).inc(count)

    # StateEvents
    def forged_assignment(self, reason: str) -> None:
        self.forged.inc()

    def expired(self, expiry: Expiry) -> None:
        if expiry.settled:
            self.expired_total.labels("settled").inc(expiry.settled)
        if expiry.dropped:
            self.expired_total.labels("dropped").inc(expiry.dropped)


def _family(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class _StateCollector(Collector):
    def __init__(self, state: ClusterState) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gpu = ["node", "gpu_uuid", "gpu_index", "model"]
        families = {
            "gc": _family("gpu_capacity_cores", "Compute of the GPU in percent (100), healthy or not.", gpu),
            "gm": _family("gpu_capacity_memory_bytes", "Schedulable memory of the GPU.", gpu),
            "ac": _family("gpu_allocated_cores", "Compute given out on the GPU, percent.", gpu),
            "am": _family("gpu_allocated_memory_bytes", "Memory given out on the GPU.", gpu),
            "h": _family("gpu_healthy", "1 when the plugin reports the GPU healthy.", gpu),
            "nc": _family("node_capacity_cores", "Compute of the node's GPUs, percent.", ["node"]),
            "nm": _family("node_capacity_memory_bytes", "Schedulable memory of the node's GPUs.", ["node"]),
            "nac": _family("node_allocated_cores", "Compute given out on the node, percent.", ["node"]),
            "nam": _family("node_allocated_memory_bytes", "Memory given out on the node.", ["node"]),
        }
        in_flight = 0
        with self._state.lock:
            for ledger in self._state.ledgers():
                in_flight += sum(1 for h in ledger.holdings() if h.in_flight)
                if ledger.inventory is None:
                    continue
                node_cores = node_mib = used_cores = used_mib = 0
                for g in ledger.inventory.gpus:
                    labels = [ledger.name, g.uuid, str(g.index), g.model]
                    load = ledger.load.get(g.uuid)
                    cores, mib = (load.cores, load.memory_mib) if load else (0, 0)
                    families["gc"].add_metric(labels, CORE_PER_GPU)
                    families["gm"].add_metric(labels, mib_to_bytes(g.memory_mib))
                    families["ac"].add_metric(labels, cores)
                    families["am"].add_metric(labels, mib_to_bytes(mib))
                    families["h"].add_metric(labels, 1 if g.healthy else 0)
                    node_cores, node_mib = node_cores + CORE_PER_GPU, node_mib + g.memory_mib
                    used_cores, used_mib = used_cores + cores, used_mib + mib
                families["nc"].add_metric([ledger.name], node_cores)
                families["nm"].add_metric([ledger.name], mib_to_bytes(node_mib))
                families["nac"].add_metric([ledger.name], used_cores)
                families["nam"].add_metric([ledger.name], mib_to_bytes(used_mib))
        yield from families.values()
        total = GaugeMetricFamily(
            f"{PREFIX}_inflight_reservations",
            "Pods bound or being bound that the plugin has not yet confirmed.",
        )
        total.add_metric([], in_flight)
        yield total
