"""Attack: the opt-in translation of ``nvidia.com/gpu: N`` to ``vcuda-core: N*100``, through the webhook's real
HTTP entry point (``/mutate``, AdmissionReview v1 in and out, served by uvicorn).

Threats, a tenant who writes any pod it likes:
- turning translation on where the namespace is not labelled for it, with the pod's own labels or annotations
  (the label must be read from the Namespace, through the API);
- quantities that break the arithmetic or the scheduler: huge, negative, fractional, exponent bombs, wrong JSON
  types, limits and requests that differ;
- mixing ``nvidia.com/gpu`` and ``vcuda-core`` in one container (which would the kubelet honour?);
- GPUs hidden in init containers or ephemeral containers;
- a namespace the API server cannot answer for (denied with a reason, never translated by guess).
Each answer is a 200 (allowed with a patch, allowed unchanged, or denied with a reason), never a 500; the patch
is applied as the API server would (RFC 6902, ``jsonpatch``) and the result must pass the validating webhook.
"""

import asyncio
import base64
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.api import AdmissionRequest
from extender.app import create_webhook_app
from extender.webhook import TRANSLATION_REASONS, mutate, validate
from tests.fakes.extender import NAMES, FakeNamespaces, make_deps
from tests.fixtures.extender_server import serving
from vcuda.request import REASONS, parse_pod_request

GPU = "nvidia.com/gpu"
LABEL = NAMES.translation
SCHEDULER = "kube-vgpu-scheduler"
Obj = dict[str, Any]


def stock_pod(*gpus: object, namespace: str = "ml", init: object = None, extra: Obj | None = None) -> Obj:
    """A pod as a stock chart writes it: ``nvidia.com/gpu`` limits, one app container per value."""
    containers = [
        {"name": f"c{i}", "image": "vllm", "resources": {"limits": {GPU: n, "cpu": "2", **(extra or {})}}}
        for i, n in enumerate(gpus)
    ]
    spec: Obj = {"containers": containers}
    if init is not None:
        spec["initContainers"] = [{"name": "warmup", "image": "vllm", "resources": {"limits": {GPU: init}}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": spec,
    }


def review(pod: Obj, namespace: str | None = None) -> Obj:
    ns = namespace if namespace is not None else pod["metadata"].get("namespace", "")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "rev-1", "operation": "CREATE", "namespace": ns, "object": pod},
    }


