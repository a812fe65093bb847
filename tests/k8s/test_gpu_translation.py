"""Opt-in translation of ``nvidia.com/gpu`` through the real admission chain and the real kube-scheduler.

The chart's objects as rendered (translation on by default: the ``translate.vcuda.kube-vgpu.io`` webhook, its
namespace selector and match conditions, the extender's ``get`` on namespaces) on a real API server:
- a stock ``nvidia.com/gpu: 1`` pod in a namespace labelled ``nvidia.com/gpu-translation=enabled`` is stored as
  ``vcuda-core: 100``, sent to kube-vgpu's scheduler, and bound by the real kube-scheduler through the extender
  to one whole GPU (its signed assignment);
- the same pod in an unlabelled namespace is stored as written, even when it labels and annotates itself for
  translation (the API server never calls the translating webhook there, and the extender would read the
  Namespace anyway);
- a fractional GPU count is refused at create with the webhook's reason; in any namespace, a container asking
  for vcuda shares and `nvidia.com/gpu` at once is refused by the validating webhook (one GPU, one mode).
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.k8s.cluster import NAMES, SECOND_SCHEDULER, K8sCluster
from tests.k8s.processes import wait_for
from vcuda.annotations import decode_assignment_unverified as decode_assignment

LABELLED = "translated"
GPU = "nvidia.com/gpu"


def stock_pod(name: str, gpus: str, **meta: Any) -> dict[str, Any]:
    limits = {GPU: gpus, "cpu": "1"}
    container = {"name": "vllm", "image": "vllm/vllm-openai", "resources": {"limits": limits}}
    return {"metadata": {"name": name, **meta}, "spec": {"containers": [container]}}


@pytest.fixture(scope="module")
def labelled(k8s: K8sCluster) -> Iterator[str]:
    k8s.add_namespace(LABELLED)
    core = k8s.client("CoreV1Api")
    core.patch_namespace(LABELLED, {"metadata": {"labels": {NAMES.translation: "enabled"}}})
    yield LABELLED
    core.delete_collection_namespaced_pod(LABELLED, grace_period_seconds=0)
    wait_for(lambda: not core.list_namespaced_pod(LABELLED).items, timeout_s=30, what="translated pods gone")


def test_a_stock_gpu_pod_in_a_labelled_namespace_is_translated_and_bound_to_a_whole_gpu(
    core: Any, labelled: str
) -> None:
    created = core.create_namespaced_pod(labelled, stock_pod("stock", "1"))
    assert created.spec.containers[0].resources.limits == {NAMES.core: "100", "cpu": "1"}
    assert created.spec.scheduler_name == SECOND_SCHEDULER

    def bound() -> Any:
        pod = core.read_namespaced_pod("stock", labelled)
        return pod if pod.spec.node_name else None

    pod = wait_for(bound, timeout_s=60, what="the translated pod to be bound")
    assignment = decode_assignment(pod.metadata.annotations[NAMES.assignment])
    assert assignment.node == pod.spec.node_name
    shares = [s for c in assignment.containers for s in c.shares]
    assert [s.cores for s in shares] == [100]
    assert shares[0].memory_mib in (81920, 24576)  # the whole memory of an H100 or an A10


def test_a_pod_in_an_unlabelled_namespace_cannot_translate_itself(core: Any, namespace: str) -> None:
    pod = stock_pod(
        "self-labelled",
        "1",
        labels={NAMES.translation: "enabled"},
        annotations={NAMES.translation: "enabled"},
    )
    created = core.create_namespaced_pod(namespace, pod)
    assert created.spec.containers[0].resources.limits == {GPU: "1", "cpu": "1"}
    assert created.spec.scheduler_name == "default-scheduler"


def test_a_fractional_gpu_is_refused_at_create_with_the_reason(core: Any, labelled: str) -> None:
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(labelled, stock_pod("half", "500m"))
    message = json.loads(str(caught.value.body))["message"]
    assert 'admission webhook "translate.vcuda.kube-vgpu.io" denied the request' in message
    assert "nvidia.com/gpu '500m' is not a GPU count (not a whole number)" in message


def test_a_container_asking_for_shares_and_nvidia_gpus_is_refused_in_any_namespace(
    core: Any, namespace: str
) -> None:
    pod = stock_pod("mixed", "1")
    pod["spec"]["containers"][0]["resources"]["limits"] |= {NAMES.core: "30", NAMES.memory: "1024"}
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(namespace, pod)
    message = json.loads(str(caught.value.body))["message"]
    assert 'admission webhook "validate.vcuda.kube-vgpu.io" denied the request' in message
    assert "one GPU, one mode" in message
