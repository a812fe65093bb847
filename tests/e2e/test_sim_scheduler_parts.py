"""The SIMULATED scheduler's own parts, without a cluster: Go JSON decoding, the shipped configuration, the
built-in fit, and the queue's backoff.

Cases: Go decodes keys case-insensitively, rejects ``5.0`` for an ``int64`` and a string where a map belongs;
``null`` lists stay ``None`` (no node passes); the shipped config is read with its weight, timeout and mode;
``NodeResourcesFit`` counts init containers as upstream; an error waits out its backoff while an unschedulable
pod waits for an event.
"""

import asyncio
import json
from typing import Any

import pytest

from tests.sim.fit import extended_requests, fit_node, summarise_failures
from tests.sim.queue import QueueSettings, SchedulingQueue
from tests.sim.schedconfig import load_scheduler_config
from tests.sim.wire import WireError, decode_filter_result, decode_host_priority_list, extender_args


@pytest.mark.parametrize(
    ("reply", "names", "failed"),
    [
        pytest.param(
            b'{"NodeNames":["n1"],"FailedNodes":{"n2":"x"},"Error":""}', ["n1"], {"n2": "x"}, id="exact keys"
        ),
        pytest.param(
            b'{"nodenames":["n1"],"failedNodes":null,"error":""}', ["n1"], {}, id="keys in any case"
        ),
        pytest.param(
            b'{"Nodes":null,"NodeNames":null,"Error":""}', None, {}, id="both null -> no node passes"
        ),
        pytest.param(b'{"NodeNames":[],"Unknown":1}', [], {}, id="unknown keys ignored"),
    ],
)
def test_filter_replies_decode_as_go_decodes_them(reply, names, failed):
    result = decode_filter_result(reply)
    assert (result.node_names, result.failed) == (names, failed)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b'[{"Host":"n1","Score":5.0}]', id="Score 5.0 is not an int64"),
        pytest.param(b'[{"Host":"n1","Score":"5"}]', id="Score as a string"),
        pytest.param(b'{"Host":"n1","Score":5}', id="an object instead of the list"),
    ],
)
def test_priority_replies_go_would_refuse_are_errors(reply):
    with pytest.raises(WireError):
        decode_host_priority_list(reply)


def test_filter_arguments_use_go_field_names_and_null_for_the_unused_form():
    doc = json.loads(
        extender_args({"metadata": {"name": "p"}}, [{"metadata": {"name": "n1"}}], cache_capable=True)
    )
    assert doc == {"Pod": {"metadata": {"name": "p"}}, "Nodes": None, "NodeNames": ["n1"]}


def test_the_shipped_scheduler_configuration_is_what_the_simulation_runs():
    config = load_scheduler_config(url_prefix="http://127.0.0.1:1/scheduler")
    (extender,) = config.extenders
    assert config.scheduler_name == "kube-vgpu-scheduler"
    assert (extender.weight, extender.node_cache_capable, extender.http_timeout_s) == (1, True, 30.0)
    assert extender.url("filter") == "http://127.0.0.1:1/scheduler/filter"
    assert not config.ignored_resources


def _node(cores: int, *, ready: bool = True) -> dict[str, Any]:
    status = "True" if ready else "False"
    return {"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": status}],
                                                  "allocatable": {"nvidia.com/vcuda-core": str(cores)}}}  # fmt: skip


def _pod(*cores: int, init: int = 0) -> dict[str, Any]:
    containers = [
        {"name": f"c{i}", "resources": {"limits": {"nvidia.com/vcuda-core": c}}} for i, c in enumerate(cores)
    ]
    spec = {"containers": containers}
    if init:
        spec["initContainers"] = [{"name": "i", "resources": {"limits": {"nvidia.com/vcuda-core": init}}}]
    return {"metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize(
    ("pod", "node", "assigned", "reason"),
    [
        pytest.param(_pod(30), _node(100), [_pod(70)], None, id="exactly full fits"),
        pytest.param(
            _pod(30), _node(100), [_pod(80)], "Insufficient nvidia.com/vcuda-core", id="one over does not"
        ),
        pytest.param(_pod(10, init=90), _node(100), [], None, id="init container counted as max, not sum"),
        pytest.param(
            _pod(10),
            _node(100, ready=False),
            [],
            "node(s) had untolerated taint {node.kubernetes.io/not-ready: }",
            id="not ready",
        ),
    ],
)
def test_the_built_in_fit_counts_extended_resources_as_upstream(pod, node, assigned, reason):
    assert fit_node(pod, node, assigned, frozenset()) == reason


def test_init_containers_count_as_their_largest_request():
    assert extended_requests(_pod(10, 20, init=50)) == {"nvidia.com/vcuda-core": 50}


def test_failures_are_summarised_with_counts_in_upstream_words():
    message = summarise_failures(3, {"a": "Insufficient x", "b": "no GPU", "c": "no GPU"})
    assert message == "0/3 nodes are available: 1 Insufficient x, 2 no GPU."


async def test_an_error_waits_its_backoff_and_an_unschedulable_pod_waits_for_an_event():
    now = [0.0]
    settings = QueueSettings(initial_backoff_s=1, max_backoff_s=4, unschedulable_flush_s=60)
    queue = SchedulingQueue(settings, lambda: now[0])
    queue.add("a")
    queue.add("b")
    assert [await queue.pop(), await queue.pop()] == ["a", "b"]
    queue.requeue_error("a")
    queue.requeue_unschedulable("b")
    assert queue.pending() == {"a": "backoff", "b": "unschedulable"}
    now[0] = 1.0
    assert await asyncio.wait_for(queue.pop(), 1) == "a"
    assert queue.pending()["b"] == "unschedulable"
    queue.move_all()
    assert await asyncio.wait_for(queue.pop(), 1) == "b"


async def test_an_event_during_an_attempt_sends_the_pod_to_backoff_not_to_wait():
    queue = SchedulingQueue(QueueSettings(), lambda: 0.0)
    queue.add("c")
    await queue.pop()
    queue.move_all()
    queue.requeue_unschedulable("c")
    assert queue.pending() == {"c": "backoff"}
