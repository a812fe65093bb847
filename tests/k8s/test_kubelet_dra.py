"""The REAL kubelet's DRA manager and plugin watcher driving kube-vgpu's DRA driver (``--front-end=dra``).

Cases: the kubelet's plugin watcher registers the driver (``GetInfo``, ``NotifyRegistrationStatus``), the node
advertises no ``vcuda-core`` and lists its GPUs under ``other`` (mode ``dra``); the real kube-scheduler
allocates a 30 % / 4 GiB share of a GPU from the ResourceSlice the plugin published (consumable capacity, the
chart's DeviceClass), the kubelet calls ``NodePrepareResources`` (v1) and the pod
runs with the share's limits in its shim config and a CDI spec; deleting the pod makes the kubelet call
``NodeUnprepareResources``, which removes the spec and the state directory; after a kubelet restart (its
claim cache comes back unprepared) a second pod sharing a prepared claim makes it prepare the claim again,
the driver answers the recorded devices, and the claim is unprepared only when its last pod goes.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin.core.dra import device_name, driver_name
from plugin.core.gpu import Gpu
from tests.k8s.cluster import NAMES, SECOND_SCHEDULER, K8sCluster
from tests.k8s.kubelet import KubeletNode
from tests.k8s.processes import wait_for
from tests.k8s.test_kubelet import kubelet_node, running
from vcuda.annotations import decode_inventory
from vcuda.model import GpuMode, GpuUuid
from vcuda.shimfile import decode_config

NODE = "k8s-kubelet-dra"
DRIVER = driver_name(NAMES.domain)
CLASS = f"vgpu.{NAMES.domain}"
GIB = 1 << 30


class DraKubeletNode(KubeletNode):
    """The real-kubelet node with the plugin in DRA mode; ready once the kubelet registered the driver."""

    def __init__(self, cluster: K8sCluster, name: str, hardware: str) -> None:
        super().__init__(cluster, name, hardware)
        self.plugin_args = {
            "--front-end": "dra",
            "--dra-registry-dir": str(self.kubelet_dir / "plugins_registry"),
            "--dra-plugins-dir": str(self.kubelet_dir / "plugins"),
        }

    def wait_ready(self) -> None:
        core = self.cluster.client("CoreV1Api")

        def ready() -> bool:
            for process in self.processes:
                process.check_alive()
            assert self.plugin is not None
            node = core.read_node(self.name)
            published = NAMES.inventory in (node.metadata.annotations or {})
            return published and "the kubelet registered DRA driver" in self.plugin.tail(10_000)

        self._wait(ready, f"node {self.name}: DRA driver registered with the kubelet")

    def _registrations(self) -> int:
        assert self.plugin is not None
        return self.plugin.tail(10_000).count("the kubelet registered DRA driver")


@pytest.fixture(scope="module")
def node(k8s: K8sCluster) -> Iterator[KubeletNode]:
    yield from kubelet_node(k8s, NODE, DraKubeletNode)


def _gpus(core: Any) -> list[str]:
    node = core.read_node(NODE)
    inventory = decode_inventory(node.metadata.annotations[NAMES.inventory])
    assert inventory.gpus == ()
    assert {g.mode for g in inventory.other} == {GpuMode.DRA}
    return [g.uuid for g in inventory.other]


def _publish(k8s: K8sCluster, uuids: list[str]) -> None:
    """The plugin's own ResourceSlice of this node (``plugin/slicepublisher.py``: written with the node-bound
    token through the chart's RBAC and its own-slices ValidatingAdmissionPolicy, ``dra.enabled`` in the
    session's chart); the chart's DeviceClass ``vgpu.<domain>`` selects its devices."""
    resource = k8s.client("ResourceV1Api")
    wanted = {device_name(Gpu(GpuUuid(u), 0, 0, "", 0, "")) for u in uuids}

    def published() -> bool:
        answer = resource.list_resource_slice(field_selector=f"spec.nodeName={NODE}", _preload_content=False)
        items = json.loads(answer.data)["items"]
        return {d["name"] for s in items for d in s["spec"].get("devices", [])} == wanted

    wait_for(published, timeout_s=60, what=f"the plugin's ResourceSlice of {NODE}")


def test_the_kubelet_registers_the_driver_and_no_device_plugin(node: KubeletNode, core: Any) -> None:
    assert NAMES.core not in (core.read_node(NODE).status.allocatable or {})
    assert len(_gpus(core)) == 8


def test_a_claim_of_a_share_is_prepared_by_the_real_kubelet_and_unprepared_when_the_pod_goes(
    k8s: K8sCluster, node: KubeletNode, core: Any, namespace: str
) -> None:
    _publish(k8s, _gpus(core))
    resource = k8s.client("ResourceV1Api")
    request = {
        "name": "gpu",
        "exactly": {"deviceClassName": CLASS, "capacity": {"requests": {"memory": "4Gi", "cores": "30"}}},
    }
    resource.create_namespaced_resource_claim(
        namespace, {"metadata": {"name": "share"}, "spec": {"devices": {"requests": [request]}}}
    )
    container = {"name": "c0", "image": "cuda", "resources": {"claims": [{"name": "gpu"}]}}
    pod = {"metadata": {"name": "dra"},
           "spec": {"schedulerName": SECOND_SCHEDULER, "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "resourceClaims": [{"name": "gpu", "resourceClaimName": "share"}], "containers": [container]}}  # fmt: skip
    core.create_namespaced_pod(namespace, pod)
    try:
        running(core, namespace, "dra")
    except AssertionError as err:
        assert node.plugin is not None
        raise AssertionError(f"{err}\n--- plugin:\n{node.plugin.tail(40)}") from err

    claim = resource.read_namespaced_resource_claim("share", namespace)
    (result,) = claim.status.allocation.devices.results
    assert result.driver == DRIVER
    assert result.consumed_capacity == {"memory": "4Gi", "cores": "30"}
    specs = sorted((node.root / "cdi").glob("*.json"))
    (spec_file,) = specs
    spec = json.loads(spec_file.read_text())
    config = next(
        Path(m["hostPath"])
        for m in spec["containerEdits"]["mounts"]
        if m["containerPath"].endswith("vcuda.config")
    )
    (limit,) = decode_config(config.read_bytes()).gpus
    assert (limit.memory_limit_bytes, limit.core_limit) == (4 * GIB, 30)

    core.delete_namespaced_pod("dra", namespace, grace_period_seconds=0)
    wait_for(
        lambda: not list((node.root / "cdi").glob("*.json")),
        timeout_s=60,
        what="the kubelet to unprepare the claim",
    )
    assert not config.parent.exists()


def _pod(name: str, claim: str) -> dict[str, Any]:
    container = {"name": "c0", "image": "cuda", "resources": {"claims": [{"name": "gpu"}]}}
    return {"metadata": {"name": name},
            "spec": {"schedulerName": SECOND_SCHEDULER, "nodeSelector": {"kubernetes.io/hostname": NODE},
                     "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}], "containers": [container]}}  # fmt: skip


def test_after_a_kubelet_restart_a_shared_claim_is_prepared_again_with_the_same_answer(
    k8s: K8sCluster, node: KubeletNode, core: Any, namespace: str
) -> None:
    resource = k8s.client("ResourceV1Api")
    request = {
        "name": "gpu",
        "exactly": {"deviceClassName": CLASS, "capacity": {"requests": {"memory": "2Gi", "cores": "20"}}},
    }
    resource.create_namespaced_resource_claim(
        namespace, {"metadata": {"name": "shared"}, "spec": {"devices": {"requests": [request]}}}
    )
    core.create_namespaced_pod(namespace, _pod("first", "shared"))
    running(core, namespace, "first")
    node.restart_kubelet()
    core.create_namespaced_pod(namespace, _pod("second", "shared"))
    running(core, namespace, "second")
    assert node.plugin is not None
    log = node.plugin.tail(10_000)
    assert log.count(f"prepared claim {namespace}/shared:") == 1
    assert f"claim {namespace}/shared is prepared already" in log  # the restarted kubelet asked again

    core.delete_namespaced_pod("first", namespace, grace_period_seconds=0)
    wait_for(lambda: not core.list_namespaced_pod(namespace, field_selector="metadata.name=first").items,
             timeout_s=30, what="the first pod gone")  # fmt: skip
    assert len(list((node.root / "cdi").glob("*.json"))) == 1  # the second pod still uses the claim
    core.delete_namespaced_pod("second", namespace, grace_period_seconds=0)
    wait_for(lambda: not list((node.root / "cdi").glob("*.json")), timeout_s=60, what="the claim unprepared")


def test_the_plugins_token_writes_only_its_own_nodes_slices(k8s: K8sCluster, node: KubeletNode) -> None:
    """The chart's own-slices ValidatingAdmissionPolicy, enforced by the real API server on the plugin's
    node-bound token: a slice of another node is refused, one of its own node is admitted (dry run)."""
    from kubernetes import config
    from kubernetes.client.exceptions import ApiException

    assert node.plugin is not None
    api = config.new_client_from_config(config_file=node.plugin.env["KUBECONFIG"])  # type: ignore[no-untyped-call]
    resource = k8s.client("ResourceV1Api", api)

    def body(target: str) -> dict[str, Any]:
        pool = {"name": target, "generation": 1, "resourceSliceCount": 1}
        return {
            "metadata": {"name": f"probe-{target}"},
            "spec": {"driver": DRIVER, "nodeName": target, "pool": pool},
        }

    with pytest.raises(ApiException) as refused:
        resource.create_resource_slice(body("k8s-h100"), dry_run="All")
    assert refused.value.status == 403
    assert "only write the resource slices of its own node" in str(refused.value.body)
    resource.create_resource_slice(body(NODE), dry_run="All")
    api.close()
