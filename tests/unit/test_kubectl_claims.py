"""``kubectl vgpu claims`` (kube_vgpu_kubectl/claims.py): the DRA driver's claims and their shares.

Cases: a share allocated by the simulated scheduler from the driver's slices shows its node, device, cores,
memory and soft limit, with the pod it is reserved for; a whole GPU shows ``all``; a claim of the driver's
class not yet allocated is pending, another driver's claims are left out; a claim with a field of the wrong
type is one ``invalid`` row, not a failed listing; the table and the JSON through ``run``. The official
client's ``ResourceV1Api`` against the simulated API server: tests/integration/test_kubectl_claims_kmock.py.
"""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube_vgpu_kubectl.claims import ClaimRow, claim_rows
from kube_vgpu_kubectl.cli import parse_args, run
from tests.builders.dra_claims import NODE, allocated, claim, share

DOMAIN = "nvidia.com"
SOFT = {"opaque": {"driver": "kube-vgpu.nvidia.com",
                   "parameters": {"apiVersion": "nvidia.com/v1alpha1", "kind": "GpuShareParameters", "coreLimit": 60}}}  # fmt: skip


def test_a_share_shows_its_node_device_share_soft_limit_and_pod() -> None:
    rows = claim_rows([allocated("a", share("30", "4Gi"), config=[SOFT | {"requests": ["gpu"]}])], DOMAIN)
    assert rows == [
        ClaimRow("default", "a", "allocated", NODE, "gpu-node-1-0000", "30", "4096", "60", ("default/a-pod",))
    ]


def test_a_whole_gpu_takes_all() -> None:
    (row,) = claim_rows([allocated("w", share(cls="gpu.nvidia.com"))], DOMAIN)
    assert (row.cores, row.memory_mib) == ("100", "81559")
    exclusive = allocated("x", share(cls="gpu.nvidia.com"))
    del exclusive["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"]
    (row,) = claim_rows([exclusive], DOMAIN)
    assert (row.cores, row.memory_mib) == ("all", "all")


def test_pending_claims_of_our_classes_only_and_other_drivers_left_out() -> None:
    theirs = allocated("t", share("10", "1Gi"))
    theirs["status"]["allocation"]["devices"]["results"][0]["driver"] = "gpu.example.com"
    other_class = claim("o", {"name": "n", "exactly": {"deviceClassName": "nic.example.com"}})
    rows = claim_rows([claim("p", share("10", "1Gi")), other_class, theirs], DOMAIN)
    assert rows == [ClaimRow("default", "p", "pending")]


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(
            lambda c: c["status"]["allocation"]["devices"].update(results="x"), id="results not a list"
        ),
        pytest.param(
            lambda c: c["status"]["allocation"]["devices"]["results"][0].update(
                consumedCapacity={"cores": "1e999999"}
            ),
            id="a quantity out of bounds",
        ),
        pytest.param(
            lambda c: c["status"].update(reservedFor=[{"resource": "pods"}]), id="a reservation without name"
        ),
    ],
)
def test_a_malformed_claim_is_one_invalid_row(break_it: Any) -> None:
    bad = allocated("bad", share("10", "1Gi"))
    break_it(bad)
    rows = claim_rows([bad, allocated("good", share("10", "1Gi"))], DOMAIN)
    assert [(r.claim, r.state) for r in rows] == [("bad", "invalid"), ("good", "allocated")]


class Claims:
    def __init__(self, claims: list[dict[str, Any]]) -> None:
        self.claims = claims

    def list_nodes(self) -> list[Any]:
        return []

    def list_pods(self, namespace: str | None) -> list[Any]:
        return []

    def list_resource_claims(self, namespace: str | None) -> list[dict[str, Any]]:
        return [c for c in self.claims if namespace in (None, c["metadata"]["namespace"])]


def test_the_claims_command_prints_a_table_and_json() -> None:
    reader = Claims([allocated("a", share("30", "4Gi"))])
    table = run(parse_args(["claims", "-n", "default"]), reader)
    assert table.splitlines()[0].split() == [
        "NAMESPACE",
        "CLAIM",
        "STATE",
        "NODE",
        "DEVICE",
        "CORES",
        "MEMORY(MiB)",
        "CORE-LIMIT",
        "PODS",
    ]
    assert table.splitlines()[1].split() == [
        "default",
        "a",
        "allocated",
        NODE,
        "gpu-node-1-0000",
        "30",
        "4096",
        "-",
        "default/a-pod",
    ]
    doc = json.loads(run(parse_args(["claims", "-A", "-o", "json"]), reader))
    assert doc["claims"][0]["cores"] == "30"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["metadata", "status", "allocation", "devices", "results", "driver", "consumedCapacity", "cores", "memory",
         "reservedFor", "resource", "name", "config", "opaque", "parameters", "coreLimit", "spec", "requests"]),
        inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(st.lists(JSON, max_size=3))
def test_any_json_for_claims_lists_without_raising(claims: list[Any]) -> None:
    """Whatever the API server answers (a claim of any shape), the listing never fails: a row is allocated,
    pending or invalid."""
    rows = claim_rows([c for c in claims if isinstance(c, dict)], DOMAIN)
    assert all(r.state in ("allocated", "pending", "invalid") for r in rows)


def test_nodes_lists_a_dra_nodes_gpus_with_what_claims_take() -> None:
    from kube_vgpu_kubectl.cli import gpu_rows
    from vcuda.annotations import encode_inventory
    from vcuda.model import GpuMode, GpuUuid, NodeInventory, OtherModeGpu
    from vcuda.names import Names

    others = tuple(
        OtherModeGpu(GpuUuid(f"GPU-node-1-000{i}"), i, "NVIDIA H100 80GB HBM3", 81559, GpuMode.DRA, "kube-vgpu.nvidia.com")
        for i in range(2)
    )  # fmt: skip
    inventory = NodeInventory((), other=others)
    node = {"metadata": {"name": NODE, "annotations": {Names().inventory: encode_inventory(inventory)}}}
    claims = [allocated("a", share("30", "4Gi")), allocated("b", share("20", "2Gi"))]
    rows = gpu_rows([node], [], Names(), claims)
    assert [(r.index, r.cores_allocated, r.memory_allocated_mib, r.pods) for r in rows] == [
        (0, 50, 6144, ("default/a-pod", "default/b-pod")),
        (1, 0, 0, ()),
    ]
