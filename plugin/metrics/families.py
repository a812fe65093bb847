"""Turn one scrape's readings into Prometheus metric families. No I/O; names and labels: docs/metrics.md."""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from plugin.metrics.attribution import ProcessTotals
from plugin.metrics.sources import GpuSample, ViolationLabels
from plugin.metrics.usage import ContainerState
from vcuda.model import GpuUuid
from vcuda.units import CORE_PER_GPU

__all__ = ["GpuLabels", "ScrapeView", "node_families"]

_NS = 1e9
CONTAINER = ("node", "namespace", "pod", "container")
CONTAINER_GPU = (*CONTAINER, "gpu_uuid")
GPU = ("node", "gpu_uuid", "gpu_index", "model")


@dataclass(frozen=True, slots=True)
class GpuLabels:
    index: str
    model: str


@dataclass(frozen=True, slots=True)
class ScrapeView:
    """Everything one scrape read. ``gpus`` is None when NVML failed (its series are then left out)."""

    node: str
    containers: Sequence[ContainerState]
    usage: Mapping[tuple[str, GpuUuid], ProcessTotals] | None
    gpus: Sequence[GpuSample] | None
    gpu_labels: Mapping[GpuUuid, GpuLabels]
    healthy: Mapping[GpuUuid, bool] = field(default_factory=dict)
    xids: Mapping[tuple[GpuUuid, int], int] = field(default_factory=dict)
    unattributed: Mapping[GpuUuid, int] = field(default_factory=dict)
    unreadable: int = 0
    sources_up: Mapping[str, bool] = field(default_factory=dict)
    duration_s: float = 0.0
    violations: Mapping[ViolationLabels, int] = field(default_factory=dict)


def node_families(view: ScrapeView) -> Iterator[Metric]:
    yield from _container_families(view)
    yield from _gpu_families(view)
    yield from _exporter_families(view)


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _container_families(view: ScrapeView) -> Iterator[Metric]:
    p = "kube_vgpu_container_"
    limit = _gauge(p + "memory_limit_bytes", "GPU memory limit of the container on this GPU.", CONTAINER_GPU)
    core = _gauge(p + "core_limit_ratio", "Hard compute share of the container on this GPU.", CONTAINER_GPU)
    soft = _gauge(p + "core_soft_limit_ratio", "Elastic compute ceiling on this GPU.", CONTAINER_GPU)
    shim = _gauge(p + "shim_memory_used_bytes", "GPU memory the shim accounted.", CONTAINER_GPU)
    throttled = CounterMetricFamily(p + "throttled_seconds", "Launch wait for budget.", labels=CONTAINER_GPU)
    refused = CounterMetricFamily(p + "refused_allocations", "Refused allocations.", labels=CONTAINER_GPU)
    launches = CounterMetricFamily(p + "launches", "Kernel and graph launches.", labels=CONTAINER_GPU)
    procs = _gauge(p + "processes", "Live processes of the container that loaded the shim.", CONTAINER)
    for c in view.containers:
        ids = [view.node, c.config.namespace, c.config.pod_name, c.config.container]
        procs.add_metric(ids, len(c.processes))
        for i, g in enumerate(c.config.gpus):
            labels = [*ids, g.uuid]
            slots = [p.gpus[i] for p in c.processes if i < len(p.gpus)]
            limit.add_metric(labels, g.memory_limit_bytes)
            core.add_metric(labels, g.core_limit / CORE_PER_GPU)
            soft.add_metric(labels, g.soft_limit / CORE_PER_GPU)
            shim.add_metric(labels, sum(s.memory_used for s in slots))
            throttled.add_metric(labels, sum(s.throttled_ns for s in slots) / _NS)
            refused.add_metric(labels, sum(s.refused_allocs for s in slots))
            launches.add_metric(labels, sum(s.launches for s in slots))
    yield from (limit, core, soft, shim, throttled, refused, launches, procs)
    yield _violations(view)
    if view.usage is not None:
        yield from _nvml_container_families(view, view.usage)


def _violations(view: ScrapeView) -> Metric:
    family = CounterMetricFamily(
        "kube_vgpu_container_limit_violations",
        "Watchdog violations: GPU processes outside the shim or over their container's limit.",
        labels=(*CONTAINER, "reason"),
    )
    for (namespace, pod, container, reason), n in sorted(view.violations.items()):
        family.add_metric([view.node, namespace, pod, container, reason], n)
    return family


