"""Attack: a pod with so many GPU containers that placing it recurses past Python's stack.

Threat: a tenant (docs/security.md). Init containers do not add up in kube-scheduler's fit (a pod asks for the
largest of them, plus its sidecars), so a pod with a thousand init containers of ``vcuda-core: 1`` each passes
kube-scheduler's own filters on any GPU node and reaches the extender (about 100 KB of JSON, far under the API
server's limit). The placement of init and sidecar containers recurses once per container, so the filter
raised ``RecursionError``: an HTTP 500 for every such pod, on every verb. Now a pod may ask for at most
:data:`vcuda.request.MAX_GPU_CONTAINERS` GPU containers: the webhook refuses more at creation, and the filter,
prioritize and bind answer with that reason (unresolvable), never with a 500.
"""

from typing import Any

import httpx
import pytest

from extender.app import create_app, create_webhook_app
from tests.fakes.extender import NAMES, gpu_node, make_deps, pod_obj
from tests.fixtures.extender_server import serving
from vcuda.request import MAX_GPU_CONTAINERS


def limits(cores: int, mib: int) -> dict[str, Any]:
    return {"limits": {NAMES.core: str(cores), NAMES.memory: str(mib)}}


def wide_pod(count: int, *, sidecars: bool) -> dict[str, Any]:
    pod = pod_obj("wide", (1, 1), uid="u-wide")
    pod["spec"]["initContainers"] = [
        {
            "name": f"i{i}",
            "resources": limits(1, 1),
            **({"restartPolicy": "Always"} if sidecars and i % 2 else {}),
        }
        for i in range(count)
    ]
    return pod


@pytest.mark.parametrize("sidecars", [False, True], ids=["init", "init-and-sidecars"])
async def test_a_pod_with_a_thousand_gpu_init_containers_gets_a_reason_not_a_500(sidecars):
    deps, cluster = make_deps([gpu_node("n1")], scheduler_name="kube-vgpu-scheduler")
    pod = wide_pod(1000, sidecars=sidecars)
    cluster.add(pod)
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "r", "operation": "CREATE", "object": pod}}  # fmt: skip
    bind = {"PodName": "wide", "PodNamespace": "default", "PodUID": "u-wide", "Node": "n1"}
    async with (
        serving(create_app(deps)) as verbs,
        serving(create_webhook_app(deps)) as hook,
        httpx.AsyncClient(timeout=60) as http,
    ):
        base = f"http://127.0.0.1:{verbs}/scheduler"
        filtered = await http.post(f"{base}/filter", json={"Pod": pod, "NodeNames": ["n1"]})
        scored = await http.post(f"{base}/prioritize", json={"Pod": pod, "NodeNames": ["n1"]})
        bound = await http.post(f"{base}/bind", json=bind)
        admitted = await http.post(f"http://127.0.0.1:{hook}/validate", json=review)
    assert (filtered.status_code, scored.status_code, bound.status_code, admitted.status_code) == (200,) * 4
    assert "GPU containers" in filtered.json()["FailedAndUnresolvableNodes"]["n1"]
    assert scored.json() == [{"Host": "n1", "Score": 0}]
    assert "GPU containers" in bound.json()["Error"]
    assert cluster.bindings == []
    answer = admitted.json()["response"]
    assert answer["allowed"] is False
    assert str(MAX_GPU_CONTAINERS) in answer["status"]["message"]


async def test_a_pod_at_the_limit_is_placed_as_before():
    deps, _ = make_deps([gpu_node("n1")])
    pod = wide_pod(MAX_GPU_CONTAINERS - 1, sidecars=True)
    async with serving(create_app(deps)) as verbs, httpx.AsyncClient(timeout=60) as http:
        filtered = await http.post(
            f"http://127.0.0.1:{verbs}/scheduler/filter", json={"Pod": pod, "NodeNames": ["n1"]}
        )
    assert filtered.json()["NodeNames"] == ["n1"]
