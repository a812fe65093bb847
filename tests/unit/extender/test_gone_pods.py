"""A bound pod deleted before its kubelet ended it keeps its GPUs for a bounded hold (``--gone-pod-hold-seconds``).

The real kubelet's device manager frees a pod's devices only in ``UpdateAllocatedDevices``, which does nothing
until the kubelet has seen every pod source since it started (``sourcesReady``): right after a kubelet restart
it still counts a force-deleted pod's devices from its checkpoint, and a pod given them fails admission
(``UnexpectedAdmissionError``; tests/k8s/test_kubelet.py shows it on the real kubelet). A graceful deletion
passes through the kubelet, which reports ``Succeeded``/``Failed`` before the object goes: given back at once.

Only a pod its kubelet admitted is held (its copy shows ``status.startTime`` or container statuses: a kubelet
that never saw the pod counts none of its devices), and at most ``gone_hold_max`` per namespace: a tenant looping
create, bind, force-delete holds no more GPUs than that many pods' beyond its quota.

Cases: which deletions hold (table); a held pod is settled, stays charged through sweeps until the hold passes,
then is released; a relist that no longer lists a bound pod holds it the same way; a hold of 0 is the old
behaviour; the scheduler places a whole-GPU pod beside a held share, never on it.
"""

from typing import Any

import pytest

from extender.clusterstate import ClusterState
from extender.core.ledger import PodKey
from extender.core.load import GpuLoad
from tests.builders.extender import assignment, bound_pod
from tests.builders.vcuda import uuid
from tests.fakes.extender import NAMES, FakeClock, gpu_node, ledger_of, make_deps, pod_obj

HOLD_S = 30.0
HELD = {uuid("n1", 0): GpuLoad(30, 4096)}


def holding_state(clock: FakeClock, hold_s: float = HOLD_S) -> ClusterState:
    deps, _ = make_deps([gpu_node("n1")], clock=clock, gone_hold_s=hold_s)
    return deps.state


STARTED = {"startTime": "2026-12-03T18:00:00Z"}


def with_phase(pod: dict[str, Any], phase: str, **status: Any) -> dict[str, Any]:
    """The pod's copy as its kubelet left it: admitted (``startTime`` set) unless ``status`` says otherwise."""
    return {**pod, "status": {"phase": phase, **STARTED, **status}}


def running(pod: dict[str, Any]) -> dict[str, Any]:
    return with_phase(pod, "Running")


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
    pod = running(bound_pod(assignment()))
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
    pod = running(bound_pod(assignment()))
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
    state.apply_pod(running(bound_pod(assignment())))
    state.replace_pods([])  # deleted while the watch was down: how it ended is unknown
    assert ledger_of(state, "n1").load == HELD
    clock.now += HOLD_S
    state.expire()
    assert ledger_of(state, "n1").load == {}


def test_a_hold_of_zero_gives_a_force_deleted_pods_gpus_back_at_once() -> None:
    state = holding_state(FakeClock(), hold_s=0.0)
    pod = running(bound_pod(assignment()))
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


NOT_STARTED = {"phase": "Pending"}


@pytest.mark.parametrize(
    ("seen", "last", "held"),
    [
        pytest.param(
            NOT_STARTED, NOT_STARTED, False, id="never admitted: no startTime, no container statuses"
        ),
        pytest.param({"phase": "Pending", **STARTED}, NOT_STARTED, True, id="admitted: startTime"),
        pytest.param(
            {"phase": "Pending", "containerStatuses": [{"name": "c0", "ready": False}]},
            NOT_STARTED,
            True,
            id="admitted: container statuses",
        ),
        pytest.param(
            NOT_STARTED, {"phase": "Pending", **STARTED}, True, id="admitted as the last copy shows"
        ),
    ],
)
def test_only_a_pod_its_kubelet_admitted_is_held(
    seen: dict[str, Any], last: dict[str, Any], held: bool
) -> None:
    state = holding_state(FakeClock())
    pod = bound_pod(assignment())
    state.apply_pod({**pod, "status": seen})
    state.remove_pod({**pod, "status": last})
    assert ledger_of(state, "n1").load == (HELD if held else {})


def test_a_relist_does_not_hold_a_bound_pod_its_kubelet_never_admitted() -> None:
    state = holding_state(FakeClock())
    state.apply_pod(bound_pod(assignment()))  # bound, phase Pending, no startTime
    state.replace_pods([])
    assert ledger_of(state, "n1").load == {}


async def test_a_create_bind_force_delete_loop_holds_at_most_four_pods_of_its_namespace() -> None:
    deps, cluster = make_deps([gpu_node("n1", gpus=8)], clock=FakeClock(), gone_hold_s=HOLD_S)
    scheduler, state = deps.scheduler, deps.state

    async def bind_start_force_delete(name: str, namespace: str) -> None:
        pod = pod_obj(name, (100, 0), namespace=namespace)
        cluster.add(pod)
        scheduler.filter(pod, ["n1"])
        assert (await scheduler.bind(namespace, name, pod["metadata"]["uid"], "n1")).error == ""
        started = running(cluster.pods[(namespace, name)])
        state.apply_pod(started)  # the kubelet admitted it
        state.remove_pod(started)  # kubectl delete --force --grace-period=0

    for i in range(7):
        await bind_start_force_delete(f"loop-{i}", "tenant-a")
    assert ledger_of(state, "n1").gone == 4  # the first four held; the rest given back at once
    assert len(ledger_of(state, "n1").load) == 4  # 4 whole GPUs of 8: the node still takes others' pods

    await bind_start_force_delete("other", "tenant-b")  # another namespace's pod is held as before
    assert ledger_of(state, "n1").gone == 5
