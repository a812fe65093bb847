"""The Grafana dashboard (``deploy/dashboards/kube-vgpu.json``) is well formed and queries real metrics.

Cases: valid JSON with a datasource variable used by every query; unique panel ids and a layout inside
Grafana's 24-column grid; rows for the cluster, scheduling, node, GPU and pod views; every metric it queries
is a ``kube_vgpu_`` metric named in the table below; node-exporter metrics are documented in
``docs/metrics.md`` (once it exists) and extender metrics are defined in ``extender/metrics.py``.
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "dashboards" / "kube-vgpu.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# The metrics the dashboard relies on: node-exporter names from docs/metrics.md, extender names from
# extender/metrics.py.
QUERIED = {
    "kube_vgpu_container_memory_used_bytes",
    "kube_vgpu_container_shim_memory_used_bytes",
    "kube_vgpu_container_memory_limit_bytes",
    "kube_vgpu_container_utilization_ratio",
    "kube_vgpu_container_core_limit_ratio",
    "kube_vgpu_container_core_soft_limit_ratio",
    "kube_vgpu_container_throttled_seconds_total",
    "kube_vgpu_container_refused_allocations_total",
    "kube_vgpu_gpu_memory_used_bytes",
    "kube_vgpu_gpu_memory_total_bytes",
    "kube_vgpu_gpu_utilization_ratio",
    "kube_vgpu_gpu_cores_allocated_ratio",
    "kube_vgpu_gpu_memory_allocated_bytes",
    "kube_vgpu_gpu_containers",
    "kube_vgpu_gpu_healthy",
    "kube_vgpu_gpu_xid_errors_total",
    "kube_vgpu_exporter_source_up",
    "kube_vgpu_exporter_unattributed_processes",
    "kube_vgpu_extender_request_duration_seconds",
    "kube_vgpu_extender_rejections_total",
    "kube_vgpu_extender_decisions_total",
    "kube_vgpu_extender_inflight_reservations",
}
METRIC = re.compile(r"\bkube_vgpu_[a-z0-9_]+")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queried_metrics() -> set[str]:
    found = {m for p in panels() for t in p["targets"] for m in METRIC.findall(t["expr"])}
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in found}


def test_every_query_uses_the_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_has_cluster_scheduling_node_gpu_and_pod_views() -> None:
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Cluster", "Scheduling", "Nodes", "GPUs", "Pods"]


def test_dashboard_queries_only_known_metrics() -> None:
    assert queried_metrics() == QUERIED


@pytest.mark.skipif(not METRICS_DOC.exists(), reason="docs/metrics.md not written yet")
def test_every_queried_node_metric_is_documented() -> None:
    documented = set(METRIC.findall(METRICS_DOC.read_text()))
    node_metrics = {m for m in queried_metrics() if not m.startswith("kube_vgpu_extender_")}
    assert sorted(node_metrics - documented) == []


def test_every_queried_extender_metric_is_defined_by_the_extender() -> None:
    source = (ROOT / "extender" / "metrics.py").read_text()
    extender_metrics = {m for m in queried_metrics() if m.startswith("kube_vgpu_extender_")}
    undefined = [
        m
        for m in extender_metrics
        if "{PREFIX}_" + m.removeprefix("kube_vgpu_extender_").removesuffix("_total") + '"' not in source
    ]
    assert undefined == []
