"""SIMULATED cluster: components restarting in the middle of a stream of pods, and a node disappearing.

Cases (each submits a batch, acts once some of it is bound, submits a second batch, then checks that every
pod settles and the invariants hold):

- the plugin is killed and started again: pods whose ``Allocate`` raced the kill may fail admission
  (``UnexpectedAdmissionError``, as with a real kubelet), never run with wrong limits; later pods run;
- the extender is killed and started again: it rebuilds its ledger from the API server; every pod runs;
- the kubelet restarts: it reloads its checkpoint, the plugin registers again; pods caught by the restart may
  fail admission (an ``Allocate`` answered but not yet checkpointed is asked again, see
  ``test_sim_kubelet_crash.py``), never run with wrong limits; later pods run;
- a node disappears (Node deleted, its pods garbage-collected): new pods go to the remaining node only.
"""

from typing import Any

import pytest

from tests.builders.pods import gpu_pod
from tests.sim.cluster import SimCluster
from tests.sim.node import NodeSpec
from tests.sim.scenario import settle_and_check, submit_all, wait_bound

H100_ONLY = {"nvidia.com/vgpu-include-models": "H100"}


def _batch(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        gpu_pod(f"{prefix}-{i:02d}", (10 + 5 * (i % 3), 2048 * (1 + i % 2)), annotations=H100_ONLY)
        for i in range(count)
    ]


async def _restart(cluster: SimCluster, what: str) -> None:
    if what == "plugin":
        await cluster.node("sim-h100").restart_plugin(kill=True)
    elif what == "kubelet":
        await cluster.node("sim-h100").restart_kubelet()
    else:
        await cluster.restart_extender(kill=True)


@pytest.mark.parametrize(
    ("what", "may_fail_admission"),
    [
        pytest.param("plugin", True, id="plugin killed mid-stream -> later pods run, none with wrong limits"),
        pytest.param("extender", False, id="extender killed mid-stream -> every pod runs"),
        pytest.param(
            "kubelet", True, id="kubelet restarted mid-stream -> later pods run, none with wrong limits"
        ),
    ],
)
async def test_a_restart_in_the_middle_of_a_stream_keeps_every_assignment_honoured(
    sim_cluster, what, may_fail_admission
):
    async with sim_cluster() as cluster:
        before = await submit_all(cluster, _batch("before", 16))
        await wait_bound(cluster, before, 4)
        await _restart(cluster, what)
        after = await submit_all(cluster, _batch("after", 16))
        states = await settle_and_check(cluster, before + after, timeout_s=60, settled=("running", "failed"))
        failed = {k: s for k, s in states.items() if s.phase != "running"}
        if may_fail_admission:
            assert all("UnexpectedAdmissionError" in s.message for s in failed.values()), failed
        else:
            assert not failed, failed
        later = await submit_all(cluster, _batch("later", 4))
        states = await settle_and_check(cluster, later, settled=("running", "failed"))
        assert {states[k].phase for k in later} == {"running"}


async def test_pods_of_a_node_that_disappears_are_replaced_on_the_remaining_node(sim_cluster):
    nodes = (NodeSpec("sim-h100-a", "h100x8"), NodeSpec("sim-h100-b", "h100x8"))
    async with sim_cluster(nodes=nodes) as cluster:
        first = await submit_all(cluster, _batch("first", 8))
        states = await settle_and_check(cluster, first, settled=("running", "failed"))
        gone = states[first[0]].node
        orphans = await cluster.remove_node(gone)
        assert orphans
        assert all(states[k].node == gone for k in orphans)
        replacements = [
            gpu_pod(f"again-{k.split('/')[1]}", (20, 4096), annotations=H100_ONLY) for k in orphans
        ]
        keys = await submit_all(cluster, replacements)
        states = await settle_and_check(cluster, keys, settled=("running", "failed"))
        assert {states[k].phase for k in keys} == {"running"}
        assert {states[k].node for k in keys} == set(cluster.nodes)
