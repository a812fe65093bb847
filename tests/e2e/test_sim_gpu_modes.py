"""SIMULATED cluster: one mixed node sells its GPUs in three modes at once, and no GPU is sold twice.

The node (4 x A10, the REAL plugin with NVIDIA's config and kube-vgpu's section, ``MIXED_NODE``): GPUs 0-1 as
vcuda shares (placed by the REAL extender), GPU 2 whole as ``nvidia.com/gpu`` and GPU 3 as four time-sliced
replicas of ``nvidia.com/gpu.shared`` (placed by the simulated default scheduler from the node's allocatable,
handed out by the simulated kubelet; each replica isolated by the shim to a quarter of the GPU). Filled to the brim in every mode, then one more pod of each: each extra
one waits with its scheduler's reason (the node advertises ``vcuda-core`` for its two shared GPUs only), and the invariants (no GPU advertised, held or assigned in two modes;
a whole GPU once; replicas at most four; every share within its GPU) hold after every step.

A switch of the whole GPU to shares while a stock pod holds it (the config changed, the plugin restarted): the
plugin keeps the GPU whole and records a ``VGPUModeSwitchRefused`` event, the extender places no share there;
once the pod is gone and the plugin restarts, the GPU is sold as shares only, and a whole-GPU share lands on it.
"""

from pathlib import Path
from typing import Any

from tests.builders.pods import gpu_pod
from tests.sim.cluster import MIXED_NODE, SimCluster
from tests.sim.demo import STOCK_PODS
from tests.sim.invariants import gpu_of
from tests.sim.scenario import settle_and_check, submit_all
from tests.sim.waiting import wait_until
from vcuda.annotations import decode_assignment_unverified, decode_inventory
from vcuda.model import GpuMode, NodeInventory
from vcuda.names import CONTAINER_CONFIG_PATH
from vcuda.shimfile import GpuLimit, decode_config

WHOLE, SHARED = "nvidia.com/gpu", "nvidia.com/gpu.shared"


def stock(name: str, resource: str) -> dict[str, Any]:
    container = {"name": "cuda", "image": "cuda", "resources": {"limits": {resource: 1}}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [container]}}  # fmt: skip


def held_gpus(cluster: SimCluster, pod: dict[str, Any], resource: str) -> set[str]:
    uid = str(pod["metadata"]["uid"])
    checkpoint = cluster.node(MIXED_NODE.name).kubelet.checkpoint
    return {gpu_of(i) for c in checkpoint.pods[uid].containers.values() for i in c[resource].ids}


def shim_limits(cluster: SimCluster, pod: dict[str, Any], resource: str) -> tuple[GpuLimit, ...]:
    """The GPU limits of the shim config the plugin's Allocate answer mounted for the pod's container."""
    uid = str(pod["metadata"]["uid"])
    checkpoint = cluster.node(MIXED_NODE.name).kubelet.checkpoint
    (alloc,) = [c[resource] for c in checkpoint.pods[uid].containers.values()]
    mounts = {m.container_path: m.host_path for m in alloc.response.mounts}
    if CONTAINER_CONFIG_PATH not in mounts:
        return ()
    return decode_config(Path(mounts[CONTAINER_CONFIG_PATH]).read_bytes()).gpus


async def test_shares_whole_gpus_and_replicas_share_one_node_and_no_gpu_is_sold_twice(sim_cluster):
    async with sim_cluster(nodes=(MIXED_NODE,), default_scheduler=True) as cluster:
        node = await cluster.kube.get(f"/api/v1/nodes/{MIXED_NODE.name}")
        inventory = decode_inventory(node["metadata"]["annotations"][cluster.names.inventory])
        shared = {g.uuid for g in inventory.gpus}
        modes = {str(o.uuid): (o.mode, o.resource, o.replicas) for o in inventory.other}
        assert len(shared) == 2
        assert sorted(modes.values()) == [(GpuMode.TIME_SLICING, SHARED, 4), (GpuMode.WHOLE, WHOLE, 1)]
        allocatable = node["status"]["allocatable"]
        assert (allocatable[cluster.names.core], allocatable[WHOLE], allocatable[SHARED]) == ("200", "1", "4")

        full = [gpu_pod(f"share-{i}", (50, 8192)) for i in range(4)]
        full += [stock("whole-0", WHOLE), *[stock(f"replica-{i}", SHARED) for i in range(4)]]
        keys = await submit_all(cluster, full)
        states = await settle_and_check(cluster, keys)
        assert {k: s.phase for k, s in states.items()} == dict.fromkeys(keys, "running")

        pods = await cluster.pods()
        for i in range(4):
            raw = pods[f"default/share-{i}"]["metadata"]["annotations"][cluster.names.assignment]
            assert {s.uuid for c in decode_assignment_unverified(raw).containers for s in c.shares} <= shared
        (whole_gpu,) = held_gpus(cluster, pods["default/whole-0"], WHOLE)
        assert modes[whole_gpu][0] is GpuMode.WHOLE
        replica_gpus = set().union(
            *(held_gpus(cluster, pods[f"default/replica-{i}"], SHARED) for i in range(4))
        )
        assert [modes[g][0] for g in replica_gpus] == [GpuMode.TIME_SLICING]
        (replicated,) = replica_gpus
        quarter = next(o.memory_mib for o in inventory.other if o.uuid == replicated) // 4
        for i in range(4):  # isolated time-slicing: each replica's shim holds it to a quarter of the GPU
            (limit,) = shim_limits(cluster, pods[f"default/replica-{i}"], SHARED)
            assert (limit.uuid, limit.memory_limit_bytes >> 20, limit.core_limit) == (replicated, quarter, 25)
        assert shim_limits(cluster, pods["default/whole-0"], WHOLE) == ()  # a whole GPU: NVIDIA's, no shim

        extra = [
            gpu_pod("share-extra", (50, 8192)),
            gpu_pod("three-whole", (300, 0)),
            stock("whole-extra", WHOLE),
            stock("replica-extra", SHARED),
        ]
        keys = await submit_all(cluster, extra)
        states = await settle_and_check(cluster, keys, settled=("unschedulable",))
        # vcuda-core: 100 per shared GPU only (200), so kube-scheduler's own fit refuses before the extender
        for key in ("default/share-extra", "default/three-whole"):
            assert f"Insufficient {cluster.names.core}" in states[key].message
        assert f"Insufficient {WHOLE}" in states["default/whole-extra"].message
        assert f"Insufficient {SHARED}" in states["default/replica-extra"].message

        await cluster.delete_pod("default/whole-0")
        await cluster.delete_pod("default/replica-0")
        states = await settle_and_check(cluster, ["default/whole-extra", "default/replica-extra"],
                                        settled=("running",))  # fmt: skip
        pods = await cluster.pods()
        assert held_gpus(cluster, pods["default/whole-extra"], WHOLE) == {whole_gpu}


