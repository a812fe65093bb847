"""Scheduler use cases over FakeCluster: filter, prioritize, bind, preempt.

Cases: filter passes nodes that fit and says why the others fail (resolvable vs unresolvable); an invalid
request fails every node unresolvably with the user's sentence; unknown nodes are unresolvable; prioritize
returns the filter's scores from memory; bind creates one Binding that carries the signed assignment; a
failed Binding gives the reservation back and writes nothing; a pod differently assigned but with the same
core count waits while another is in flight; identical pods do not; bind refuses when the node filled up
in between; preemption keeps only nodes where the victims free enough.
"""

from typing import Any

import pytest

from extender.clusterstate import ClusterState
from extender.core.ledger import PodKey
from extender.core.load import GpuLoad
from extender.scheduling import Scheduler
from tests.builders.vcuda import uuid
from tests.fakes.extender import (
    NAMES,
    FakeCluster,
    assignment_of,
    gpu_node,
    holding_of,
    ledger_of,
    make_deps,
    node_obj,
    pod_obj,
)
from vcuda.model import ContainerAssignment, GpuShare, NodeName


def scheduler_with(*nodes: dict[str, Any]) -> tuple[Scheduler, ClusterState, FakeCluster]:
    deps, cluster = make_deps(nodes)
    return deps.scheduler, deps.state, cluster


def test_filter_passes_nodes_that_fit_and_explains_the_others():
    scheduler, _, _ = scheduler_with(gpu_node("big"), gpu_node("small", memory_mib=16384), node_obj("cpu"))
    outcome = scheduler.filter(pod_obj("p", (30, 20000)), ["big", "small", "cpu", "ghost"])
    assert outcome.passing == ["big"]
    assert outcome.failed == {}
    assert outcome.unresolvable["small"] == "no GPU has 20000 MiB, the largest has 16384"
    assert "no kube-vgpu GPU inventory" in outcome.unresolvable["cpu"]
    assert set(outcome.unresolvable) == {"small", "cpu", "ghost"}


async def test_a_full_gpu_is_a_resolvable_failure_with_the_largest_free_memory():
    scheduler, _state, cluster = scheduler_with(gpu_node("n1", gpus=1, memory_mib=32000))
    pod = pod_obj("first", (50, 20000))
    cluster.add(pod)
    scheduler.filter(pod, ["n1"])
    assert (await scheduler.bind("default", "first", pod["metadata"]["uid"], "n1")).error == ""
    outcome = scheduler.filter(pod_obj("second", (30, 20000)), ["n1"])
    assert outcome.failed == {"n1": "no single GPU has 20000 MiB free, the largest has 12000"}


@pytest.mark.parametrize(
    ("containers", "message"),
    [
        pytest.param(
            [(150, 1000)], "vcuda-core 150 is invalid, use 1..100 or a multiple of 100", id="150 cores"
        ),
        pytest.param([(30, 0)], "needs nvidia.com/vcuda-memory in MiB", id="share without memory"),
    ],
)
def test_an_invalid_request_fails_every_node_with_the_users_sentence(containers, message):
    scheduler, _, _ = scheduler_with(gpu_node("n1"), gpu_node("n2"))
    outcome = scheduler.filter(pod_obj("p", *containers), ["n1", "n2"])
    assert outcome.passing == []
    assert set(outcome.unresolvable) == {"n1", "n2"}
    assert message in outcome.unresolvable["n1"]


def test_prioritize_returns_the_filters_scores():
    scheduler, state, _ = scheduler_with(gpu_node("empty"), gpu_node("busy"))
    state.reserve(
        PodKey("x"),
        NodeName("busy"),
        (ContainerAssignment("c", (GpuShare(uuid("busy", 0), 90, 80000),), 90),),
    )
    pod = pod_obj("p", (30, 4096))
    outcome = scheduler.filter(pod, ["empty", "busy", "ghost"])
    scores = scheduler.prioritize(pod, ["empty", "busy", "ghost"])
    assert scores == {"empty": outcome.scores["empty"], "busy": outcome.scores["busy"], "ghost": 0}
    assert all(isinstance(s, int) and 0 <= s <= 10 for s in scores.values())
    assert scores["busy"] > scores["empty"]  # binpack prefers the fuller node


async def test_bind_writes_a_signed_assignment_then_the_binding():
    scheduler, state, cluster = scheduler_with(gpu_node("n1"))
    pod = pod_obj("p", (30, 4096), uid="u1")
    cluster.add(pod)
    scheduler.filter(pod, ["n1"])
    assert (await scheduler.bind("default", "p", "u1", "n1")).error == ""
    assert cluster.bindings == [("default", "p", "u1", "n1")]
    decoded = assignment_of(pod)
    assert decoded.node == "n1"
    assert decoded.containers[0].shares[0].memory_mib == 4096
    assert holding_of(state, "u1").bound


