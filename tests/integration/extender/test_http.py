"""The extender over real loopback HTTP (uvicorn) with FakeCluster, in the exact Go shapes (docs/extender.md, "Wire").

Cases: filter in NodeNames mode (golden request; a GPU pod) and in full-Nodes mode (nodes carry the inventory,
the answer carries the passing node objects; empty lists stay in the mode); prioritize answers a bare array
of integer scores 0..10 that agree with the filter; bind answers ``{"Error": ""}`` and creates the binding;
preempt answers MetaVictims; a malformed body is a 400 with a message; healthz, readyz and metrics answer.
"""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from extender.app import create_app, create_metrics_app
from tests.fakes.extender import NAMES, gpu_node, ledger_of, make_deps, pod_obj
from tests.fixtures.extender_server import serving

GOLDEN = Path(__file__).parents[2] / "contract" / "golden" / "extender"
PREFIX = "/scheduler"


@pytest.fixture
async def extender():
    deps, cluster = make_deps([gpu_node("n1"), gpu_node("n2", memory_mib=16384)])
    async with (
        serving(create_app(deps)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        yield http, deps, cluster


def args(pod, names=None, nodes=None) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": nodes, "NodeNames": names}


async def test_filter_answers_the_golden_node_names_request(extender):
    http, _, _ = extender
    body = (GOLDEN / "extender_args_node_names.json").read_bytes()
    answer = await http.post(f"{PREFIX}/filter", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    assert answer.json() == {
        "Nodes": None,
        "NodeNames": ["n1", "n2"],
        "FailedNodes": None,
        "FailedAndUnresolvableNodes": None,
        "Error": "",
    }


async def test_filter_in_node_names_mode_explains_each_failed_node(extender):
    http, _, _ = extender
    answer = (
        await http.post(f"{PREFIX}/filter", json=args(pod_obj("p", (30, 20000)), ["n1", "n2", "n3"]))
    ).json()
    assert answer["NodeNames"] == ["n1"]
    assert answer["Nodes"] is None
    assert answer["FailedAndUnresolvableNodes"]["n2"] == "no GPU has 20000 MiB, the largest has 16384"
    assert "n3" in answer["FailedAndUnresolvableNodes"]


async def test_an_empty_answer_stays_in_node_names_mode(extender):
    http, _, _ = extender
    answer = (await http.post("/filter", json=args(pod_obj("p", (150, 1)), ["n1"]))).json()
    assert answer["NodeNames"] == []
    assert (
        "vcuda-core 150 is invalid, use 1..100 or a multiple of 100"
        in answer["FailedAndUnresolvableNodes"]["n1"]
    )


async def test_filter_in_full_nodes_mode_returns_the_passing_node_objects(extender):
    http, _, _ = extender
    nodes: dict[str, Any] = {
        "metadata": {"resourceVersion": "9"},
        "items": [gpu_node("n1"), gpu_node("n3", memory_mib=8192)],
    }
    answer = (await http.post(f"{PREFIX}/filter", json=args(pod_obj("p", (30, 10000)), nodes=nodes))).json()
    assert answer["NodeNames"] is None
    assert answer["Nodes"]["items"] == [nodes["items"][0]]
    assert answer["Nodes"]["metadata"] == {"resourceVersion": "9"}
    assert "n3" in answer["FailedAndUnresolvableNodes"]


async def test_the_golden_full_nodes_request_is_judged_on_the_extenders_own_inventory(extender):
    http, deps, _ = extender
    golden = (GOLDEN / "extender_args_nodes.json").read_bytes()
    answer = (await http.post(f"{PREFIX}/filter", content=golden)).json()
    assert answer["Nodes"]["items"] == json.loads(golden)["Nodes"]["items"]  # no inventory in them: still fit
    assert answer["NodeNames"] is None
    assert answer["FailedAndUnresolvableNodes"] is None
    assert ledger_of(deps.state, "n1").inventory is not None


async def test_prioritize_answers_integer_scores_that_agree_with_the_filter(extender):
    http, deps, _ = extender
    pod = pod_obj("p", (30, 8000))
    filtered = (await http.post(f"{PREFIX}/filter", json=args(pod, ["n1", "n2"]))).json()
    raw = (await http.post(f"{PREFIX}/prioritize", json=args(pod, ["n1", "n2"]))).text
    scores = json.loads(raw)
    assert [s["Host"] for s in scores] == ["n1", "n2"]
    assert all(type(s["Score"]) is int and 0 <= s["Score"] <= 10 for s in scores)
    assert '"Score":1.0' not in raw
    memo = deps.scheduler.filter(pod, filtered["NodeNames"]).scores
    assert {s["Host"]: s["Score"] for s in scores} == memo


async def test_bind_creates_the_binding_and_answers_no_error(extender):
    http, _, cluster = extender
    pod = pod_obj("p", (30, 4096), uid="u1")
    cluster.add(pod)
    body = {"PodName": "p", "PodNamespace": "default", "PodUID": "u1", "Node": "n1"}
    answer = await http.post(f"{PREFIX}/bind", json=body)
    assert answer.status_code == 200
    assert answer.text == '{"Error":""}'
    assert cluster.bindings == [("default", "p", "u1", "n1")]
    assert NAMES.assignment in pod["metadata"]["annotations"]


async def test_bind_failure_is_an_error_string_not_an_http_error(extender):
    http, _, cluster = extender
    cluster.add(pod_obj("p", (30, 4096), uid="u1"))
    cluster.fail_bind.add("p")
    answer = await http.post(
        f"{PREFIX}/bind", json={"PodName": "p", "PodNamespace": "default", "PodUID": "u1", "Node": "n1"}
    )
    assert answer.status_code == 200
    assert "failed" in answer.json()["Error"]


async def test_preempt_answers_meta_victims(extender):
    http, _, _ = extender
    body = (GOLDEN / "preemption_args_meta.json").read_bytes()
    answer = (await http.post(f"{PREFIX}/preempt", content=body)).json()
    assert answer == {"NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "u1"}], "NumPDBViolations": 0}}}


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        pytest.param("filter", b"{not json", id="filter: not JSON"),
        pytest.param("filter", b'{"NodeNames": ["n1"]}', id="filter: no Pod"),
        pytest.param("prioritize", b"[]", id="prioritize: an array"),
        pytest.param("bind", b'{"PodName": 3}', id="bind: wrong types"),
        pytest.param("preempt", b"", id="preempt: empty body"),
    ],
)
async def test_a_malformed_body_is_a_400_with_a_message(extender, verb, body):
    http, _, _ = extender
    answer = await http.post(f"{PREFIX}/{verb}", content=body)
    assert answer.status_code == 400
    assert answer.json()["Error"].startswith("malformed")


async def test_health_readiness_and_metrics_on_the_metrics_listener(extender):
    http, deps, _ = extender
    await http.post(f"{PREFIX}/filter", json=args(pod_obj("p", (30, 90000)), ["n1"]))
    async with (
        serving(create_metrics_app(deps)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as metrics,
    ):
        await _check_health_and_metrics(metrics, deps)


async def _check_health_and_metrics(http: httpx.AsyncClient, deps: Any) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    text = (await http.get("/metrics")).text
    assert 'kube_vgpu_extender_request_duration_seconds_count{verb="filter"} 1.0' in text
    assert 'kube_vgpu_extender_rejections_total{reason="too-large",verb="filter"} 1.0' in text
    assert "kube_vgpu_extender_gpu_nodes 2.0" in text  # aggregates only (per-GPU: the node exporters)
    deps.state.synced.clear()
    assert (await http.get("/readyz")).status_code == 503
