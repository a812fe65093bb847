"""GPU pods through the real admission chain and the real kube-scheduler, calling the real extender.

Cases: a GPU pod that names no scheduler is sent to kube-vgpu's scheduler by the chart's mutating webhook,
then filtered, prioritized and bound by the extender (the Binding's signed assignment lands on the pod);
a pod no GPU can hold gets a
``FailedScheduling`` event with the built-in plugins' and the extender's reasons, as ``kubectl describe`` shows
it; an invalid request and a pod that writes kube-vgpu's own annotation are refused at create by the
validating webhook; whole GPUs are never given twice, across a burst and an extender restart in it.
"""

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.k8s.cluster import NAMES, SECOND_SCHEDULER, K8sCluster
from tests.k8s.processes import wait_for
from vcuda.annotations import decode_assignment_unverified as decode_assignment


def gpu_pod(name: str, cores: int, mib: int = 0, *, scheduler: str | None = None,
            annotations: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    limits = {NAMES.core: str(cores), **({NAMES.memory: str(mib)} if mib else {})}
    spec: dict[str, Any] = {"containers": [{"name": "c0", "image": "cuda", "resources": {"limits": limits}}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    return {"metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}


def bound(core: Any, namespace: str, name: str, timeout_s: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        pod = core.read_namespaced_pod(name, namespace).to_dict()
        return pod if pod["spec"]["node_name"] else None

    return wait_for(probe, timeout_s=timeout_s, what=f"pod {namespace}/{name} to be bound")


def events(core: Any, namespace: str, name: str, reason: str) -> Callable[[], list[Any]]:
    def probe() -> list[Any]:
        found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [e for e in found if e.reason == reason]

    return probe


def test_gpu_pod_is_routed_by_the_webhook_and_bound_through_the_extender(k8s: K8sCluster, core: Any,
                                                                         namespace: str) -> None:  # fmt: skip
    created = core.create_namespaced_pod(namespace, gpu_pod("share", 50, 8192))
    assert created.spec.scheduler_name == SECOND_SCHEDULER
    pod = bound(core, namespace, "share")
    assignment = decode_assignment(pod["metadata"]["annotations"][NAMES.assignment])
    assert assignment.node == pod["spec"]["node_name"]
    scheduled = wait_for(events(core, namespace, "share", "Scheduled"), timeout_s=30, what="Scheduled event")
    assert (
        scheduled[0].reporting_component == SECOND_SCHEDULER
        or scheduled[0].source.component == SECOND_SCHEDULER
    )


def test_unplaceable_pod_shows_both_schedulers_reasons_in_failed_scheduling(
    core: Any, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, gpu_pod("too-big", 50, 90000))
    found = wait_for(
        events(core, namespace, "too-big", "FailedScheduling"), timeout_s=60, what="FailedScheduling"
    )
    message = found[0].message
    assert message.startswith("0/2 nodes are available:"), message
    assert f"1 Insufficient {NAMES.memory}" in message  # NodeResourcesFit, on the 2 x 24 GB node
    assert "1 no GPU has 90000 MiB, the largest has 81920" in message  # the extender, on the H100 node


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        pytest.param(gpu_pod("odd-cores", 150), "vcuda-core 150 is invalid", id="150 cores"),
        pytest.param(gpu_pod("no-memory", 30), "needs nvidia.com/vcuda-memory", id="share without memory"),
        pytest.param(
            gpu_pod("forged", 50, 1024, annotations={NAMES.assignment: json.dumps({"v": 1})}),
            "is written by kube-vgpu only",
            id="forged assignment",
        ),
    ],
)
def test_validating_webhook_refuses_at_create(
    core: Any, namespace: str, pod: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(namespace, pod)
    assert caught.value.status in (400, 403, 422)
    body = json.loads(str(caught.value.body))
    assert 'admission webhook "validate.vcuda.kube-vgpu.io" denied the request' in body["message"]
    assert message in body["message"]


def test_whole_gpus_are_never_given_twice_across_an_extender_restart(k8s: K8sCluster, core: Any,
                                                                     namespace: str) -> None:  # fmt: skip
    """4 GPUs, 5 whole-GPU pods, the extender killed after the second: 4 bound to 4 GPUs, 1 left pending."""
    names = [f"whole-{i}" for i in range(5)]
    for name in names[:2]:
        core.create_namespaced_pod(namespace, gpu_pod(name, 100))
    k8s.restart_extender()
    for name in names[2:]:
        core.create_namespaced_pod(namespace, gpu_pod(name, 100))

    def placed() -> dict[str, str] | None:
        pods = [core.read_namespaced_pod(n, namespace) for n in names]
        done = {
            p.metadata.name: p.metadata.annotations.get(NAMES.assignment) for p in pods if p.spec.node_name
        }
        return done if len(done) >= 4 else None

    done = wait_for(placed, timeout_s=90, what="4 of 5 whole-GPU pods to be bound")
    gpus = [
        share.uuid for text in done.values() for c in decode_assignment(text).containers for share in c.shares
    ]
    assert len(done) == 4
    assert len(set(gpus)) == 4
    pending = next(n for n in names if n not in done)
    wait_for(
        events(core, namespace, pending, "FailedScheduling"), timeout_s=60, what="FailedScheduling of the 5th"
    )