class Webhook:
    def __init__(self, http: httpx.AsyncClient, namespaces: FakeNamespaces) -> None:
        self.http, self.namespaces = http, namespaces

    async def mutate(self, pod: Obj, namespace: str | None = None) -> tuple[Obj, Obj]:
        """The webhook's answer and the pod as the API server stores it (the patch applied)."""
        answer = await self.http.post("/mutate", json=review(pod, namespace))
        assert answer.status_code == 200, answer.text
        response: Obj = answer.json()["response"]
        patched = copy.deepcopy(pod)
        if "patch" in response:
            assert response["patchType"] == "JSONPatch"
            patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        return response, patched

    async def validate(self, pod: Obj) -> Obj:
        answer = await self.http.post("/validate", json=review(pod))
        assert answer.status_code == 200, answer.text
        response: Obj = answer.json()["response"]
        return response


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    namespaces = FakeNamespaces({"ml": {LABEL: "enabled"}, "plain": {}, "off": {LABEL: "disabled"}})
    deps, _ = make_deps(scheduler_name=SCHEDULER, namespaces=namespaces)
    async with (
        serving(create_webhook_app(deps)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        yield Webhook(http, namespaces)


def limits(pod: Obj, field: str = "containers", i: int = 0) -> Obj:
    found: Obj = pod["spec"][field][i]["resources"]["limits"]
    return found


@pytest.mark.parametrize(
    ("gpus", "cores"), [(1, "100"), ("2", "200"), ("8", "800"), ("1e1", "1000"), (16, "1600")]
)
async def test_a_stock_gpu_pod_in_a_labelled_namespace_asks_for_whole_gpus_of_vcuda_core(
    webhook, gpus, cores
):
    response, pod = await webhook.mutate(stock_pod(gpus))
    assert response["allowed"]
    assert limits(pod) == {NAMES.core: cores, "cpu": "2"}
    assert pod["spec"]["schedulerName"] == SCHEDULER
    request = parse_pod_request(pod, NAMES)
    assert [(c.cores, c.memory_mib, c.exclusive) for c in request.containers] == [(int(cores), 0, True)]
    assert (await webhook.validate(pod))["allowed"]
    assert webhook.namespaces.reads == ["ml"]


async def test_requests_are_translated_with_the_limits(webhook):
    pod = stock_pod(1)
    pod["spec"]["containers"][0]["resources"]["requests"] = {GPU: "1", "memory": "1Gi"}
    _, patched = await webhook.mutate(pod)
    assert patched["spec"]["containers"][0]["resources"]["requests"] == {NAMES.core: "100", "memory": "1Gi"}


@pytest.mark.parametrize(
    ("namespace", "annotations", "labels"),
    [
        pytest.param(
            "plain", {LABEL: "enabled"}, {LABEL: "enabled"}, id="unlabelled-namespace-pod-says-enabled"
        ),
        pytest.param("off", {}, {}, id="namespace-label-not-enabled"),
        pytest.param("plain", {"kube-vgpu/translate": "true"}, {}, id="unlabelled-namespace-plain-pod"),
    ],
)
async def test_a_pod_cannot_turn_translation_on_with_its_own_labels_or_annotations(
    webhook, namespace, annotations, labels
):
    pod = stock_pod(1, namespace=namespace)
    pod["metadata"] |= {"annotations": annotations, "labels": labels}
    response, patched = await webhook.mutate(pod)
    assert response["allowed"]
    assert "patch" not in response
    assert limits(patched) == {GPU: 1, "cpu": "2"}
    assert webhook.namespaces.reads == [namespace]


async def test_the_request_namespace_decides_not_the_one_the_object_names(webhook):
    """The API server refuses an object whose namespace differs from the request's; the webhook reads the
    request's only, so an object claiming a labelled namespace is not translated."""
    response, patched = await webhook.mutate(stock_pod(1, namespace="ml"), namespace="plain")
    assert "patch" not in response
    assert limits(patched)[GPU] == 1
    assert webhook.namespaces.reads == ["plain"]


async def test_a_pod_without_nvidia_gpu_costs_no_namespace_read(webhook):
    pod = stock_pod(1)
    del pod["spec"]["containers"][0]["resources"]["limits"][GPU]
    response, _ = await webhook.mutate(pod)
    assert response["allowed"]
    assert "patch" not in response
    assert webhook.namespaces.reads == []


@pytest.mark.parametrize(
    ("gpus", "reason", "words"),
    [
        pytest.param(17, "translation-too-large", "more than 16 GPUs", id="17"),
        pytest.param("9223372036854775807", "translation-too-large", "more than 16 GPUs", id="int64-max"),
        pytest.param(10**30, "translation-invalid", "too large", id="past-int64"),
        pytest.param("1e400", "translation-invalid", "too large", id="exponent"),
        pytest.param("1e99999999", "translation-invalid", "too large", id="exponent-bomb"),
        pytest.param(-1, "translation-invalid", "negative", id="negative"),
        pytest.param("-2", "translation-invalid", "negative", id="negative-string"),
        pytest.param("0.5", "translation-invalid", "not a whole number", id="half"),
        pytest.param(1.5, "translation-invalid", "not a whole number", id="float"),
        pytest.param("500m", "translation-invalid", "not a whole number", id="milli"),
        pytest.param("one", "translation-invalid", "not a Kubernetes quantity", id="word"),
        pytest.param("1" * 5000, "translation-invalid", "longer than", id="long"),
        pytest.param(None, "translation-invalid", "a quantity is a string or an integer", id="null"),
        pytest.param(True, "translation-invalid", "a quantity is a string or an integer", id="bool"),
        pytest.param([1], "translation-invalid", "a quantity is a string or an integer", id="list"),
        pytest.param({"a": 1}, "translation-invalid", "a quantity is a string or an integer", id="map"),
    ],
)
async def test_quantities_that_are_not_whole_gpus_are_denied_with_the_reason(webhook, gpus, reason, words):
    response, _ = await webhook.mutate(stock_pod(gpus))
    assert not response["allowed"]
    assert response["status"]["reason"] == reason
    assert words in response["status"]["message"]
    assert len(response["status"]["message"]) < 300  # the quantity is cut, never echoed whole


async def test_gpu_zero_asks_for_nothing_and_is_removed(webhook):
    response, pod = await webhook.mutate(stock_pod(0, 1))
    assert response["allowed"]
    assert limits(pod) == {"cpu": "2"}
    assert limits(pod, i=1) == {NAMES.core: "100", "cpu": "2"}


async def test_limits_and_requests_that_differ_are_denied(webhook):
    pod = stock_pod(2)
    pod["spec"]["containers"][0]["resources"]["requests"] = {GPU: "1"}
    response, _ = await webhook.mutate(pod)
    assert response["status"]["reason"] == "translation-invalid"
    assert "limits and requests differ" in response["status"]["message"]


@pytest.mark.parametrize("extra", [{NAMES.core: "30"}, {NAMES.memory: "4096"}, {NAMES.core: "100"}])
async def test_one_container_asking_for_nvidia_gpu_and_vcuda_resources_is_denied(webhook, extra):
    response, _ = await webhook.mutate(stock_pod(1, extra=extra))
    assert not response["allowed"]
    assert response["status"]["reason"] == "translation-mixed"


async def test_containers_of_one_pod_may_ask_one_for_nvidia_gpu_and_another_for_a_share(webhook):
    pod = stock_pod(1)
    pod["spec"]["containers"].append(
        {"name": "share", "image": "x", "resources": {"limits": {NAMES.core: "30", NAMES.memory: "4096"}}}
    )
    response, patched = await webhook.mutate(pod)
    assert response["allowed"]
    cores = [(c.name, c.cores) for c in parse_pod_request(patched, NAMES).containers]
    assert cores == [("c0", 100), ("share", 30)]


async def test_init_containers_are_translated_too(webhook):
    response, pod = await webhook.mutate(stock_pod(1, init="2"))
    assert response["allowed"]
    assert limits(pod, "initContainers") == {NAMES.core: "200"}
    kinds = [(c.kind.value, c.cores) for c in parse_pod_request(pod, NAMES).containers]
    assert kinds == [("init", 200), ("app", 100)]


async def test_a_gpu_in_an_ephemeral_container_is_denied(webhook):
    pod = stock_pod(1)
    pod["spec"]["ephemeralContainers"] = [
        {"name": "debug", "image": "x", "resources": {"limits": {GPU: "1"}}}
    ]
    response, _ = await webhook.mutate(pod)
    assert not response["allowed"]
    assert response["status"]["reason"] == "translation-ephemeral"


async def test_too_many_translated_containers_are_denied_with_the_schedulers_reason(webhook):
    response, _ = await webhook.mutate(stock_pod(*[1] * 65))
    assert not response["allowed"]
    assert response["status"]["reason"] == "too-many-containers"


async def test_a_namespace_the_api_server_cannot_answer_for_is_denied_and_never_guessed(webhook):
    webhook.namespaces.down = True
    response, _ = await webhook.mutate(stock_pod(1))
    assert not response["allowed"]
    assert "cannot read namespace ml's labels" in response["status"]["message"]
    assert response["status"]["code"] == 503


async def test_a_pod_that_names_its_own_scheduler_keeps_it_and_is_still_translated(webhook):
    pod = stock_pod(1)
    pod["spec"]["schedulerName"] = "volcano"
    _, patched = await webhook.mutate(pod)
    assert patched["spec"]["schedulerName"] == "volcano"
    assert limits(patched)[NAMES.core] == "100"


async def test_without_the_setting_nothing_is_translated_and_no_namespace_is_read():
    deps, _ = make_deps(scheduler_name=SCHEDULER)
    async with serving(create_webhook_app(deps)) as port, httpx.AsyncClient() as http:
        answer = await http.post(f"http://127.0.0.1:{port}/mutate", json=review(stock_pod(1)))
    assert answer.json()["response"] == {"uid": "rev-1", "allowed": True}


_QUANTITIES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.from_regex(r"[+-]?[0-9]{0,25}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,6}|[kMGTPE]i?|m)?", fullmatch=True),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(gpus=_QUANTITIES, requests=st.booleans())
def test_any_quantity_is_translated_to_whole_gpus_or_denied_with_a_known_reason(gpus, requests):
    """The decision itself (what ``/mutate`` answers, without the HTTP round trip), for any quantity."""
    pod = stock_pod(gpus)
    if requests:
        pod["spec"]["containers"][0]["resources"]["requests"] = {GPU: gpus}
    request = AdmissionRequest(uid="u", operation="CREATE", namespace="ml", object=pod)
    response = mutate(request, NAMES, SCHEDULER, translate_gpus=True)
    if not response.allowed:
        assert response.status is not None
        assert response.status.reason in (*TRANSLATION_REASONS, *REASONS)
        return
    assert response.patch is not None
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response.patch)))
    assert GPU not in limits(patched)
    cores = [c.cores for c in parse_pod_request(patched, NAMES).containers]
    assert cores == [] or (len(cores) == 1 and cores[0] % 100 == 0 and 100 <= cores[0] <= 1600)
    assert validate(AdmissionRequest(uid="u", object=patched), NAMES).allowed


