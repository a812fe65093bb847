"""The REAL kubelet reusing an init container's devices for the app container (issue 17).

Kubernetes' fake CRI never ends a container; ours (``tests/k8s/controlplane/fake-cri``) ends one named
``init-exits-*`` with exit code 0 half a second after it starts, so the pod's init container completes. A pod
with a 50-core init container and a 50-core app container then goes through the webhook, kube-scheduler, the
extender and the kubelet's device manager to Running. The kubelet's device checkpoint
(``kubelet_internal_checkpoint``, per-container device IDs) must show the app container got the SAME 50
devices as the init container, so the node holds 50 cores for the pod, not 100.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.cluster import NAMES, K8sCluster
from tests.k8s.kubelet import KubeletNode
from tests.k8s.test_kubelet import kubelet_node, running
from vcuda.annotations import decode_assignment_unverified

NODE = "k8s-kubelet-init"


@pytest.fixture(scope="module")
def node(k8s: K8sCluster) -> Iterator[KubeletNode]:
    yield from kubelet_node(k8s, NODE)


def _container(name: str, cores: int) -> dict[str, Any]:
    memory = {NAMES.memory: "4096"} if cores < 100 else {}  # a share of a GPU needs memory (the webhook)
    limits = {NAMES.core: str(cores), **memory}
    return {"name": name, "image": "cuda", "resources": {"limits": limits}}


def _pod(name: str, *containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    spec = {"nodeSelector": {"kubernetes.io/hostname": NODE}, "initContainers": list(init),
            "containers": list(containers)}  # fmt: skip
    return {"metadata": {"name": name}, "spec": spec}


def _devices(checkpoint: Path, pod_uid: str) -> dict[str, set[str]]:
    """The kubelet's checkpointed ``vcuda-core`` device IDs of each container of the pod."""
    entries = json.loads(checkpoint.read_text())["Data"]["PodDeviceEntries"] or []
    devices: dict[str, set[str]] = {}
    for entry in entries:
        if entry["PodUID"] == pod_uid and entry["ResourceName"] == NAMES.core:
            ids = devices.setdefault(entry["ContainerName"], set())
            for numa_ids in entry["DeviceIDs"].values():
                ids.update(numa_ids)
    return devices


def test_the_app_container_reuses_the_init_containers_devices(
    node: KubeletNode, core: Any, namespace: str
) -> None:
    init_container = _container("init-exits-0", 50)  # the name our fake CRI ends with exit code 0
    core.create_namespaced_pod(namespace, _pod("init-reuse", _container("app", 50), init=(init_container,)))
    pod = running(core, namespace, "init-reuse")
    assert pod.spec.node_name == NODE
    (init,) = pod.status.init_container_statuses
    assert init.state.terminated is not None
    assert init.state.terminated.exit_code == 0
    devices = _devices(node.kubelet_dir / "device-plugins" / "kubelet_internal_checkpoint", pod.metadata.uid)
    assert set(devices) == {"init-exits-0", "app"}, devices
    assert len(devices["init-exits-0"]) == 50
    assert devices["app"] == devices["init-exits-0"]  # reused: the pod holds 50 slices, not 100
    assignment = decode_assignment_unverified(pod.metadata.annotations[NAMES.assignment])
    shared_gpu = {share.uuid for c in assignment.containers for share in c.shares}
    assert len(shared_gpu) == 1, assignment  # the extender put both on one GPU, so reused the same slices

    # The other 7 GPUs whole, then 50 cores that only fit beside the pod on its GPU: the extender and the
    # kubelet's admission (allocatable 800) both count that pod as 50, not 100.
    core.create_namespaced_pod(namespace, _pod("seven-whole", _container("c0", 700)))
    running(core, namespace, "seven-whole")
    core.create_namespaced_pod(namespace, _pod("other-half", _container("c0", 50)))
    other = running(core, namespace, "other-half")
    other_gpus = (
        decode_assignment_unverified(other.metadata.annotations[NAMES.assignment]).containers[0].shares
    )
    assert {share.uuid for share in other_gpus} == shared_gpu
