"""The extender's Prometheus metrics, on its own registry (no global state), served at ``/metrics``.

Counters and histograms are updated by the HTTP layer (latency per verb), the scheduler (decisions, rejections
by reason) and the state (forged assignments, expired reservations); every label has a bounded set of values.
The cluster is reported as a fixed set of aggregates (nodes, GPUs, compute and memory allocatable and
allocated, ledger pods by phase) read from the totals the state keeps as it changes, so a scrape's size does
not grow with the cluster and a scrape never waits on the scheduling lock. Per-node and per-GPU series belong
to the node exporters (``plugin.metrics``), which every GPU node runs.
"""

from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from extender.clusterstate import ClusterState
from extender.core.ledger import Expiry
from vcuda.units import mib_to_bytes

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
            "no-inventory, inventory-refused, api-error).",
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
        """Report the state's cluster totals at each scrape (lock-free)."""
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


class _StateCollector(Collector):
    """The cluster in a fixed set of series, read from the state's published totals: the scrape costs the same
    at 10 nodes as at 65,000 and never takes the scheduling lock (:mod:`extender.core.totals`)."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        t = self._state.totals
        yield _gauge(f"{PREFIX}_nodes", "Nodes the extender watches, with or without GPUs.", t.nodes)
        yield _gauge(
            f"{PREFIX}_gpu_nodes", "Nodes whose plugin published a GPU inventory with GPUs.", t.gpu_nodes
        )
        gpus = GaugeMetricFamily(f"{PREFIX}_gpus", "GPUs of the inventories, by health.", labels=["health"])
        gpus.add_metric(["healthy"], t.healthy_gpus)
        gpus.add_metric(["unhealthy"], t.gpus - t.healthy_gpus)
        yield gpus
        yield _gauge(f"{PREFIX}_capacity_cores", "Compute of every GPU, percent of one GPU.", t.core_capacity)
        yield _gauge(
            f"{PREFIX}_capacity_memory_bytes",
            "Schedulable memory of every GPU.",
            mib_to_bytes(t.memory_capacity_mib),
        )
        yield _gauge(
            f"{PREFIX}_allocated_cores", "Compute given out on every GPU, percent of one GPU.", t.used_cores
        )
        yield _gauge(
            f"{PREFIX}_allocated_memory_bytes", "Memory given out on every GPU.", mib_to_bytes(t.used_mib)
        )
        pods = GaugeMetricFamily(
            f"{PREFIX}_pods", "GPU pods in the ledger, by phase (see docs/extender.md).", labels=["phase"]
        )
        for phase, count in (
            ("reserved", t.reserved_pods),
            ("bound", t.bound_pods),
            ("settled", t.settled_pods),
            ("unplaced", t.unplaced_pods),
        ):
            pods.add_metric([phase], count)
        yield pods
        yield _gauge(
            f"{PREFIX}_inflight_reservations",
            "Pods bound or being bound that the plugin has not yet confirmed.",
            t.reserved_pods + t.bound_pods,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
