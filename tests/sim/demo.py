"""``make demo``: start a SIMULATED cluster, submit the example pods, show where every container landed.

Beside the extender's nodes run a mixed node (NVIDIA's config: a whole GPU and time-sliced replicas of
``nvidia.com/gpu`` beside vcuda shares; stock pods land there through the default scheduler) and one DRA node
(the plugin with ``--front-end=dra``): the ResourceClaim examples of ``deploy/examples/dra/`` land there,
allocated by the simulated default scheduler from the node's ResourceSlices and prepared by the real plugin;
the demo shows each claim's share as ``kubectl vgpu claims`` does.

Real: the extender and one plugin per node (child processes), the kubelet gRPC APIs they speak, the shim config
files, the metrics. Simulated: the API server, kube-scheduler, the kubelets and the GPUs (see
``docs/simulation.md``). Exits 0 when every example settled as expected, 1 otherwise.
"""

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kube_vgpu_kubectl.claims import claim_rows, render_claims
from kube_vgpu_kubectl.cli import _table, gpu_rows, render_gpus
from tests.sim.cluster import DEMO_NODES, MIXED_NODE, ClusterSpec, PodState, SimCluster
from tests.sim.invariants import check_invariants
from tests.sim.node import NodeSpec
from tests.sim.report import (
    device_rows,
    format_table,
    placements,
    render_devices,
    render_placements,
    render_unplaced,
)

__all__ = ["EXAMPLES_DIR", "STOCK_PODS", "demo_pods", "main"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "deploy" / "examples"
DRA_EXAMPLES_DIR = EXAMPLES_DIR / "dra"
DRA_NODE = NodeSpec("sim-h100-dra", "h100x8", front_end="dra")

# A pod no GPU can hold (a share of 90000 MiB; the largest GPU has 81559), to show the extender's reason.
TOO_LARGE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "demo-share-larger-than-any-gpu", "namespace": "default"},
    "spec": {
        "schedulerName": "kube-vgpu-scheduler",
        "containers": [
            {
                "name": "cuda",
                "image": "cuda",
                "resources": {"limits": {"nvidia.com/vcuda-core": 50, "nvidia.com/vcuda-memory": 90000}},
            }
        ],
    },
}


def _stock(name: str, resource: str) -> dict[str, Any]:
    """A pod as a chart written for NVIDIA's device plugin has it: no schedulerName, ``nvidia.com/gpu``."""
    container = {"name": "cuda", "image": "cuda", "resources": {"limits": {resource: 1}}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [container]}}  # fmt: skip


STOCK_PODS: list[dict[str, Any]] = [
    _stock("demo-stock-nvidia-gpu", "nvidia.com/gpu"),
    _stock("demo-time-sliced-replica-a", "nvidia.com/gpu.shared"),
    _stock("demo-time-sliced-replica-b", "nvidia.com/gpu.shared"),
]
"""Stock pods for the mixed node: a whole GPU and two time-sliced replicas, placed by the default scheduler."""


def demo_pods(directory: Path | None = None) -> list[dict[str, Any]]:
    """The example pods of ``deploy/examples/*.yaml`` (or of ``directory``), in file-name order."""
    folder = directory or EXAMPLES_DIR
    pods = []
    for path in sorted(folder.glob("*.yaml")):
        pods += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Pod"]
    return pods


def _say(text: str = "") -> None:
    print(text, flush=True)


def _node_table(nodes: Sequence[dict[str, Any]], cluster: SimCluster) -> str:
    rows = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        spec = cluster.nodes[node["metadata"]["name"]].spec
        rows.append((node["metadata"]["name"], spec.hardware, spec.front_end, allocatable.get(cluster.names.core, "-"),
                     allocatable.get(cluster.names.memory, "-"), allocatable.get("nvidia.com/gpu", "-"),
                     allocatable.get("nvidia.com/gpu.shared", "-")))  # fmt: skip
    header = (
        "NODE",
        "FAKE GPUs",
        "FRONT END",
        "vcuda-core",
        "vcuda-memory (MiB)",
        "nvidia.com/gpu",
        "nvidia.com/gpu.shared",
    )
    return format_table(header, rows)


def _modes_table(nodes: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]], cluster: SimCluster) -> str:
    """``kubectl vgpu nodes`` (its own code) for the mixed node: each GPU's mode, resource and replicas."""
    mixed = [n for n in nodes if n["metadata"]["name"] == MIXED_NODE.name]
    return render_gpus(gpu_rows(mixed, pods, cluster.names)).rstrip("\n")


async def _submit_dra_examples(cluster: SimCluster) -> list[str]:
    """Each ResourceClaimTemplate of ``deploy/examples/dra`` and the pod using it; the pods' keys (not the
    MIG example: the demo's DRA node has no MIG)."""
    keys = []
    for path in sorted(p for p in DRA_EXAMPLES_DIR.glob("*.yaml") if not p.name.startswith("mig-")):
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            doc["metadata"]["namespace"] = "default"
            if doc["kind"] == "ResourceClaimTemplate":
                await cluster.kube.create("resourceclaimtemplates", doc)
            else:
                await cluster.submit(doc)
                keys.append(f"default/{doc['metadata']['name']}")
    return keys


