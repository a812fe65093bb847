"""kubectl-vgpu over a fake API (FakeClusterReader implements ClusterReader): node GPU tables, pod tables,
JSON output, and which pods count as holding GPUs (finished pods and failed assignments do not; unsigned or
wrongly signed annotations are shown because the view is unverified; broken annotations are marked invalid).
"""

import json
from typing import Any

import pytest

from kube_vgpu_kubectl.cli import gpu_rows, mig_rows, parse_args, pod_rows, run
from tests.builders.kubectl import G0, G1, NODES, PODS, N, node
from tests.builders.vcuda import gpu, nvswitch_node
from tests.signing_keys import OTHER_SIGNER
from vcuda.annotations import (
    decode_assignment_unverified,
    encode_assignment,
)
from vcuda.model import (
    ContainerAssignment,
    GpuMode,
    GpuShare,
    GpuUuid,
    MigInfo,
    NodeInventory,
    NodeName,
    OtherModeGpu,
    PodAssignment,
)
from vcuda.signing import PodBinding


class FakeClusterReader:
    """A fake API server read path: fixed lists of node and pod JSON objects."""

    def __init__(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.nodes, self.pods = nodes, pods
        self.asked: list[str | None] = []

    def list_nodes(self):
        return self.nodes

    def list_pods(self, namespace):
        self.asked.append(namespace)
        return [p for p in self.pods if namespace is None or p["metadata"]["namespace"] == namespace]

    def list_resource_claims(self, namespace):
        return []


def test_node_rows_sum_live_assignments_per_gpu():
    rows = gpu_rows(NODES, PODS, N)
    got = [
        (r.node, r.index, r.cores_allocated, r.memory_allocated_mib, r.memory_mib, r.healthy, r.pods)
        for r in rows
    ]
    assert got == [
        ("a", 0, 60, 20992, 81920, True, ("ml/train", "web/forged")),
        ("a", 1, 80, 30720, 81920, True, ("ml/serve", "ml/train")),
        ("b", 0, 0, 0, 24576, False, ()),
    ]


def test_pod_rows_show_shares_limits_and_phases():
    rows = {(r.namespace, r.pod): r for r in pod_rows(PODS, N)}
    assert set(rows) == {
        ("ml", "train"),
        ("ml", "serve"),
        ("ml", "done"),
        ("ml", "oops"),
        ("web", "forged"),
        ("web", "broken"),
        ("web", "waiting"),
    }
    train = rows[("ml", "train")]
    assert (train.node, train.phase, train.pod_phase) == ("a", "allocated", "Running")
    assert [(s.container, s.gpu, s.cores, s.core_limit, s.memory_mib) for s in train.shares] == [
        ("trainer", G0, 50, 80, 20480),
        ("trainer", G1, 50, 80, 20480),
    ]
    assert [(k, r.phase) for k, r in sorted(rows.items()) if k != ("ml", "train")] == [
        (("ml", "done"), "assumed"),
        (("ml", "oops"), "failed"),
        (("ml", "serve"), "assumed"),
        (("web", "broken"), "invalid"),
        (("web", "forged"), "assumed"),
        (("web", "waiting"), "pending"),
    ]


def test_nodes_table_lists_every_gpu_and_says_unverified():
    out = run(parse_args(["nodes"]), FakeClusterReader(NODES, PODS))
    lines = out.splitlines()
    assert lines[0].split() == [
        "NODE", "GPU", "MODEL", "HEALTH", "MODE", "RESOURCE", "REPLICAS", "CORES", "MEMORY(MiB)", "PODS"
    ]  # fmt: skip
    assert lines[1].split() == [
        "a",
        "0",
        "NVIDIA",
        "H100",
        "80GB",
        "HBM3",
        "Healthy",
        "vcuda",
        "nvidia.com/vcuda-core",
        "-",
        "60/100",
        "20992/81920",
        "ml/train,web/forged",
    ]
    assert lines[3].split() == [
        "b", "0", "NVIDIA", "A10", "Unhealthy", "vcuda", "nvidia.com/vcuda-core", "-", "0/100", "0/24576", "-"
    ]  # fmt: skip
    assert lines[-1] == "# allocations read from unverified vgpu-assignment annotations"


@pytest.mark.parametrize(
    ("argv", "asked"),
    [
        pytest.param(["pods", "-A"], [None], id="-A asks every namespace"),
        pytest.param(["pods", "-n", "web"], ["web"], id="-n asks one namespace"),
    ],
)
def test_pods_table_has_one_line_per_container_gpu(argv, asked):
    cluster = FakeClusterReader(NODES, PODS)
    out = run(parse_args(argv), cluster)
    assert cluster.asked == asked
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "POD",
        "NODE",
        "CONTAINER",
        "GPU",
        "CORES",
        "CORE-LIMIT",
        "MEMORY(MiB)",
        "PHASE",
        "STATUS",
    ]
    if asked == ["web"]:
        assert [line.split()[:2] for line in lines[1:-1]] == [
            ["web", "broken"],
            ["web", "forged"],
            ["web", "waiting"],
        ]
        assert lines[3].split() == ["web", "waiting", "-", "-", "-", "-", "-", "-", "pending", "Pending"]


