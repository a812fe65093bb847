"""Builders of the API objects kubectl-vgpu reads: nodes with inventories and pods with signed assignments,
and one cluster of them (NODES, PODS) holding each case its tables must show."""

from typing import Any

from extender.signing import Ed25519Signer
from tests.builders.vcuda import gpu, nvswitch_node
from tests.signing_keys import OTHER_SIGNER, SIGNER
from vcuda.annotations import (
    PodStatus,
    encode_assignment,
    encode_inventory,
    encode_status,
)
from vcuda.model import (
    ContainerAssignment,
    GpuShare,
    NodeInventory,
    NodeName,
    Phase,
    PodAssignment,
)
from vcuda.names import Names
from vcuda.signing import pod_binding

N = Names()
KEY = SIGNER


def node(name: str, inventory: NodeInventory | None) -> dict[str, Any]:
    annotations = {} if inventory is None else {N.inventory: encode_inventory(inventory)}
    return {"metadata": {"name": name, "annotations": annotations}}


def pod(ns: str, name: str, node_name: str, shares: Any, *, phase: str = "Running", status: Phase | None = None,
        key: Ed25519Signer = KEY, annotation: str | None = None, requests: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    assignment = PodAssignment(
        NodeName(node_name),
        tuple(
            ContainerAssignment(c, tuple(GpuShare(u, cores, mib) for u, cores, mib in s), limit)
            for c, s, limit in shares
        ),
    )
    container = {"name": "main", "resources": {"limits": requests or {}}}
    body: dict[str, Any] = {
        "metadata": {"namespace": ns, "name": name, "annotations": {}},
        "spec": {"nodeName": node_name, "containers": [container]},
        "status": {"phase": phase},
    }
    signed = encode_assignment(assignment, pod_binding(body, N), key) if annotation is None else annotation
    annotations = {N.assignment: signed}
    if status is not None:
        annotations[N.status] = encode_status(PodStatus(status))
    if not shares and annotation is None:
        annotations = {}
    body["metadata"]["annotations"] = annotations
    return body


A = nvswitch_node(2, node="a")
G0, G1 = A.gpus[0].uuid, A.gpus[1].uuid
NODES = [
    node("a", A),
    node("b", NodeInventory((gpu(0, node="b", memory_mib=24576, model="NVIDIA A10", healthy=False),))),
    node("cpu", None),
]
PODS = [
    pod("ml", "train", "a", [("trainer", [(G0, 50, 20480), (G1, 50, 20480)], 80)], status=Phase.ALLOCATED),
    pod("ml", "serve", "a", [("model", [(G1, 30, 10240)], 30)]),
    pod("ml", "done", "a", [("x", [(G0, 40, 1024)], 40)], phase="Succeeded"),
    pod("ml", "oops", "a", [("x", [(G0, 40, 1024)], 40)], status=Phase.FAILED),
    pod("web", "forged", "a", [("x", [(G0, 10, 512)], 10)], key=OTHER_SIGNER),
    pod("web", "broken", "a", [], annotation="{not json"),
    pod("web", "waiting", "", [], phase="Pending", requests={N.core: "20", N.memory: "1024"}),
    pod("web", "plain", "a", [], requests={"cpu": "1"}),
]
