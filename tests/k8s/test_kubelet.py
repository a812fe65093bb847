"""The REAL kubelet (with Kubernetes' fake CRI runtime) driving kube-vgpu's real plugin (over the fake NVML).

Cases: the kubelet registers its Node and our plugin with its device manager (``vcuda-core`` 800 on node
allocatable comes from the kubelet, ``vcuda-memory`` and the inventory from the plugin); a GPU pod goes
through the webhook, kube-scheduler, the extender, the kubelet's admission and device manager (``Allocate``,
``PreStartContainer``) to Running, with the plugin's status annotation; after a kubelet restart the plugin
registers again and the next pod runs too: the previous test's pod was force-deleted just before the restart,
and the restarted kubelet still counts its slices until it has synced its pods, so the extender holds that
pod's share (``--gone-pod-hold-seconds``) and places the whole-GPU pod beside it.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.fakes.nvml.harness import LIBRARY
from tests.k8s.cluster import NAMES, K8sCluster
from tests.k8s.controlplane import BIN_DIR, NODE_COMPONENTS, binaries_missing
from tests.k8s.kubelet import KubeletNode, kubelet_unavailable
from tests.k8s.processes import wait_for

NODE = "k8s-kubelet"


def kubelet_node(k8s: K8sCluster, name: str, kind: type[KubeletNode] = KubeletNode) -> Iterator[KubeletNode]:
    """A real-kubelet node named ``name`` (8 x H100) for a module fixture; skips with the reason if it can't run."""
    missing = binaries_missing(NODE_COMPONENTS)
    if missing:
        pytest.skip(f"{', '.join(missing)} not built in {BIN_DIR}: run `make k8s-controlplane`")
    if not LIBRARY.exists():
        pytest.skip("the fake NVML is not built (run `make build`)")
    reason = kubelet_unavailable()
    if reason:
        pytest.skip(reason)
    started = kind(k8s, name, "h100x8")
    try:
        started.start()
        yield started
    finally:
        started.stop()
        with contextlib.suppress(ApiException):
            k8s.client("CoreV1Api").delete_node(name)


@pytest.fixture(scope="module")
def node(k8s: K8sCluster) -> Iterator[KubeletNode]:
    yield from kubelet_node(k8s, NODE)


def _pod(name: str, cores: int, mib: int = 0) -> dict[str, Any]:
    limits = {NAMES.core: str(cores), **({NAMES.memory: str(mib)} if mib else {})}
    container = {"name": "c0", "image": "cuda", "resources": {"limits": limits}}
    return {"metadata": {"name": name},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": NODE}, "containers": [container]}}  # fmt: skip


def running(core: Any, namespace: str, name: str) -> Any:
    def probe() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase == "Failed":  # e.g. refused at the kubelet's admission: it never runs
            raise AssertionError(f"pod {namespace}/{name} failed: {pod.status.reason} {pod.status.message}")
        return pod if pod.status.phase == "Running" else None

    try:
        return wait_for(probe, timeout_s=60, what=f"pod {namespace}/{name} Running on the real kubelet")
    except AssertionError as err:
        status = core.read_namespaced_pod(name, namespace).status
        raise AssertionError(
            f"{err}: {status.phase} {status.reason} {status.message} {status.conditions}"
        ) from err


def test_the_kubelet_advertises_the_plugin_devices(node: KubeletNode, core: Any) -> None:
    allocatable = core.read_node(NODE).status.allocatable
    assert allocatable[NAMES.core] == "800"  # 8 GPUs x 100, from the kubelet's device manager
    assert int(allocatable[NAMES.memory]) > 0  # published by the plugin
    assert allocatable["pods"] == "110"  # the kubelet's own


def test_a_gpu_pod_runs_through_kubelet_allocate_and_prestart(
    node: KubeletNode, core: Any, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, _pod("share", 30, 4096))
    pod = running(core, namespace, "share")
    assert pod.spec.node_name == NODE
    assert NAMES.assignment in pod.metadata.annotations
    assert '"allocated"' in pod.metadata.annotations.get(
        NAMES.status, ""
    )  # the plugin confirmed it at PreStart


def test_the_plugin_registers_again_after_a_kubelet_restart(
    node: KubeletNode, core: Any, namespace: str
) -> None:
    node.restart_kubelet()
    core.create_namespaced_pod(namespace, _pod("after-restart", 100))
    try:
        pod = running(core, namespace, "after-restart")
    except AssertionError as err:
        assert node.plugin is not None
        raise AssertionError(f"{err}\n--- plugin:\n{node.plugin.tail(40)}") from err
    assert pod.spec.node_name == NODE
