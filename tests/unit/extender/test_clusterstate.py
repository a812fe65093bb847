"""ClusterState from Kubernetes JSON: inventories from node annotations, holdings from verified assignments.

Cases: a bound pod with a signed assignment holds its GPUs; a forged (unsigned, re-signed, edited) assignment
never claims the GPU it names and is counted once, while the bound pod itself is charged unplaced on its node
(tests/security/test_ledger_rebuild.py has the attacks); an assignment naming another node is ignored; an
unbound pod's annotation claims nothing; a finished or deleted pod gives its GPUs back; the plugin's "allocated" status
or a running pod settles the holding; a relist drops pods that are gone but keeps binds in progress; a
malformed inventory is a node without GPUs; expiry drops stuck reservations after the grace.
"""

import json

import pytest

from extender.clusterstate import ClusterState
from extender.core.ledger import NodeLedger, PodKey
from extender.core.load import GpuLoad
from extender.metrics import ExtenderMetrics
from tests.builders.extender import assignment, bound_pod
from tests.builders.vcuda import uuid
from tests.fakes.extender import (
    NAMES,
    FakeClock,
    gpu_node,
    holding_of,
    make_deps,
    node_obj,
    pod_obj,
)
from tests.signing_keys import OTHER_SIGNER
from vcuda.annotations import PodStatus, encode_status
from vcuda.model import ContainerAssignment, GpuShare, NodeName, Phase

UNPLACED_N1 = {uuid("n1", i): GpuLoad(30, 4096) for i in range(8)}
"""A (30 cores, 4096 MiB) pod whose GPU is not known, charged on every GPU of n1."""


def node(state: ClusterState, name: str) -> NodeLedger:
    ledger = state.ledger(name)
    assert ledger is not None
    return ledger


def state_with_nodes() -> tuple[ClusterState, ExtenderMetrics]:
    deps, _ = make_deps([gpu_node("n1"), gpu_node("n2")])
    return deps.state, deps.metrics


def forged_count(metrics) -> float:
    return metrics.registry.get_sample_value("kube_vgpu_extender_forged_assignments_total") or 0.0


def test_a_bound_pod_with_a_signed_assignment_holds_its_gpus():
    state, _ = state_with_nodes()
    state.apply_pod(bound_pod(assignment()))
    assert node(state, "n1").load == {uuid("n1", 0): GpuLoad(30, 4096)}


def _edited() -> str:
    doc = json.loads(assignment())
    doc["containers"][0]["gpus"][0]["memoryMiB"] = 81920
    return json.dumps(doc)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(assignment(signer=OTHER_SIGNER), id="signed with another key"),
        pytest.param(_edited(), id="memory edited after signing"),
        pytest.param(
            json.dumps({k: v for k, v in json.loads(assignment()).items() if k != "sig"}), id="no signature"
        ),
        pytest.param("not json", id="not JSON"),
    ],
)
def test_a_forged_assignment_never_claims_the_gpu_it_names_and_is_counted_once(text):
    state, metrics = state_with_nodes()
    state.apply_pod(bound_pod(text))
    state.apply_pod(bound_pod(text))
    assert node(state, "n1").load == UNPLACED_N1  # the pod is charged everywhere, GPU 0 not singled out
    assert forged_count(metrics) == 1


def test_an_assignment_naming_another_node_is_ignored():
    state, metrics = state_with_nodes()
    state.apply_pod(bound_pod(assignment(node="n1"), node="n2"))
    assert node(state, "n1").load == {}
    assert node(state, "n2").load == {uuid("n2", i): GpuLoad(30, 4096) for i in range(8)}
    assert forged_count(metrics) == 1


def test_an_unbound_pods_annotation_claims_nothing():
    state, _ = state_with_nodes()
    state.apply_pod(bound_pod(assignment(), node=""))
    assert node(state, "n1").load == {}


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_pod_gives_its_gpus_back(phase):
    state, _ = state_with_nodes()
    state.apply_pod(bound_pod(assignment()))
    state.apply_pod(bound_pod(assignment(), phase=phase))
    assert node(state, "n1").load == {}


def test_a_deleted_pod_gives_its_gpus_back():
    state, _ = state_with_nodes()
    pod = bound_pod(assignment())
    state.apply_pod(pod)
    state.remove_pod(pod)
    assert node(state, "n1").load == {}


@pytest.mark.parametrize(
    ("extra", "phase", "settled"),
    [
        pytest.param({}, "Pending", False, id="pending, no status -> in flight"),
        pytest.param(
            {NAMES.status: encode_status(PodStatus(Phase.ALLOCATED))}, "Pending", True, id="allocated"
        ),
        pytest.param({NAMES.status: encode_status(PodStatus(Phase.FAILED))}, "Pending", True, id="failed"),
        pytest.param({}, "Running", True, id="running"),
        pytest.param({NAMES.status: "garbage"}, "Pending", False, id="malformed status -> still in flight"),
    ],
)
def test_the_plugins_confirmation_settles_a_holding(extra, phase, settled):
    state, _ = state_with_nodes()
    pod = pod_obj(
        "p",
        (30, 4096),
        uid="u1",
        node="n1",
        phase=phase,
        annotations={NAMES.assignment: assignment(), **extra},
    )
    state.apply_pod(pod)
    assert holding_of(state, "u1").settled is settled
    assert state.in_flight_count() == (0 if settled else 1)


def test_a_relist_drops_pods_that_are_gone_but_keeps_binds_in_progress():
    state, _ = state_with_nodes()
    state.apply_pod(bound_pod(assignment()))
    state.reserve(
        PodKey("u2"), NodeName("n1"), (ContainerAssignment("c0", (GpuShare(uuid("n1", 1), 10, 10),), 10),)
    )
    state.replace_pods([])
    assert state.holding(PodKey("u1")) is None
    assert node(state, "n1").load == {uuid("n1", 1): GpuLoad(10, 10)}


def test_a_malformed_inventory_is_a_node_without_gpus():
    deps, _ = make_deps([{"metadata": {"name": "bad", "annotations": {NAMES.inventory: '{"v": 1}'}}}])
    assert node(deps.state, "bad").inventory is None


def test_a_node_without_inventory_and_a_removed_node():
    deps, _ = make_deps([node_obj("plain"), gpu_node("n1")])
    assert node(deps.state, "plain").inventory is None
    deps.state.replace_nodes([gpu_node("n1")])
    assert deps.state.ledger("plain") is None


def test_a_reservation_never_bound_expires_after_the_grace():
    clock = FakeClock()
    deps, _ = make_deps([gpu_node("n1")], clock=clock, grace_s=30)
    state = deps.state
    state.reserve(
        PodKey("u9"), NodeName("n1"), (ContainerAssignment("c0", (GpuShare(uuid("n1", 0), 10, 10),), 10),)
    )
    assert state.expire().dropped == 0
    clock.now += 31
    assert state.expire().dropped == 1
    assert node(state, "n1").load == {}
    assert (
        deps.metrics.registry.get_sample_value(
            "kube_vgpu_extender_reservations_expired_total", {"outcome": "dropped"}
        )
        == 1
    )
