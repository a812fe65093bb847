"""Admission decisions for pods: validating (the scheduler's own request rules, at ``kubectl apply``) and
mutating (send GPU pods to kube-vgpu's scheduler). Plain values in, AdmissionResponse out; no HTTP here.
"""

import base64
import json
from collections.abc import Mapping
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
    meta = pod.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    for key in (names.assignment, names.status):
        if isinstance(annotations, Mapping) and key in annotations:
            return _deny(request.uid, f"annotation {key} is written by kube-vgpu only", "Forbidden")
    try:
        parse_pod_request(pod, names)
    except InvalidRequestError as err:
        return _deny(request.uid, str(err), err.reason)
    return AdmissionResponse(uid=request.uid, allowed=True)


def _names_default(scheduler: object) -> bool:
    """Whether ``spec.schedulerName`` leaves the choice to the default scheduler (a non-string names none:
    the API server refuses the pod anyway, and the webhook must not fail on it)."""
    return isinstance(scheduler, str) and scheduler in _DEFAULT_SCHEDULERS


def mutate(request: AdmissionRequest, names: Names, scheduler_name: str | None) -> AdmissionResponse:
    """Set ``spec.schedulerName`` on GPU pods that name no other scheduler (HAMi's rule: never steal a pod
    from a scheduler the user chose)."""
    pod = request.object or {}
    spec = pod.get("spec")
    if not scheduler_name or not isinstance(spec, dict) or not wants_gpu(pod, names):
        return AdmissionResponse(uid=request.uid, allowed=True)
    current = spec.get("schedulerName")
    if current == scheduler_name or (current is not None and not _names_default(current)):
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
