"""The extender's signed, pod-bound assignment annotation (``"v": 2``) and the plugin's recorded moves.

The signature (Ed25519, by the extender only) covers the canonical JSON of the document, which names the pod
it is for and a digest of its GPU request (:mod:`vcuda.signing`): a user who writes the annotation by hand, or
copies another pod's, gets nothing. The plugin never re-signs; what it changes (a swap of two interchangeable
containers) it records in its own status annotation, applied with :func:`apply_moves`. Standard library only.
"""

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from vcuda.errors import ContractError
from vcuda.jsondoc import dumps, get, items, load, obj
from vcuda.model import ContainerAssignment, GpuShare, GpuUuid, NodeName, PodAssignment
from vcuda.signing import PodBinding, Signer, Verifier
from vcuda.units import CORE_PER_GPU

__all__ = [
    "ASSIGNMENT_VERSION",
    "REFUSALS",
    "AssignmentRefusedError",
    "apply_moves",
    "decode_assignment",
    "decode_assignment_unverified",
    "encode_assignment",
    "read_share",
    "shares_doc",
]

ASSIGNMENT_VERSION: Final = 2
"""Version 2 is signed with Ed25519 and bound to its pod; version 1 (HMAC, node-bound only) is refused."""
_SIGNED_CONTEXT: Final = b"kube-vgpu/assignment/v2\n"


class AssignmentRefusedError(ContractError):
    """A well-formed assignment that must not be honoured. ``reason`` is one of :data:`REFUSALS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


REFUSALS: Final = ("unsigned", "other-pod", "request-changed")


def shares_doc(shares: tuple[GpuShare, ...]) -> list[dict[str, Any]]:
    return [{"uuid": s.uuid, "cores": s.cores, "memoryMiB": s.memory_mib} for s in shares]


def _assignment_doc(assignment: PodAssignment, pod: PodBinding, kid: str) -> dict[str, Any]:
    return {
        "v": ASSIGNMENT_VERSION,
        "kid": kid,
        "pod": {"uid": pod.uid, "namespace": pod.namespace, "name": pod.name},
        "request": pod.request,
        "node": assignment.node,
        "containers": [
            {"name": c.name, "coreLimit": c.core_limit, "gpus": shares_doc(c.shares)}
            for c in assignment.containers
        ],
    }


def _payload(doc: Mapping[str, Any]) -> bytes:
    return _SIGNED_CONTEXT + dumps(doc).encode()


def encode_assignment(assignment: PodAssignment, pod: PodBinding, signer: Signer) -> str:
    """The signed annotation for ``assignment`` on the pod ``pod`` describes."""
    doc = _assignment_doc(assignment, pod, signer.key_id)
    signature = base64.b64encode(signer.sign(_payload(doc))).decode()
    return dumps({**doc, "sig": signature})


@dataclass(frozen=True, slots=True)
class _Signed:
    assignment: PodAssignment
    pod: PodBinding
    kid: str
    signature: bytes


def _read_signed(text: str) -> _Signed:
    doc = load(text, "assignment", ASSIGNMENT_VERSION)
    what = "assignment"
    owner = obj(doc.get("pod"), "assignment pod")
    try:
        signature = base64.b64decode(get(doc, "sig", str, what), validate=True)
    except ValueError as err:
        raise ContractError(f"{what}: 'sig' is not base64") from err
    return _Signed(
        assignment=PodAssignment(
            node=NodeName(get(doc, "node", str, what)),
            containers=items(doc, "containers", what, _read_container),
        ),
        pod=PodBinding(
            uid=get(owner, "uid", str, "assignment pod"),
            namespace=get(owner, "namespace", str, "assignment pod"),
            name=get(owner, "name", str, "assignment pod"),
            request=get(doc, "request", str, what),
        ),
        kid=get(doc, "kid", str, what),
        signature=signature,
    )


def decode_assignment(text: str, pod: PodBinding, verifier: Verifier) -> PodAssignment:
    """Decode, verify the signature and check the assignment is this pod's, for its current request.

    Malformed text is a :class:`ContractError`; a bad or unknown-key signature, a copy from another pod, or
    a pod whose GPU request changed after signing is an :class:`AssignmentRefusedError` with its ``reason``.
    """
    signed = _read_signed(text)
    doc = _assignment_doc(signed.assignment, signed.pod, signed.kid)
    if not verifier.verify(signed.kid, _payload(doc), signed.signature):
        raise AssignmentRefusedError(
            "unsigned", f"assignment annotation is not signed by a kube-vgpu key (key ID {signed.kid!r})"
        )
    if (signed.pod.uid, signed.pod.namespace, signed.pod.name) != (pod.uid, pod.namespace, pod.name):
        raise AssignmentRefusedError(
            "other-pod", f"assignment was signed for pod {signed.pod.label}, not for {pod.label}"
        )
    if signed.pod.request != pod.request:
        raise AssignmentRefusedError(
            "request-changed", f"the GPU request of pod {pod.label} changed after its assignment was signed"
        )
    return signed.assignment


def decode_assignment_unverified(text: str) -> PodAssignment:
    """Decode without checking the signature or the pod, for read-only display by tools that hold no key
    (``kubectl vgpu``). Never grant anything on the strength of the result."""
    return _read_signed(text).assignment


def _read_container(raw: object) -> ContainerAssignment:
    doc = obj(raw, "assignment container")
    what = "assignment container"
    shares = items(doc, "gpus", what, read_share)
    limit = get(doc, "coreLimit", int, what)
    if not shares or not 0 < limit <= CORE_PER_GPU:
        raise ContractError(f"{what}: needs GPUs and a coreLimit in 1..100")
    return ContainerAssignment(name=get(doc, "name", str, what), shares=shares, core_limit=limit)


def read_share(raw: object) -> GpuShare:
    doc = obj(raw, "assignment GPU")
    share = GpuShare(
        uuid=GpuUuid(get(doc, "uuid", str, "assignment GPU")),
        cores=get(doc, "cores", int, "assignment GPU"),
        memory_mib=get(doc, "memoryMiB", int, "assignment GPU"),
    )
    if not 0 < share.cores <= CORE_PER_GPU or share.memory_mib < 0:
        raise ContractError(f"assignment GPU {share.uuid}: cores or memory out of range")
    return share


def apply_moves(
    assignment: PodAssignment, moved: Iterable[tuple[str, tuple[GpuShare, ...]]]
) -> PodAssignment:
    """The assignment after the plugin's recorded swaps (``PodStatus.moved``). A move counts only when it
    names a container of the assignment and keeps that container's (cores, MiB) per GPU, changing only
    which of the node's GPUs: the plugin swaps interchangeable containers and can do nothing else."""

    by_name = dict(moved)

    def moved_to(c: ContainerAssignment) -> tuple[GpuShare, ...]:
        shares = by_name.get(c.name)
        if shares is None or sorted((s.cores, s.memory_mib) for s in shares) != sorted(
            (s.cores, s.memory_mib) for s in c.shares
        ):
            return c.shares
        return shares

    containers = tuple(replace(c, shares=moved_to(c)) for c in assignment.containers)
    return PodAssignment(assignment.node, containers)