async def _metrics_sample(cluster: SimCluster, node: str, pod: str) -> str:
    lines: list[str] = []
    port = cluster.nodes[node].metrics_port if node in cluster.nodes else 0
    if port:
        status, text = await cluster.http("GET", f"http://127.0.0.1:{port}/metrics")
        if status == 200:
            lines += [f"[{node} exporter] {line}" for line in text.splitlines()
                      if line.startswith("kube_vgpu_container") and f'pod="{pod}"' in line][:8]  # fmt: skip
            for family, count in (("kube_vgpu_gpu_cores_allocated_ratio", 3), ("kube_vgpu_gpu_healthy", 1),
                                  ("kube_vgpu_gpu_memory_total_bytes", 1)):  # fmt: skip
                lines += [f"[{node} exporter] {line}" for line in text.splitlines()
                          if line.startswith(family + "{")][:count]  # fmt: skip
        else:
            lines.append(f"[{node} exporter] not serving on :{port}: {text[:200]}")
    _, text = await cluster.http("GET", f"{cluster.extender_metrics_url}/metrics")
    lines += [f"[extender] {line}" for line in text.splitlines()
              if line.startswith("kube_vgpu_extender") and not any(s in line for s in ("_bucket", "_created"))][:10]  # fmt: skip
    return "\n".join(lines)


async def run_demo(workdir: Path, examples: Path | None) -> int:
    started = time.monotonic()
    _say(
        "kube-vgpu demo: a SIMULATED cluster (kmock API server, simulated kube-scheduler and kubelets, FAKE GPUs)"
    )
    _say("running the REAL kube-vgpu-extender and one REAL kube-vgpu-plugin per node.\n")
    spec = ClusterSpec(nodes=(*DEMO_NODES, MIXED_NODE, DRA_NODE), default_scheduler=True)
    async with SimCluster(spec, workdir) as cluster:
        _say(f"cluster up in {time.monotonic() - started:.1f} s\n")
        _say(_node_table(await cluster.kube.list("nodes"), cluster) + "\n")
        pods = [*demo_pods(examples), TOO_LARGE, *STOCK_PODS]
        for pod in pods:
            await cluster.submit(pod)
        keys = [f"default/{p['metadata']['name']}" for p in pods]
        dra_keys = await _submit_dra_examples(cluster)
        states = await cluster.wait_settled([*keys, *dra_keys], timeout_s=60)
        nodes, live = await cluster.kube.list("nodes"), await cluster.pods()
        rows = placements(live, nodes, cluster.names)
        _say(f"submitted {len(pods)} pods:\n")
        _say(render_placements(rows, states) + "\n")
        _say(f"whole GPUs and time-sliced replicas (stock nvidia.com/gpu pods, node {MIXED_NODE.name}):\n")
        checkpoints = {name: node.kubelet.checkpoint for name, node in cluster.nodes.items()}
        _say(render_devices(device_rows(live, nodes, cluster.names, checkpoints), states) + "\n")
        _say(f"kubectl vgpu nodes, node {MIXED_NODE.name} (one GPU, one mode):\n")
        _say(_modes_table(nodes, list(live.values()), cluster) + "\n")
        _say(f"DRA pods on {DRA_NODE.name} (their claims, as `kubectl vgpu claims -A` shows them):\n")
        _say("\n".join(f"  {k}: {states[k].phase} on {states[k].node or '-'}" for k in dra_keys) + "\n")
        _say(
            render_claims(claim_rows(await cluster.kube.list("resourceclaims"), cluster.names.domain), _table)
        )
        _say("not placed:\n")
        _say(render_unplaced({k: s for k, s in states.items() if k not in dra_keys}) + "\n")
        problems = await check_invariants(cluster)
        _say("invariants (no GPU or DRA device over-committed, no GPU sold in two modes, every shim config equals "
             "its assignment): "
             + ("ok" if not problems else "VIOLATED\n  " + "\n  ".join(problems)) + "\n")  # fmt: skip
        if rows:
            _say("a sample of the metrics:\n")
            _say(await _metrics_sample(cluster, rows[0].node, rows[0].pod) + "\n")
            _say("and of a DRA claim's (container dra-<claim-uid>):\n")
            _say((await _metrics_sample(cluster, DRA_NODE.name, "dra-share")).split("\n[extender]")[0] + "\n")
        return _verdict(states, problems, started)


def _verdict(states: dict[str, PodState], problems: list[str], started: float) -> int:
    running = sum(1 for s in states.values() if s.phase == "running")
    _say(f"{running} pods running, {len(states) - running} not placed, in {time.monotonic() - started:.1f} s")
    stock = [f"default/{p['metadata']['name']}" for p in STOCK_PODS]
    stuck = [k for k in stock if states.get(k, PodState("missing")).phase != "running"]
    if stuck:
        _say(f"stock nvidia.com/gpu pods not running: {', '.join(stuck)}")
    return 1 if problems or running == 0 or stuck else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.demo", description=__doc__)
    parser.add_argument("--examples", type=Path, default=None, help="folder of pod YAML files")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and state here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.workdir is not None:
        return asyncio.run(run_demo(args.workdir, args.examples))
    with tempfile.TemporaryDirectory(prefix="kube-vgpu-demo-") as tmp:
        return asyncio.run(run_demo(Path(tmp), args.examples))


if __name__ == "__main__":
    sys.exit(main())
