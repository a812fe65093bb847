"""SIMULATED cluster: pods with GPU init containers and sidecars run, with a simulated kubelet that reuses init
containers' devices first and keeps sidecars' to themselves, as the real one does.

One A10 x4 node, three GPUs taken whole:
- with 50 % of the last GPU free, ``init-pod`` (init 50 % + app 50 %) runs: it holds 50 %, not the sum, and the
  kubelet hands the app its init container's IDs;
- with the last GPU free, ``sidecar-pod`` (sidecar 20 %, init 50 %, app 50 %) holds 70 % (not 120 %): the app
  runs on the init's IDs, never on the sidecar's; a 30 % pod still fits, a 10 % one more does not.
Every container's kubelet IDs name exactly its assigned GPU with as many slices, and its shim config matches.
"""

from typing import Any

from tests.builders.pods import gpu_pod
from tests.sim.cluster import SimCluster
from tests.sim.invariants import expected_config, placed
from tests.sim.node import NodeSpec
from vcuda.names import CONTAINER_CONFIG_PATH
from vcuda.shimfile import decode_config

NODE = NodeSpec("sim-a10", "a10x4")


def with_init(name: str, containers: list[tuple[str, int, int, str]]) -> dict[str, Any]:
    """(name, vcuda-core, MiB, kind) with kind init, sidecar or app."""
    pod = gpu_pod(name)
    spec = pod["spec"]
    spec["containers"], spec["initContainers"] = [], []
    for n, cores, mib, kind in containers:
        body: dict[str, Any] = {"name": n, "image": "cuda", "resources": {"limits": {
            "nvidia.com/vcuda-core": cores, "nvidia.com/vcuda-memory": mib}}}  # fmt: skip
        if kind == "sidecar":
            body["restartPolicy"] = "Always"
        spec["containers" if kind == "app" else "initContainers"].append(body)
    return pod


async def settle(cluster: SimCluster, names: list[str], phase: str = "running") -> None:
    keys = [f"default/{n}" for n in names]
    states = await cluster.wait_settled(keys, timeout_s=60.0)
    assert {k: s.phase for k, s in states.items() if k in keys} == dict.fromkeys(keys, phase), states


async def held_ids(cluster: SimCluster, name: str) -> dict[str, list[str]]:
    """What the kubelet gave each container of ``name``, checked against its assignment and shim config."""
    pod = (await cluster.pods())[f"default/{name}"]
    assignment = placed(
        pod, cluster.names, pod["metadata"]["annotations"][cluster.names.assignment], cluster.key
    )
    held = cluster.node(NODE.name).kubelet.checkpoint.pods[pod["metadata"]["uid"]]
    out = {}
    for container in assignment.containers:
        alloc = held.containers[container.name][cluster.names.core]
        split = {
            u: sum(i.rpartition("::")[0] == u for i in alloc.ids) for u in {s.uuid for s in container.shares}
        }
        assert split == {s.uuid: s.cores for s in container.shares}, container.name
        assert sum(split.values()) == len(alloc.ids), container.name
        mounts = {m.container_path: m.host_path for m in alloc.response.mounts}
        with open(mounts[CONTAINER_CONFIG_PATH], "rb") as f:
            assert decode_config(f.read()) == expected_config(pod, container), container.name
        out[container.name] = sorted(alloc.ids)
    return out


async def test_init_containers_and_sidecars_run_on_the_devices_the_kubelet_reuses(sim_cluster):
    async with sim_cluster(nodes=(NODE,)) as cluster:
        for name, cores, mib in [
            ("whole-a", 100, 0),
            ("whole-b", 100, 0),
            ("whole-c", 100, 0),
            ("half", 50, 4096),
        ]:
            await cluster.submit(gpu_pod(name, (cores, mib)))
            await settle(cluster, [name])

        await cluster.submit(with_init("init-pod", [("setup", 50, 4096, "init"), ("main", 50, 4096, "app")]))
        await settle(cluster, ["init-pod"])
        ids = await held_ids(cluster, "init-pod")
        assert ids["main"] == ids["setup"]  # the kubelet handed the app its init container's IDs

        for name in ("init-pod", "half"):
            await cluster.delete_pod(f"default/{name}")
        sidecar = [("proxy", 20, 1024, "sidecar"), ("setup", 50, 2048, "init"), ("main", 50, 2048, "app")]
        await cluster.submit(with_init("sidecar-pod", sidecar))
        await settle(cluster, ["sidecar-pod"])
        ids = await held_ids(cluster, "sidecar-pod")
        assert ids["main"] == ids["setup"]
        assert not set(ids["proxy"]) & set(ids["main"])

        await cluster.submit(gpu_pod("rest", (30, 1024)))
        await settle(cluster, ["rest"])
        await cluster.submit(gpu_pod("extra", (10, 512)))
        await settle(cluster, ["extra"], "unschedulable")