def test_json_output_is_machine_readable_and_marked_unverified():
    doc = json.loads(run(parse_args(["nodes", "-o", "json"]), FakeClusterReader(NODES, PODS)))
    assert doc["verified"] is False
    assert doc["gpus"][0] == {
        "node": "a", "index": 0, "uuid": G0, "model": "NVIDIA H100 80GB HBM3", "healthy": True,
        "memory_mib": 81920, "cores_allocated": 60, "memory_allocated_mib": 20992, "pods": ["ml/train", "web/forged"],
        "mode": "vcuda", "resource": "nvidia.com/vcuda-core", "replicas": 1,
    }  # fmt: skip
    pods = json.loads(run(parse_args(["pods", "-A", "-o", "json"]), FakeClusterReader(NODES, PODS)))["pods"]
    assert pods[-1] == {
        "namespace": "web", "pod": "waiting", "node": "", "phase": "pending", "pod_phase": "Pending", "shares": [],
    }  # fmt: skip


MIG_PARENT = GpuUuid("GPU-aaaaaaaa-0000-0000-0000-000000000001")
MIG_NODE = node(
    "m",
    NodeInventory(
        (gpu(1, node="m"),),
        mig=(
            MigInfo("MIG-2", MIG_PARENT, "4g.40gb", 40192, 64),
            MigInfo("MIG-1", MIG_PARENT, "3g.40gb", 40192, 60),
        ),
    ),
)


def test_mig_view_lists_every_instance_and_leaves_shared_gpus_to_nodes():
    nodes = [*NODES, MIG_NODE]
    assert [(r.node, r.profile, r.uuid, r.memory_mib, r.multiprocessors) for r in mig_rows(nodes, N)] == [
        ("m", "3g.40gb", "MIG-1", 40192, 60),
        ("m", "4g.40gb", "MIG-2", 40192, 64),
    ]
    lines = run(parse_args(["mig"]), FakeClusterReader(nodes, PODS)).splitlines()
    assert lines[0].split() == ["NODE", "GPU", "MIG-DEVICE", "PROFILE", "MEMORY(MiB)", "SMS"]
    assert lines[1].split() == ["m", MIG_PARENT, "MIG-1", "3g.40gb", "40192", "60"]
    assert len(lines) == 3
    assert [r.node for r in gpu_rows(nodes, PODS, N)].count("m") == 1  # the shared GPU only
    doc = json.loads(run(parse_args(["mig", "-o", "json"]), FakeClusterReader(nodes, PODS)))
    assert doc["mig"][1]["profile"] == "4g.40gb"


def test_unverified_decoder_reads_any_signature_but_rejects_bad_documents():
    text = encode_assignment(
        PodAssignment(NodeName("a"), (ContainerAssignment("c", (GpuShare(G0, 10, 1),), 10),)),
        PodBinding("u", "ns", "p", "digest"),
        OTHER_SIGNER,
    )
    assert decode_assignment_unverified(text).node == "a"
    with pytest.raises(ValueError, match="version"):
        decode_assignment_unverified('{"v": 1}')  # the HMAC format before pod-bound signatures


def test_nodes_view_shows_each_gpus_mode_resource_and_replicas_and_names_refused_inventories():
    """One GPU, one mode: a mixed node's GPUs sold whole or as replicas are listed with their resource (no
    vcuda allocation on them); a node whose inventory lists a GPU twice is named, not silently dropped."""
    full = nvswitch_node(3, node="x")
    mixed = NodeInventory(
        full.gpus[:1],
        other=(
            OtherModeGpu(full.gpus[1].uuid, 1, "NVIDIA H100", 81920, GpuMode.WHOLE, "nvidia.com/gpu"),
            OtherModeGpu(
                full.gpus[2].uuid, 2, "NVIDIA H100", 81920, GpuMode.TIME_SLICING, "nvidia.com/gpu", 4
            ),
        ),
    )
    twice = NodeInventory(
        full.gpus[:1], other=(OtherModeGpu(full.gpus[0].uuid, 0, "m", 1, GpuMode.MPS, "r", 2),)
    )
    nodes = [node("x", mixed), node("y", twice)]
    rows = gpu_rows(nodes, [], N)
    assert [(r.node, r.index, r.mode, r.resource, r.replicas) for r in rows] == [
        ("x", 0, "vcuda", "nvidia.com/vcuda-core", 1),
        ("x", 1, "whole", "nvidia.com/gpu", 1),
        ("x", 2, "time-slicing", "nvidia.com/gpu", 4),
    ]
    lines = run(parse_args(["nodes"]), FakeClusterReader(nodes, [])).splitlines()
    assert lines[2].split()[-6:] == ["whole", "nvidia.com/gpu", "1", "-", "-/81920", "-"]
    assert lines[3].split()[-6:] == ["time-slicing", "nvidia.com/gpu", "4", "-", "-/81920", "-"]
    assert lines[4].startswith(
        "# node y: GPU inventory refused, no vcuda shares placed there (inventory: a GPU"
    )
