"""SIMULATED cluster under load: 100 pods submitted at once, and deleted pods' shares reused.

Cases: a burst of 100 mixed fractional pods on 12 GPUs (more than fits) settles with every pod either running
or reported unschedulable, no GPU over-committed, every shim config equal to its assignment; deleting pods
lets waiting pods take their GPUs.
"""

import random

from tests.builders.pods import gpu_pod
from tests.sim.scenario import settle_and_check, submit_all
from tests.sim.waiting import wait_until


async def test_a_hundred_pods_submitted_at_once_settle_without_over_commit(sim_cluster):
    rng = random.Random(8)
    pods = [gpu_pod(f"burst-{i:03d}", (rng.choice((10, 20, 25, 40)), rng.choice((1024, 2048, 4096, 8192))))
            for i in range(100)]  # fmt: skip
    async with sim_cluster() as cluster:
        keys = await submit_all(cluster, pods)
        states = await settle_and_check(cluster, keys, timeout_s=90)
        phases = [states[k].phase for k in keys]
        assert set(phases) <= {"running", "unschedulable"}, {
            k: states[k] for k in keys if states[k].phase not in {"running", "unschedulable"}
        }
        assert phases.count("running") >= 40  # 1200 % of compute on 12 GPUs, about 2400 % asked
        assert all(
            "nodes are available" in states[k].message for k in keys if states[k].phase == "unschedulable"
        )


async def test_deleted_pods_give_their_gpus_to_waiting_pods(sim_cluster):
    whole_a10 = {"nvidia.com/vgpu-include-models": "A10"}
    fill = [gpu_pod(f"a10-{i}", (100, 0), annotations=whole_a10) for i in range(4)]
    waiting = gpu_pod("a10-waiting", (100, 0), annotations=whole_a10)
    async with sim_cluster() as cluster:
        await settle_and_check(cluster, await submit_all(cluster, fill))
        await cluster.submit(waiting)
        states = await settle_and_check(cluster, ["default/a10-waiting"])
        assert states["default/a10-waiting"].phase == "unschedulable"

        await cluster.delete_pod("default/a10-1")
        await cluster.delete_pod("default/a10-2")

        async def running() -> bool:
            return bool((await cluster.states())["default/a10-waiting"].phase == "running")

        await wait_until(running, timeout_s=30, what="the waiting pod to take a freed GPU")
        await settle_and_check(cluster, ["default/a10-waiting"])
        again = [gpu_pod(f"a10-again-{i}", (50, 4096), annotations=whole_a10) for i in range(2)]
        states = await settle_and_check(cluster, await submit_all(cluster, again))
        assert {states[f"default/a10-again-{i}"].phase for i in range(2)} == {"running"}