async def test_a_flood_of_reviews_holds_at_most_two_namespace_reads_and_the_rest_are_denied_as_retryable(
    webhook,
):
    """The webhook port is open to every pod: reviews naming ``nvidia.com/gpu`` must not take every worker
    thread with namespace reads (the binds need them) while the API server is slow."""
    webhook.namespaces.gate = asyncio.Event()
    flood = [asyncio.create_task(webhook.mutate(stock_pod(1))) for _ in range(12)]
    done: set[asyncio.Task[Any]] = set()
    while len(done) < 10:  # two reads hang on the API server; the other ten wait their turn, then give up
        finished, _ = await asyncio.wait(set(flood) - done, return_when=asyncio.FIRST_COMPLETED)
        done |= finished
    assert webhook.namespaces.most_in_flight == 2
    webhook.namespaces.gate.set()
    answers = await asyncio.gather(*flood)
    busy = [r for r, _ in answers if not r["allowed"]]
    assert len(busy) == 10
    assert all("too many namespace reads in progress" in r["status"]["message"] for r in busy)
    assert [limits(p) for r, p in answers if r["allowed"]] == [{NAMES.core: "100", "cpu": "2"}] * 2


@pytest.mark.parametrize("nvidia", [GPU, "nvidia.com/gpu.shared"])
@pytest.mark.parametrize("part", ["limits", "requests"])
async def test_any_namespace_refuses_a_container_asking_for_shares_and_nvidias_gpus_at_once(
    webhook, nvidia, part
):
    """One GPU, one mode, per container: the validating webhook (every namespace) refuses the mix that the
    translation would refuse, whether it names NVIDIA's whole GPUs or renamed replicas."""
    pod = stock_pod(1, namespace="plain", extra={NAMES.core: "30", NAMES.memory: "4096"})
    resources = pod["spec"]["containers"][0]["resources"]
    resources[part] = resources.pop("limits")
    resources[part].pop(GPU)
    resources[part][nvidia] = "1"
    response = await webhook.validate(pod)
    assert not response["allowed"]
    assert response["status"]["reason"] == "mixed-modes"
    assert f"asks for {NAMES.core} and {nvidia} at once" in response["status"]["message"]


