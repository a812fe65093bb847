"""SIMULATED kubelet crash between the plugin's ``Allocate`` answer and the kubelet's checkpoint.

The restarted kubelet does not know the container was allocated, so (as upstream) it admits the pod again and
calls ``Allocate`` once more, possibly with other device IDs. The plugin must attribute the second call to the
same container, and an identical pod submitted afterwards must run too.
"""

import asyncio

from tests.builders.pods import gpu_pod
from tests.sim.scenario import settle_and_check, submit_all

H100_ONLY = {"nvidia.com/vgpu-include-models": "H100"}


async def test_a_kubelet_crash_after_allocate_leaves_no_phantom_allocation(sim_cluster):
    async with sim_cluster() as cluster:
        node = cluster.node("sim-h100")
        node.kubelet.crash_after_allocate.add("victim")
        await cluster.submit(gpu_pod("victim", (10, 2048), annotations=H100_ONLY))
        await asyncio.wait_for(node.kubelet.crashed.wait(), 30)
        await node.restart_kubelet()
        twins = [gpu_pod(f"twin-{i}", (10, 2048), annotations=H100_ONLY) for i in range(3)]
        keys = ["default/victim", *await submit_all(cluster, twins)]
        states = await settle_and_check(cluster, keys, settled=("running", "failed"))
        assert {k: s.phase for k, s in states.items() if k in keys} == dict.fromkeys(keys, "running")
