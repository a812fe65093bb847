"""Read the pods bound to this node into :class:`PendingPod` values. Standard library only.

A pod counts when it is bound here, not finished or being deleted, carries an assignment for this node
signed by the extender *for this pod and its current GPU request* (a copy from another pod, or a pod whose
request changed, is refused), and its status annotation is not final (``allocated`` or ``failed``). The
plugin's own recorded swaps (``PodStatus.moved``) are applied to the assignment. Pods that do not count are
returned with the reason, so the adapter can log them once.
"""

from collections.abc import Mapping
from typing import Any

from plugin.core.attribution import PendingPod, PodRef
from vcuda.annotations import PodStatus, apply_moves, decode_assignment, decode_status
from vcuda.errors import ContractError
from vcuda.model import Phase
from vcuda.names import Names
from vcuda.request import parse_pod_request
from vcuda.signing import Verifier, pod_binding

__all__ = ["pending_pod", "pod_ref", "pod_status"]

_DONE = frozenset({"Succeeded", "Failed"})


def pod_ref(pod: Mapping[str, Any]) -> PodRef:
    meta = pod.get("metadata") or {}
    return PodRef(
        str(meta.get("namespace") or "default"), str(meta.get("name") or ""), str(meta.get("uid") or "")
    )


def _annotation(pod: Mapping[str, Any], key: str) -> str | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    return value if isinstance(value, str) else None


def pod_status(pod: Mapping[str, Any], names: Names) -> PodStatus | None:
    text = _annotation(pod, names.status)
    if text is None:
        return None
    try:
        return decode_status(text)
    except ContractError:
        return None


def pending_pod(pod: Mapping[str, Any], names: Names, verifier: Verifier, node: str) -> PendingPod | str:
    """The pod as a :class:`PendingPod`, or the reason it is not one."""
    meta = pod.get("metadata") or {}
    if (pod.get("status") or {}).get("phase") in _DONE or meta.get("deletionTimestamp"):
        return "finished"
    text = _annotation(pod, names.assignment)
    if text is None:
        return "no assignment"
    status = pod_status(pod, names)
    if status is not None and status.phase in (Phase.ALLOCATED, Phase.FAILED):
        return f"status {status.phase.value}"
    try:
        assignment = decode_assignment(text, pod_binding(pod, names), verifier)
        request = parse_pod_request(pod, names)
    except ContractError as err:
        return f"invalid: {err}"
    if assignment.node != node:
        return f"assigned to node {assignment.node}"
    if status is not None and status.moved:
        assignment = apply_moves(assignment, status.moved)
    allocated = frozenset(status.allocated) if status else frozenset()
    created = str(meta.get("creationTimestamp") or "")
    return PendingPod(pod_ref(pod), created, request, assignment, allocated)