def _nvml_container_families(
    view: ScrapeView, usage: Mapping[tuple[str, GpuUuid], ProcessTotals]
) -> Iterator[Metric]:
    p = "kube_vgpu_container_"
    used = _gauge(p + "memory_used_bytes", "GPU memory of the container's processes (NVML).", CONTAINER_GPU)
    util = _gauge(
        p + "utilization_ratio", "SM utilisation of the container's processes (NVML).", CONTAINER_GPU
    )
    seen: dict[str, list[GpuUuid]] = {}
    for name, uuid in usage:
        seen.setdefault(name, []).append(uuid)
    for c in view.containers:
        ids = [view.node, c.config.namespace, c.config.pod_name, c.config.container]
        uuids = [g.uuid for g in c.config.gpus]
        uuids += sorted(set(seen.get(c.name, ())) - set(uuids))
        for uuid in uuids:
            totals = usage.get((c.name, uuid), ProcessTotals())
            used.add_metric([*ids, uuid], totals.memory_used_bytes)
            util.add_metric([*ids, uuid], totals.utilization)
    yield from (used, util)


def _allocation(containers: Sequence[ContainerState]) -> dict[GpuUuid, tuple[float, int, int]]:
    """Per GPU: (hard compute shares as a ratio, memory limit bytes, containers)."""
    out: dict[GpuUuid, tuple[float, int, int]] = {}
    for c in containers:
        for g in c.config.gpus:
            cores, memory, count = out.get(g.uuid, (0.0, 0, 0))
            out[g.uuid] = (cores + g.core_limit / CORE_PER_GPU, memory + g.memory_limit_bytes, count + 1)
    return out


def _gpu_families(view: ScrapeView) -> Iterator[Metric]:
    def labels(uuid: GpuUuid) -> list[str]:
        known = view.gpu_labels.get(uuid, GpuLabels("", ""))
        return [view.node, uuid, known.index, known.model]

    p = "kube_vgpu_gpu_"
    if view.gpus is not None:
        used = _gauge(p + "memory_used_bytes", "Physical GPU memory in use (NVML).", GPU)
        total = _gauge(p + "memory_total_bytes", "Physical GPU memory (NVML).", GPU)
        util = _gauge(p + "utilization_ratio", "GPU busy ratio (NVML).", GPU)
        for g in view.gpus:
            used.add_metric(labels(g.uuid), g.memory_used_bytes)
            total.add_metric(labels(g.uuid), g.memory_total_bytes)
            if g.utilization is not None:
                util.add_metric(labels(g.uuid), g.utilization)
        yield from (used, total, util)
    cores = _gauge(p + "cores_allocated_ratio", "Sum of hard compute shares on this GPU.", GPU)
    memory = _gauge(p + "memory_allocated_bytes", "Sum of memory limits on this GPU.", GPU)
    count = _gauge(p + "containers", "Live containers with a share of this GPU.", GPU)
    allocation = _allocation(view.containers)
    for uuid in sorted(set(allocation) | {g.uuid for g in view.gpus or ()}):
        c, m, n = allocation.get(uuid, (0.0, 0, 0))
        cores.add_metric(labels(uuid), c)
        memory.add_metric(labels(uuid), m)
        count.add_metric(labels(uuid), n)
    health = _gauge(p + "healthy", "1 if the GPU is advertised healthy.", GPU)
    for uuid, ok in sorted(view.healthy.items()):
        health.add_metric(labels(uuid), 1.0 if ok else 0.0)
    xids = CounterMetricFamily(p + "xid_errors", "XID error events by code.", labels=[*GPU, "xid"])
    for (uuid, xid), n in sorted(view.xids.items()):
        xids.add_metric([*labels(uuid), str(xid)], n)
    yield from (cores, memory, count, health, xids)


def _exporter_families(view: ScrapeView) -> Iterator[Metric]:
    p = "kube_vgpu_exporter_"
    up = _gauge(p + "source_up", "1 if the source answered in this scrape.", ("node", "source"))
    for source, ok in sorted(view.sources_up.items()):
        up.add_metric([view.node, source], 1.0 if ok else 0.0)
    lost = _gauge(
        p + "unattributed_processes", "GPU processes of no kube-vgpu container.", ("node", "gpu_uuid")
    )
    for uuid, n in sorted(view.unattributed.items()):
        lost.add_metric([view.node, uuid], n)
    bad = _gauge(p + "unreadable_files", "State files that failed to decode.", ("node",))
    bad.add_metric([view.node], view.unreadable)
    took = _gauge(p + "scrape_duration_seconds", "Time this scrape took.", ("node",))
    took.add_metric([view.node], view.duration_s)
    yield from (up, lost, bad, took)
