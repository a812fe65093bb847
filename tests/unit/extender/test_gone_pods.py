"""A bound pod deleted before its kubelet ended it keeps its GPUs for a bounded hold (``--gone-pod-hold-seconds``).

The real kubelet's device manager frees a pod's devices only in ``UpdateAllocatedDevices``, which does nothing
until the kubelet has seen every pod source since it started (``sourcesReady``): right after a kubelet restart
it still counts a force-deleted pod's devices from its checkpoint, and a pod given them fails admission
(``UnexpectedAdmissionError``; tests/k8s/test_kubelet.py shows it on the real kubelet). A graceful deletion
passes through the kubelet, which reports ``Succeeded``/``Failed`` before the object goes: given back at once.

Cases: which deletions hold (table); a held pod is settled, stays charged through sweeps until the hold passes,
then is released; a relist that no longer lists a bound pod holds it the same way; a hold of 0 is the old
behaviour; the scheduler places a whole-GPU pod beside a held share, never on it.
"""

from typing import Any

import pytest

from extender.core.ledger import PodKey
from extender.core.load import GpuLoad
from extender.state import ClusterState
from tests.builders.vcuda import uuid
from tests.fakes.extender import NAMES, FakeClock, gpu_node, ledger_of, make_deps, pod_obj
from tests.unit.extender.test_state import assignment, bound_pod

HOLD_S = 30.0
HELD = {uuid("n1", 0): GpuLoad(30, 4096)}


def holding_state(clock: FakeClock, hold_s: float = HOLD_S) -> ClusterState:
    deps, _ = make_deps([gpu_node("n1")], clock=clock, gone_hold_s=hold_s)
    return deps.state


def with_phase(pod: dict[str, Any], phase: str) -> dict[str, Any]:
    return {**pod, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("last_phase", "held"),
    [
        pytest.param("Running", True, id="force-deleted while running"),
        pytest.param("Pending", True, id="force-deleted while its containers start"),
        pytest.param("Unknown", True, id="deleted from a lost node"),
        pytest.param("Failed", False, id="ended by its kubelet: Failed"),
        pytest.param("Succeeded", False, id="ended by its kubelet: Succeeded"),
    ],
)
def test_only_a_bound_pod_its_kubelet_did_not_end_keeps_its_gpus(last_phase: str, held: bool) -> None:
    state = holding_state(FakeClock())
    pod = bound_pod(assignment(), phase="Running")
    state.apply_pod(pod)
    state.remove_pod(with_phase(pod, last_phase))
    assert ledger_of(state, "n1").load == (HELD if held else {})


def test_a_deleted_reservation_never_bound_is_given_back_at_once() -> None:
    state = holding_state(FakeClock())
    pod = bound_pod(assignment(), node="")  # not bound: the API server never placed it
    state.apply_pod(pod)
    state.remove_pod(pod)
    assert ledger_of(state, "n1").load == {}


def test_a_held_pod_is_settled_and_charged_until_the_hold_passes() -> None:
    clock = FakeClock()
    state = holding_state(clock)
    pod = bound_pod(assignment(), phase="Running")
    state.apply_pod(pod)
    state.remove_pod(pod)
    held = state.holding(PodKey("u1"))
    assert held is not None
    assert (held.settled, held.gone) == (True, clock.now)
    assert state.in_flight_count() == 0  # it holds back no pod waiting for a confirmation
    state.remove_pod(pod)  # a repeated DELETED (a watch resumed) does not restart the hold
    clock.now += HOLD_S - 1
    state.expire()
    assert ledger_of(state, "n1").load == HELD
    clock.now += 1
    state.expire()
    assert ledger_of(state, "n1").load == {}
    assert state.holding(PodKey("u1")) is None
    assert ledger_of(state, "n1").gone == 0


def test_a_relist_that_no_longer_lists_a_bound_pod_holds_it_too() -> None:
    clock = FakeClock()
    state = holding_state(clock)
    state.apply_pod(bound_pod(assignment(), phase="Running"))
    state.replace_pods([])  # deleted while the watch was down: how it ended is unknown
    assert ledger_of(state, "n1").load == HELD
    clock.now += HOLD_S
    state.expire()
    assert ledger_of(state, "n1").load == {}


def test_a_hold_of_zero_gives_a_force_deleted_pods_gpus_back_at_once() -> None:
    state = holding_state(FakeClock(), hold_s=0.0)
    pod = bound_pod(assignment(), phase="Running")
    state.apply_pod(pod)
    state.remove_pod(pod)
    assert ledger_of(state, "n1").load == {}


async def test_a_whole_gpu_pod_goes_beside_a_force_deleted_pods_share_not_on_it() -> None:
    clock = FakeClock()
    deps, cluster = make_deps([gpu_node("n1", gpus=2)], clock=clock, gone_hold_s=HOLD_S)
    scheduler, state = deps.scheduler, deps.state
    first = pod_obj("first", (30, 4096))
    cluster.add(first)
    scheduler.filter(first, ["n1"])
    assert (await scheduler.bind("default", "first", first["metadata"]["uid"], "n1")).error == ""
    [share] = ledger_of(state, "n1").load
    state.remove_pod(with_phase(first, "Running"))  # --force --grace-period=0, the kubelet restarted next

    whole = pod_obj("whole", (100, 0))
    cluster.add(whole)
    scheduler.filter(whole, ["n1"])
    assert (await scheduler.bind("default", "whole", whole["metadata"]["uid"], "n1")).error == ""
    placed = cluster.pods[("default", "whole")]["metadata"]["annotations"][NAMES.assignment]
    assert share not in placed  # on the other GPU: the kubelet may still count the held slices

    third = pod_obj("third", (100, 0))
    assert scheduler.filter(third, ["n1"]).passing == []  # the held share still counts
    clock.now += HOLD_S
    state.expire()
    assert scheduler.filter(third, ["n1"]).passing == ["n1"]
