"""Builders for the extender's cluster-state tests: one bound pod ``p`` (UID ``u1``, 30 cores and 4096 MiB in
container ``c0``) and the assignment signed for it, as the extender's bind writes it."""

from typing import Any

from extender.signing import Ed25519Signer
from tests.builders.vcuda import uuid
from tests.fakes.extender import NAMES, pod_obj
from tests.signing_keys import SIGNER
from vcuda.annotations import encode_assignment
from vcuda.model import ContainerAssignment, GpuShare, NodeName, PodAssignment
from vcuda.signing import pod_binding


def assignment(
    node: str = "n1",
    gpu: int = 0,
    cores: int = 30,
    mib: int = 4096,
    signer: Ed25519Signer = SIGNER,
    **pod_kw: Any,
) -> str:
    """Signed for the pod ``bound_pod(**pod_kw)`` would build (same name, UID, request)."""
    a = PodAssignment(
        NodeName(node), (ContainerAssignment("c0", (GpuShare(uuid(node, gpu), cores, mib),), cores),)
    )
    return encode_assignment(a, pod_binding(bound_pod("", **pod_kw), NAMES), signer)


def bound_pod(text: str, node: str = "n1", **kwargs: Any) -> dict[str, Any]:
    """Pod ``p`` bound to ``node``, carrying the assignment annotation ``text`` (none when empty)."""
    annotations = {NAMES.assignment: text} if text else {}
    return pod_obj("p", (30, 4096), uid="u1", node=node, annotations=annotations, **kwargs)