async def test_a_failed_binding_gives_the_reservation_back_and_writes_nothing():
    scheduler, state, cluster = scheduler_with(gpu_node("n1"))
    pod = pod_obj("p", (30, 4096), uid="u1")
    cluster.add(pod)
    cluster.fail_bind.add("p")
    bound = await scheduler.bind("default", "p", "u1", "n1")
    assert "binding default/p to n1 failed" in bound.error
    assert ledger_of(state, "n1").load == {}
    assert NAMES.assignment not in pod["metadata"]["annotations"]


async def test_a_binding_applied_but_unanswered_keeps_its_assignment_and_reservation():
    scheduler, state, cluster = scheduler_with(gpu_node("n1"))
    pod = pod_obj("p", (30, 4096), uid="u1")
    cluster.add(pod)
    cluster.lose_bind_answer.add("p")
    assert (await scheduler.bind("default", "p", "u1", "n1")).error == ""
    assert NAMES.assignment in pod["metadata"]["annotations"]
    assert ledger_of(state, "n1").load != {}
    assert holding_of(state, "u1").bound


async def test_the_assignment_travels_on_the_binding_itself():
    scheduler, _, cluster = scheduler_with(gpu_node("n1"))
    pod = pod_obj("p", (30, 4096), uid="u1")
    cluster.add(pod)
    pod["metadata"]["annotations"]["keep"] = "me"
    assert (await scheduler.bind("default", "p", "u1", "n1")).error == ""
    assert pod["metadata"]["annotations"]["keep"] == "me"
    assert assignment_of(pod).node == "n1"


async def test_a_pod_bound_elsewhere_meanwhile_is_not_mistaken_for_our_binding():
    scheduler, state, cluster = scheduler_with(gpu_node("n1"))
    pod = pod_obj("p", (30, 4096), uid="u1")
    cluster.add(pod)
    pod["spec"]["nodeName"] = "n1"  # bound by someone else, without our assignment
    assert "is already bound to 'n1'" in (await scheduler.bind("default", "p", "u1", "n1")).error
    assert ledger_of(state, "n1").load == {}
    assert cluster.bindings == []


async def test_bind_reads_the_pod_when_filter_never_saw_it_and_refuses_an_unknown_one():
    scheduler, _, cluster = scheduler_with(gpu_node("n1"))
    cluster.add(pod_obj("p", (30, 4096), uid="u1"))
    assert (await scheduler.bind("default", "p", "u1", "n1")).error == ""
    assert "not found" in (await scheduler.bind("default", "nope", "u2", "n1")).error


async def test_a_differently_assigned_pod_with_the_same_core_count_waits_while_one_is_in_flight():
    scheduler, _, cluster = scheduler_with(gpu_node("n1"))
    first, second, twin = pod_obj("a", (30, 4096)), pod_obj("b", (30, 8192)), pod_obj("c", (30, 4096))
    cluster.add(first, second, twin)
    assert (await scheduler.bind("default", "a", first["metadata"]["uid"], "n1")).error == ""
    outcome = scheduler.filter(second, ["n1"])
    assert "waiting: another pod with vcuda-core 30" in outcome.failed["n1"]
    assert "waiting" in (await scheduler.bind("default", "b", second["metadata"]["uid"], "n1")).error
    assert scheduler.filter(twin, ["n1"]).passing == ["n1"]
    assert (await scheduler.bind("default", "c", twin["metadata"]["uid"], "n1")).error == ""


async def test_bind_refuses_when_the_node_filled_up_since_filter():
    scheduler, _, cluster = scheduler_with(gpu_node("n1", gpus=1, memory_mib=10000))
    a, b = pod_obj("a", (50, 6000)), pod_obj("b", (50, 6000))
    cluster.add(a, b)
    assert scheduler.filter(a, ["n1"]).passing == scheduler.filter(b, ["n1"]).passing == ["n1"]
    assert (await scheduler.bind("default", "a", a["metadata"]["uid"], "n1")).error == ""
    assert (
        "no single GPU has 6000 MiB free"
        in (await scheduler.bind("default", "b", b["metadata"]["uid"], "n1")).error
    )


async def test_preemption_keeps_only_nodes_where_the_victims_free_enough():
    scheduler, state, cluster = scheduler_with(
        gpu_node("n1", gpus=1, memory_mib=10000), gpu_node("n2", gpus=1, memory_mib=10000)
    )
    small, big = pod_obj("small", (10, 1000), uid="s"), pod_obj("big", (90, 9000), uid="b")
    cluster.add(small, big)
    assert (await scheduler.bind("default", "small", "s", "n1")).error == ""
    assert (await scheduler.bind("default", "big", "b", "n2")).error == ""
    kept = scheduler.preempt(pod_obj("new", (90, 9000)), {"n1": ["s"], "n2": []})
    assert kept == {"n1": ["s"]}
    assert ledger_of(state, "n2").load == {uuid("n2", 0): GpuLoad(90, 9000)}
