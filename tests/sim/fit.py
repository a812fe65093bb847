"""The SIMULATED kube-scheduler's built-in filters, reduced to what GPU pods meet in the simulation.

Simulated: node readiness (the ``not-ready`` taint the node lifecycle controller would add), ``spec.unschedulable``,
``nodeSelector``, and ``NodeResourcesFit`` for extended resources only (requests counted against node
allocatable, minus resources with ``ignoredByScheduler: true``). Not simulated: CPU and memory, affinity,
taints and tolerations in general, topology spread, volumes, ports, preemption.
Messages follow upstream's wording so the aggregated "0/N nodes are available" line reads the same.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from vcuda.model import ContainerKind, ContainerRequest, PodRequest
from vcuda.request import effective_totals
from vcuda.units import parse_quantity

__all__ = [
    "NOT_READY",
    "extended_requests",
    "fit_node",
    "is_terminal",
    "summarise_failures",
]

NOT_READY = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
UNSCHEDULABLE = "node(s) were unschedulable"
SELECTOR = "node(s) didn't match Pod's node affinity/selector"

Obj = Mapping[str, Any]


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _is_extended(resource: str) -> bool:
    return "/" in resource and not resource.startswith("kubernetes.io/")


def _container_requests(container: Obj) -> dict[str, int]:
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    out = {}
    for name, raw in merged.items():
        if _is_extended(name):
            try:
                out[name] = parse_quantity(raw)
            except ValueError:
                out[name] = 0
    return out


def extended_requests(pod: Obj) -> dict[str, int]:
    """Effective extended-resource requests, per resource as the kube-scheduler and kubelet count them
    (:func:`vcuda.request.effective_totals`): the larger of the app containers plus sidecars and of each init
    container plus the sidecars started before it (``restartPolicy: Always`` makes a sidecar)."""
    spec = pod.get("spec") or {}
    kinded = [
        (ContainerKind.SIDECAR if c.get("restartPolicy") == "Always" else ContainerKind.INIT, c)
        for c in spec.get("initContainers") or []
    ] + [(ContainerKind.APP, c) for c in spec.get("containers") or []]
    requests = [(kind, _container_requests(c)) for kind, c in kinded]
    out = {}
    for resource in sorted({r for _, wanted in requests for r in wanted}):
        one = tuple(
            ContainerRequest(str(i), wanted.get(resource, 0), 0, kind)
            for i, (kind, wanted) in enumerate(requests)
        )
        out[resource] = effective_totals(PodRequest(one))[0]
    return out


def _is_ready(node: Obj) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _allocatable(node: Obj) -> dict[str, int]:
    raw = (node.get("status") or {}).get("allocatable") or {}
    out = {}
    for name, value in raw.items():
        try:
            out[name] = parse_quantity(value)
        except ValueError:
            continue
    return out


def fit_node(pod: Obj, node: Obj, assigned: Iterable[Obj], ignored: frozenset[str]) -> str | None:
    """``None`` when the node passes the built-in filters, else upstream's reason for it."""
    if not _is_ready(node):
        return NOT_READY
    if (node.get("spec") or {}).get("unschedulable"):
        return UNSCHEDULABLE
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return SELECTOR
    wanted = {k: v for k, v in extended_requests(pod).items() if k not in ignored and v > 0}
    if not wanted:
        return None
    allocatable = _allocatable(node)
    used: Counter[str] = Counter()
    for other in assigned:
        used.update(extended_requests(other))
    for name in sorted(wanted):
        if used[name] + wanted[name] > allocatable.get(name, 0):
            return f"Insufficient {name}"
    return None


def summarise_failures(total_nodes: int, reasons: Mapping[str, str]) -> str:
    """kube-scheduler's ``FitError`` line: ``0/3 nodes are available: 1 Insufficient x, 2 <msg>.``"""
    counts = Counter(reasons.values())
    parts = sorted(f"{n} {reason}" for reason, n in counts.items())
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."
