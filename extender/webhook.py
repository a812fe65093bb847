"""Admission decisions for pods: validating (the scheduler's own request rules, at ``kubectl apply``) and
mutating (send GPU pods to kube-vgpu's scheduler). Plain values in, AdmissionResponse out; no HTTP here.
"""

import base64
import json
from typing import Any, Final

from extender.api import AdmissionRequest, AdmissionResponse, AdmissionStatus
from vcuda.errors import InvalidRequestError
from vcuda.names import Names
from vcuda.request import parse_pod_request, wants_gpu

__all__ = ["mutate", "validate"]

_DEFAULT_SCHEDULERS: Final = frozenset({"", "default-scheduler"})


def _deny(uid: str, message: str, reason: str) -> AdmissionResponse:
    return AdmissionResponse(
        uid=uid, allowed=False, status=AdmissionStatus(code=422, message=message, reason=reason)
    )


def validate(request: AdmissionRequest, names: Names) -> AdmissionResponse:
    """Deny a pod whose vcuda request can never be scheduled, or that writes kube-vgpu's own annotations."""
    pod = request.object or {}
    if not wants_gpu(pod, names):
        return AdmissionResponse(uid=request.uid, allowed=True)
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    for key in (names.assignment, names.status):
        if isinstance(annotations, dict) and key in annotations:
            return _deny(request.uid, f"annotation {key} is written by kube-vgpu only", "Forbidden")
    try:
        parse_pod_request(pod, names)
    except InvalidRequestError as err:
        return _deny(request.uid, str(err), err.reason)
    return AdmissionResponse(uid=request.uid, allowed=True)


def mutate(request: AdmissionRequest, names: Names, scheduler_name: str | None) -> AdmissionResponse:
    """Set ``spec.schedulerName`` on GPU pods that name no other scheduler (HAMi's rule: never steal a pod
    from a scheduler the user chose)."""
    pod = request.object or {}
    spec = pod.get("spec")
    if not scheduler_name or not isinstance(spec, dict) or not wants_gpu(pod, names):
        return AdmissionResponse(uid=request.uid, allowed=True)
    current = spec.get("schedulerName")
    if current == scheduler_name or (current is not None and current not in _DEFAULT_SCHEDULERS):
        return AdmissionResponse(uid=request.uid, allowed=True)
    patch: list[dict[str, Any]] = [
        {
            "op": "replace" if current is not None else "add",
            "path": "/spec/schedulerName",
            "value": scheduler_name,
        }
    ]
    encoded = base64.b64encode(json.dumps(patch).encode()).decode()
    return AdmissionResponse(uid=request.uid, allowed=True, patchType="JSONPatch", patch=encoded)
