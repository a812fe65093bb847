"""The extender's wire shapes against Go-marshalled golden samples (docs/extender.md, "Wire").

Golden files live in ``tests/contract/golden/extender/``: five samples of ``k8s.io/kube-scheduler/extender/v1`` types as Go's ``encoding/json`` writes them, byte for byte, plus a
full-``Nodes`` request, a preemption request and a bind answer. Cases: each request decodes into the wire
models; the empty filter result, the priority list, the preemption result and the bind answer encode to the
exact golden bytes (PascalCase keys, ``null`` for nil, integer scores); the app's own encoders (used on the
hot path instead of pydantic) give the same bytes as the models; keys decode as Go would (case-insensitive)
only where Go reads them, i.e. in answers.
"""

import json
from pathlib import Path

import pytest

from extender.api import (
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderBindingResult,
    ExtenderFilterResult,
    ExtenderPreemptionArgs,
    ExtenderPreemptionResult,
    HostPriority,
    HostPriorityList,
    MetaPod,
    MetaVictims,
    encode_host_priorities,
)
from extender.app import _filter_answer
from extender.scheduling import FilterOutcome

GOLDEN = Path(__file__).parent / "golden" / "extender"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text().strip()


def test_the_node_names_request_decodes():
    args = ExtenderArgs.model_validate_json(golden("extender_args_node_names.json"))
    assert args.node_names == ["n1", "n2"]
    assert args.nodes is None
    assert args.pod == {"metadata": {"name": "p"}}


def test_the_full_nodes_request_decodes_and_keeps_the_node_objects():
    args = ExtenderArgs.model_validate_json(golden("extender_args_nodes.json"))
    assert args.node_names is None
    assert args.nodes is not None
    assert [i["metadata"]["name"] for i in args.nodes.items] == ["n1", "n2"]
    assert args.nodes.metadata == {"resourceVersion": "42"}


def test_the_empty_filter_result_is_gos_byte_for_byte():
    assert ExtenderFilterResult().model_dump_json(by_alias=True) == golden("filter_result_empty.json")


def test_the_priority_list_is_a_bare_array_with_integer_scores():
    model = HostPriorityList([HostPriority(host="n1", score=10)]).model_dump_json(by_alias=True)
    assert model == golden("host_priority_list.json")
    assert encode_host_priorities({"n1": 10}) == golden("host_priority_list.json")


@pytest.mark.parametrize("hosts", [{}, {"n1": 0, "n-2.example": 10}, {'odd"name\\é': 5}])
def test_the_fast_priority_encoder_gives_the_models_bytes(hosts):
    model = HostPriorityList([HostPriority(host=h, score=s) for h, s in hosts.items()])
    assert json.loads(encode_host_priorities(hosts)) == json.loads(model.model_dump_json(by_alias=True))
    assert json.loads(encode_host_priorities(hosts)) == [{"Host": h, "Score": s} for h, s in hosts.items()]


def test_the_binding_args_decode_and_reencode():
    args = ExtenderBindingArgs.model_validate_json(golden("binding_args.json"))
    assert (args.pod_name, args.pod_namespace, args.pod_uid, args.node) == ("p", "default", "uid-1", "n1")
    assert args.model_dump_json(by_alias=True) == golden("binding_args.json")
    assert ExtenderBindingResult().model_dump_json(by_alias=True) == golden("binding_result_ok.json")


def test_the_preemption_shapes():
    args = ExtenderPreemptionArgs.model_validate_json(golden("preemption_args_meta.json"))
    assert args.node_name_to_meta_victims is not None
    assert (args.node_name_to_meta_victims["n1"].pods or [])[0].uid == "u1"
    result = ExtenderPreemptionResult(node_name_to_meta_victims={"n1": MetaVictims(pods=[MetaPod(uid="u1")])})
    assert result.model_dump_json(by_alias=True) == golden("preemption_result.json")


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(FilterOutcome(), id="empty"),
        pytest.param(
            FilterOutcome(passing=["n1"], failed={"n2": "full"}, unresolvable={"n3": "no GPU"}), id="mixed"
        ),
    ],
)
def test_the_apps_filter_encoder_matches_the_model_in_node_names_mode(outcome):
    args = ExtenderArgs.model_validate_json(golden("extender_args_node_names.json"))
    fast = _filter_answer(args, outcome, full_mode=False)
    model = ExtenderFilterResult(
        node_names=outcome.passing,
        failed_nodes=outcome.failed or None,
        failed_and_unresolvable_nodes=outcome.unresolvable or None,
    )
    assert fast == model.model_dump_json(by_alias=True)
    assert json.loads(fast)["NodeNames"] == outcome.passing  # [] when empty: the configured mode, never null


def test_the_apps_filter_encoder_answers_full_nodes_with_the_passing_node_objects():
    args = ExtenderArgs.model_validate_json(golden("extender_args_nodes.json"))
    assert args.nodes is not None
    answer = json.loads(_filter_answer(args, FilterOutcome(passing=["n2"]), full_mode=True))
    assert answer["NodeNames"] is None
    assert answer["Nodes"]["items"] == [args.nodes.items[1]]
    empty = json.loads(_filter_answer(args, FilterOutcome(), full_mode=True))
    assert empty["Nodes"]["items"] == []
    assert list(answer) == ["Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"]
