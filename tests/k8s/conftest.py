"""Fixtures of the real-Kubernetes tier (marker ``k8s``, docs/testing.md): one loopback cluster per test session
(:class:`tests.k8s.cluster.K8sCluster`), GPU nodes on it, and a namespace per test module.

Skipped with the reason when the control-plane binaries or helm are not built (``make build`` builds both).
"""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders.vcuda import nvswitch_node, pcie_node
from tests.k8s.chart import HELM
from tests.k8s.cluster import K8sCluster
from tests.k8s.controlplane import BIN_DIR, binaries_missing
from tests.k8s.processes import wait_for

GPU_NODES = {"k8s-h100": nvswitch_node(2, node="k8s-h100"), "k8s-a10": pcie_node(2, node="k8s-a10")}
"""Two small nodes: 2 x H100 80 GB (NVLink) and 2 x A10 24 GB (PCIe)."""
START_TIMEOUT_S = 300
"""Per test, including the session cluster's start in the first one (8 s idle, over a minute on a busy box)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.k8s)
            item.add_marker(pytest.mark.timeout(START_TIMEOUT_S))


@pytest.fixture(scope="session")
def k8s() -> Iterator[K8sCluster]:
    missing = binaries_missing()
    if missing:
        pytest.skip(f"{', '.join(missing)} not built in {BIN_DIR}: run `make k8s-controlplane`")
    if not HELM.exists():
        pytest.skip(f"helm not installed at {HELM}: run `make build`")
    workdir = Path(tempfile.mkdtemp(prefix="kv-k8s-"))
    cluster = K8sCluster(workdir)
    try:
        cluster.start()
        for name, inventory in GPU_NODES.items():
            cluster.add_gpu_node(name, inventory)
        yield cluster
    except BaseException:
        for process in [*cluster.plane.processes, cluster.extender, *cluster.schedulers.values()]:
            if process is not None:
                print(f"--- {process.name}:\n{process.tail(60)}")
        raise
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def namespace(k8s: K8sCluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace named after the test module (webhooks apply to it: it is not kube-system)."""
    name = str(request.module.__name__).rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    k8s.add_namespace(name)
    return name


@pytest.fixture
def core(k8s: K8sCluster, namespace: str) -> Iterator[Any]:
    """The admin's CoreV1Api; the pods a test leaves in its module's namespace are deleted after it (no
    kubelet runs, so a bound pod is removed at once with a zero grace period, as ``--force`` does)."""

    core = k8s.client("CoreV1Api")
    yield core
    core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    wait_for(
        lambda: not core.list_namespaced_pod(namespace).items, timeout_s=30, what=f"pods of {namespace} gone"
    )