def test_the_demos_stock_pods_ask_for_the_mixed_nodes_resources():
    asked = {r for p in STOCK_PODS for c in p["spec"]["containers"] for r in c["resources"]["limits"]}
    assert asked == {WHOLE, SHARED}
    assert all("schedulerName" not in p["spec"] for p in STOCK_PODS)  # stock: the default scheduler's


def _with_vcuda(config: str, devices: str) -> str:
    return config.replace("vcudaDevices: [0, 1]", f"vcudaDevices: {devices}")


async def test_a_gpu_switched_to_shares_waits_for_its_pod_and_is_never_sold_twice(sim_cluster):
    """The operator moves the whole GPU to vcuda shares while a stock pod holds it: the restarted plugin keeps
    the GPU whole (the switch is refused while held), the extender places no share there and the invariants
    hold; once the pod is gone and the plugin restarts, the GPU is sold as shares only."""
    async with sim_cluster(nodes=(MIXED_NODE,), default_scheduler=True) as cluster:
        node = cluster.node(MIXED_NODE.name)
        keys = await submit_all(cluster, [stock("holder", WHOLE)])
        await settle_and_check(cluster, keys, settled=("running",))
        pods = await cluster.pods()
        (whole_gpu,) = held_gpus(cluster, pods["default/holder"], WHOLE)

        async def inventory() -> NodeInventory:
            raw = (await cluster.kube.get(f"/api/v1/nodes/{MIXED_NODE.name}"))["metadata"]["annotations"]
            return decode_inventory(raw[cluster.names.inventory])

        async def refused() -> bool:
            events = await cluster.kube.list("events", "default")
            return any(
                e.get("reason") == "VGPUModeSwitchRefused" and whole_gpu in e["message"] for e in events
            )

        (node.root / "plugin-config.yaml").write_text(_with_vcuda(MIXED_NODE.plugin_config, "[0, 1, 2]"))
        await node.restart_plugin(kill=False)
        await wait_until(refused, timeout_s=30, what="the plugin to refuse switching the held GPU")
        await node.wait_ready()
        held = await inventory()
        assert whole_gpu in {o.uuid for o in held.other}
        assert whole_gpu not in {g.uuid for g in held.gpus}
        keys = await submit_all(cluster, [gpu_pod(f"whole-share-{i}", (100, 0)) for i in range(3)])
        states = await settle_and_check(cluster, keys)  # two run on GPUs 0-1, the third finds no GPU
        assert sorted(states[k].phase for k in keys) == ["running", "running", "unschedulable"]

        await cluster.delete_pod("default/holder")
        await node.restart_plugin(kill=False)

        async def switched() -> bool:
            now = await inventory()
            return whole_gpu in {g.uuid for g in now.gpus} and whole_gpu not in {o.uuid for o in now.other}

        await wait_until(switched, timeout_s=30, what="the free GPU to be sold as shares")
        await node.wait_ready(resources=(SHARED,))  # nothing is sold whole any more
        states = await settle_and_check(cluster, keys, settled=("running",))
        pods = await cluster.pods()
        placed = {
            s.uuid
            for k in keys
            for c in decode_assignment_unverified(
                pods[k]["metadata"]["annotations"][cluster.names.assignment]
            ).containers
            for s in c.shares
        }
        assert whole_gpu in placed
