"""SIMULATED cluster with a DRA node beside a device-plugin node: the extender's pods and DRA pods together.

Cases: the examples of ``deploy/examples/dra/`` (a 30 % / 4 GiB share, a soft limit, two NVLinked whole GPUs,
a model-selected H100) run on the DRA node, each prepared by the real plugin with the capacity the
simulated scheduler allocated, next to an extender pod on the other node; a claim that fits nowhere leaves
its pod unschedulable; deleting a pod unprepares its claim and the controller deletes the claim; the
invariants hold throughout (invariant 4: no DRA device over-committed).
"""

from pathlib import Path
from typing import Any

import yaml

from tests.builders.pods import gpu_pod
from tests.sim.node import NodeSpec
from tests.sim.scenario import settle_and_check
from vcuda.shimfile import decode_config
from vcuda.units import parse_quantity

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "dra"
NODES = (NodeSpec("sim-h100", "h100x8"), NodeSpec("sim-dra", "h100x8", front_end="dra"))


async def submit_example(cluster: Any, name: str) -> str:
    template, pod = (d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d)
    template["metadata"]["namespace"] = "default"
    await cluster.kube.create("resourceclaimtemplates", template)
    await cluster.submit(pod)
    return f"default/{pod['metadata']['name']}"


def claim_configs(cluster: Any) -> dict[str, Any]:
    """Claim UID -> its shim config on the DRA node."""
    state = cluster.nodes["sim-dra"].state_dir / "containers"
    return {
        p.parent.name.split("_dra-")[1]: decode_config(p.read_bytes())
        for p in state.glob("*_dra-*/vcuda.config")
    }


async def test_dra_examples_run_beside_the_extenders_pods(sim_cluster):
    async with sim_cluster(nodes=NODES) as cluster:
        keys = [
            await submit_example(cluster, n)
            for n in ("share.yaml", "soft-limit.yaml", "two-gpu-nvlink.yaml", "model-selection.yaml")
        ]
        await cluster.submit(gpu_pod("extender-pod", (30, 4096)))
        states = await settle_and_check(
            cluster,
            [*keys, "default/extender-pod"],
            settled=("running", "failed", "unschedulable", "blocked"),
        )
        assert {k: s.phase for k, s in states.items() if k in keys} == dict.fromkeys(keys, "running")
        assert {k: s.node for k, s in states.items() if k in keys} == dict.fromkeys(keys, "sim-dra")
        assert (states["default/extender-pod"].phase, states["default/extender-pod"].node) == (
            "running",
            "sim-h100",
        )
        configs = claim_configs(cluster)
        claims = await cluster.kube.list("resourceclaims")
        assert len(claims) == 4
        for claim in claims:
            results = claim["status"]["allocation"]["devices"]["results"]
            config = configs[claim["metadata"]["uid"]]
            assert sorted(g.core_limit for g in config.gpus) == sorted(
                parse_quantity(r["consumedCapacity"]["cores"]) for r in results
            )
            assert sorted(g.memory_limit_bytes for g in config.gpus) == sorted(
                parse_quantity(r["consumedCapacity"]["memory"]) for r in results
            )
        soft = next(c for c in claims if c["metadata"]["name"].startswith("dra-soft-limit-"))
        assert [g.soft_limit for g in configs[soft["metadata"]["uid"]].gpus] == [60]
        share = next(c for c in claims if c["metadata"]["name"].startswith("dra-share-"))
        status, text = await cluster.http(
            "GET", f"http://127.0.0.1:{cluster.nodes['sim-dra'].metrics_port}/metrics"
        )
        assert status == 200
        limits = [
            line for line in text.splitlines() if line.startswith("kube_vgpu_container_memory_limit_bytes{")
        ]
        mine = [line for line in limits if f'container="dra-{share["metadata"]["uid"]}"' in line]
        assert len(mine) == 1, limits  # listed by PodResources' dynamic_resources, so reported
        assert 'pod="dra-share"' in mine[0]
        assert mine[0].endswith(" 4.294967296e+09")


async def test_a_claim_that_fits_nowhere_is_unschedulable_and_a_deleted_pod_gives_its_share_back(sim_cluster):
    async with sim_cluster(nodes=NODES) as cluster:
        share = await submit_example(cluster, "share.yaml")
        await settle_and_check(cluster, [share], settled=("running",))
        template = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                    "metadata": {"name": "too-big", "namespace": "default"},
                    "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                        "deviceClassName": "vgpu.nvidia.com", "capacity": {"requests": {"memory": "200Gi"}}}}]}}}}  # fmt: skip
        await cluster.kube.create("resourceclaimtemplates", template)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "too-big", "namespace": "default"},
               "spec": {"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "too-big"}],
                        "containers": [{"name": "c", "image": "cuda", "resources": {"claims": [{"name": "gpu"}]}}]}}  # fmt: skip
        await cluster.submit(pod)
        states = await settle_and_check(cluster, ["default/too-big"], settled=("unschedulable",))
        assert "cannot allocate all claims" in states["default/too-big"].message
        assert len(claim_configs(cluster)) == 1
        await cluster.kube.delete("/api/v1/namespaces/default/pods/dra-share")

        async def gone() -> bool:
            names = [c["metadata"]["name"] for c in await cluster.kube.list("resourceclaims")]
            return not claim_configs(cluster) and not any(n.startswith("dra-share-") for n in names)

        from tests.sim.waiting import wait_until

        await wait_until(gone, timeout_s=30, what="the share's claim unprepared and deleted")
