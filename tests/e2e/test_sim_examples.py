"""SIMULATED cluster: every example pod of ``deploy/examples`` lands as its comments say.

Cases: fractional share; two containers with their own shares; two whole GPUs joined by NVLink; a soft compute
limit; GPU-model selection; an invalid request rejected by the webhook with the extender's reason. After
submission the invariants hold (no GPU over-committed, every shim config equals its assignment).
"""

from pathlib import Path
from typing import Any

from tests.sim.cluster import DEMO_NODES
from tests.sim.demo import demo_pods
from tests.sim.invariants import expected_config, placed
from tests.sim.scenario import settle_and_check
from vcuda.annotations import decode_inventory
from vcuda.model import NodeInventory, PodAssignment
from vcuda.names import CONTAINER_CONFIG_PATH
from vcuda.shimfile import decode_config


def _model(inventory: NodeInventory, uuid: str) -> str:
    gpu = inventory.gpu(uuid)
    assert gpu is not None, f"{uuid} is not in the node's inventory"
    return gpu.model


def _by_name(pods: dict[str, Any]) -> dict[str, Any]:
    return {key.split("/", 1)[1]: pod for key, pod in pods.items()}


async def test_every_example_lands_as_its_comments_say(sim_cluster):
    examples = demo_pods()
    async with sim_cluster(nodes=DEMO_NODES) as cluster:
        for pod in examples:
            await cluster.submit(pod)
        keys = [f"default/{p['metadata']['name']}" for p in examples]
        states = await settle_and_check(cluster, keys, settled=("running", "failed", "rejected"))
        pods = _by_name(await cluster.pods())
        nodes = {n["metadata"]["name"]: n for n in await cluster.kube.list("nodes")}

        def assignment(name: str) -> PodAssignment:
            raw = pods[name]["metadata"]["annotations"][cluster.names.assignment]
            return placed(pods[name], cluster.names, raw, cluster.key)

        def inventory(node: str) -> NodeInventory:
            return decode_inventory(nodes[node]["metadata"]["annotations"][cluster.names.inventory])

        assert states["default/vgpu-invalid-150-cores"].phase == "rejected"
        assert "150 is invalid" in states["default/vgpu-invalid-150-cores"].message
        assert {k: s.phase for k, s in states.items() if k != "default/vgpu-invalid-150-cores"} == {
            f"default/{p['metadata']['name']}": "running"
            for p in examples
            if "invalid" not in p["metadata"]["name"]
        }

        fractional = assignment("vgpu-fractional").containers[0]
        assert [(s.cores, s.memory_mib) for s in fractional.shares] == [(30, 4096)]

        multi = assignment("vgpu-multi-container")
        assert {c.name: [(s.cores, s.memory_mib) for s in c.shares] for c in multi.containers} == {
            "trainer": [(50, 16384)],
            "evaluator": [(20, 4096)],
        }

        pair = assignment("vgpu-two-gpu-nvlink")
        uuids = sorted(s.uuid for s in pair.containers[0].shares)
        links = {(link.a, link.b): link.nvlinks for link in inventory(pair.node).links}
        assert len(uuids) == 2
        assert all(s.cores == 100 for s in pair.containers[0].shares)
        assert links.get((uuids[0], uuids[1]), links.get((uuids[1], uuids[0]), 0)) > 0, (
            "the pair is not NVLinked"
        )
        assert "H100" in _model(inventory(pair.node), uuids[0])

        soft = assignment("vgpu-soft-limit").containers[0]
        assert (soft.shares[0].cores, soft.core_limit) == (20, 60)

        chosen = assignment("vgpu-model-selection")
        assert "A10" in _model(inventory(chosen.node), chosen.containers[0].shares[0].uuid)


async def test_the_shim_config_of_a_soft_limited_container_carries_both_limits(sim_cluster):
    example = next(p for p in demo_pods() if p["metadata"]["name"] == "vgpu-soft-limit")
    async with sim_cluster() as cluster:
        await cluster.submit(example)
        await settle_and_check(cluster, ["default/vgpu-soft-limit"], settled=("running", "failed"))
        pod = _by_name(await cluster.pods())["vgpu-soft-limit"]
        node = cluster.node(pod["spec"]["nodeName"])
        alloc = node.kubelet.checkpoint.get(pod["metadata"]["uid"], "cuda", cluster.names.core)
        mounts = {m.container_path: m.host_path for m in alloc.response.mounts}
        config = decode_config(Path(mounts[CONTAINER_CONFIG_PATH]).read_bytes())
        assert [(g.core_limit, g.soft_limit, g.memory_limit_bytes) for g in config.gpus] == [
            (20, 60, 2048 << 20)
        ]
        assignment = placed(
            pod, cluster.names, pod["metadata"]["annotations"][cluster.names.assignment], cluster.key
        )
        assert config == expected_config(pod, assignment.containers[0])