async def test_shares_and_nvidia_gpus_in_different_containers_of_one_pod_are_allowed(webhook):
    pod = stock_pod(1, namespace="plain")
    pod["spec"]["containers"].append(
        {"name": "share", "image": "x", "resources": {"limits": {NAMES.core: "30", NAMES.memory: "4096"}}}
    )
    assert (await webhook.validate(pod))["allowed"]


async def test_no_wrong_type_anywhere_in_a_stock_pod_gets_a_500_from_the_translating_webhook(webhook):
    """Every position of a stock pod (with an init container, requests and a vcuda container beside it)
    replaced in turn by each JSON type it is not, sent to ``/mutate`` in a translating namespace: a 200 with a
    decision, or a 400, never a 500."""
    from tests.security.test_attack_wrong_types import WRONG, paths, replaced

    pod = stock_pod(2, init="1")
    pod["spec"]["containers"][0]["resources"]["requests"] = {GPU: "2"}
    pod["spec"]["containers"].append(
        {"name": "share", "image": "x", "resources": {"limits": {NAMES.core: "30", NAMES.memory: "4096"}}}
    )
    failures = []
    for at in paths(pod):
        for value in WRONG:
            body = review(replaced(pod, at, value), namespace="ml")
            answer = await webhook.http.post("/mutate", json=body)
            if answer.status_code not in (200, 400):
                failures.append(f"{'/'.join(map(str, at))}={json.dumps(value)}: {answer.status_code}")
    assert failures == []


async def test_in_default_scheduler_mode_the_pod_is_translated_and_keeps_its_scheduler():
    """``scheduler.mode=extender``: no schedulerName to set; the default scheduler calls the extender for the
    translated pod because it now names ``vcuda-core`` (a managed resource)."""
    namespaces = FakeNamespaces({"ml": {LABEL: "enabled"}})
    deps, _ = make_deps(scheduler_name=None, namespaces=namespaces)
    async with serving(create_webhook_app(deps)) as port, httpx.AsyncClient() as http:
        answer = await http.post(f"http://127.0.0.1:{port}/mutate", json=review(stock_pod(1)))
    patch = json.loads(base64.b64decode(answer.json()["response"]["patch"]))
    assert patch == [
        {
            "op": "replace",
            "path": "/spec/containers/0/resources/limits",
            "value": {"cpu": "2", NAMES.core: "100"},
        }
    ]
