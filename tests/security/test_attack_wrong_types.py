"""Attack: a wrong JSON type at any one place of a pod, through every verb that reads a pod.

Threat: any in-cluster client (the webhook port is open to every pod) and a tenant (whatever shape reaches the
extender). The hypothesis fuzzer (``test_extender_fuzz_http.py``) draws ``metadata`` always as an object, so it
never tried ``"metadata": []``: the webhook answered that with an HTTP 500 (``validate`` read annotations with
an unchecked ``.get``). Here every position of a GPU pod (metadata, annotations, spec, the container lists, a
container, its name, resources, limits, requests, each quantity, the scheduler name) is replaced in turn by each
JSON type it is not, and sent to ``/validate`` (CREATE and UPDATE), ``/mutate``, ``filter`` and
``prioritize``: every answer is a 200 or a 400 with a reason, never a 500.
"""

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx

from extender.app import create_app, create_webhook_app
from tests.fakes.extender import NAMES, gpu_node, make_deps, pod_obj
from tests.fixtures.extender_server import serving

WRONG: tuple[Any, ...] = (None, True, 1.5, "x", [1], {"a": 1})


def template() -> dict[str, Any]:
    pod = pod_obj("p", (30, 4096), annotations={NAMES.core_limit: "50", NAMES.include_models: "a10"})
    pod["spec"]["initContainers"] = copy.deepcopy(pod["spec"]["containers"])
    pod["spec"]["containers"][0]["resources"]["requests"] = {NAMES.core: "30", NAMES.memory: "4096"}
    pod["spec"]["schedulerName"] = "kube-vgpu-scheduler"
    return pod


def paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from paths(child, (*at, key))


def replaced(pod: dict[str, Any], at: tuple[Any, ...], value: Any) -> Any:
    if not at:
        return value
    out = copy.deepcopy(pod)
    parent = out
    for key in at[:-1]:
        parent = parent[key]
    parent[at[-1]] = value
    return out


def hostile_pods() -> Iterator[tuple[str, Any]]:
    pod = template()
    for at in paths(pod):
        for value in WRONG:
            yield f"{'/'.join(map(str, at))}={json.dumps(value)}", replaced(pod, at, value)


async def test_no_wrong_type_anywhere_in_a_pod_gets_a_500():
    deps, _ = make_deps([gpu_node("n1")], scheduler_name="kube-vgpu-scheduler")
    failures = []
    async with (
        serving(create_webhook_app(deps)) as hook,
        serving(create_app(deps)) as verbs,
        httpx.AsyncClient(timeout=30) as http,
    ):
        for where, pod in hostile_pods():
            for op, verb in (("CREATE", "validate"), ("UPDATE", "validate"), ("CREATE", "mutate")):
                review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                          "request": {"uid": "u", "operation": op, "object": pod, "oldObject": pod}}  # fmt: skip
                answer = await http.post(f"http://127.0.0.1:{hook}/{verb}", json=review)
                if answer.status_code not in (200, 400):
                    failures.append(f"{verb} {op} {where}: {answer.status_code}")
            for verb in ("filter", "prioritize"):
                answer = await http.post(
                    f"http://127.0.0.1:{verbs}/scheduler/{verb}", json={"Pod": pod, "NodeNames": ["n1"]}
                )
                if answer.status_code not in (200, 400):
                    failures.append(f"{verb} {where}: {answer.status_code}")
    assert failures == []
