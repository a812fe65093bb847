"""Admission decisions for pods: validating (the scheduler's own request rules, at ``kubectl apply``) and
mutating (send GPU pods to kube-vgpu's scheduler; in namespaces labelled for it, translate NVIDIA's
``nvidia.com/gpu: N`` to ``vcuda-core: N*100``). Plain values in, AdmissionResponse out; no HTTP here.

Translation's trust rule: whether a pod is translated is decided by its namespace's label as the API server
holds it (the caller reads the Namespace and passes ``translate_gpus``), never by anything on the pod, whose
labels and annotations are the tenant's to write. Every quantity is the tenant's too: only a whole
``N`` in ``0..MAX_GPUS_PER_CONTAINER`` is translated; anything else is denied with a reason.
"""

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any, Final

from extender.api import AdmissionRequest, AdmissionResponse, AdmissionStatus
from vcuda.errors import InvalidRequestError, shown
from vcuda.names import NVIDIA_GPU_RESOURCE, Names
from vcuda.request import QuantityError, parse_pod_request, parse_quantity, wants_gpu
from vcuda.units import CORE_PER_GPU, MAX_GPUS_PER_CONTAINER

__all__ = ["TRANSLATION_REASONS", "asks_nvidia_gpu", "mutate", "translate", "validate"]

_DEFAULT_SCHEDULERS: Final = frozenset({"", "default-scheduler"})
_LISTS: Final = ("initContainers", "containers")
"""The container lists whose resources the scheduler counts (``ephemeralContainers`` may have none)."""
_PARTS: Final = ("limits", "requests")
TRANSLATION_REASONS: Final = (
    "mixed-modes",
    "translation-invalid",
    "translation-mixed",
    "translation-too-large",
    "translation-ephemeral",
)
"""Why the webhook denies a pod over NVIDIA's resources, beside the request's own reasons
(:data:`vcuda.request.REASONS`): ``mixed-modes`` (validating, any namespace) and the ``translation-*`` ones
(mutating, in a translating namespace)."""


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
        _one_mode_per_container(pod, names)
    except InvalidRequestError as err:
        return _deny(request.uid, str(err), err.reason)
    return AdmissionResponse(uid=request.uid, allowed=True)


def _nvidia_resource(name: object) -> bool:
    """NVIDIA's GPU resources: ``nvidia.com/gpu`` and renamed replicas (``nvidia.com/gpu.shared``)."""
    return isinstance(name, str) and (
        name == NVIDIA_GPU_RESOURCE or name.startswith(NVIDIA_GPU_RESOURCE + ".")
    )


def _one_mode_per_container(pod: Mapping[str, Any], names: Names) -> None:
    """One GPU, one mode, per container too: a container that asks for vcuda shares and for NVIDIA's whole
    GPUs or replicas would get two device answers whose visible-GPU lists overwrite each other."""
    for field in _LISTS:
        for container in _containers(pod, field):
            resources = container.get("resources") if isinstance(container, Mapping) else None
            named: set[object] = set()
            for part in _PARTS:
                values = resources.get(part) if isinstance(resources, Mapping) else None
                named |= set(values) if isinstance(values, Mapping) else set()
            nvidia = sorted(str(n) for n in named if _nvidia_resource(n))
            if nvidia and named & {names.core, names.memory}:
                raise InvalidRequestError(
                    "mixed-modes",
                    f"container {_name(container)}: asks for {names.core} and {nvidia[0]} at once; one GPU, "
                    "one mode: a container gets vcuda shares or NVIDIA's whole GPUs or replicas, not both",
                )


def _names_default(scheduler: object) -> bool:
    """Whether ``spec.schedulerName`` leaves the choice to the default scheduler (a non-string names none:
    the API server refuses the pod anyway, and the webhook must not fail on it)."""
    return isinstance(scheduler, str) and scheduler in _DEFAULT_SCHEDULERS


def mutate(
    request: AdmissionRequest, names: Names, scheduler_name: str | None, *, translate_gpus: bool = False
) -> AdmissionResponse:
    """In a translating namespace (``translate_gpus``, from the Namespace's label), rewrite ``nvidia.com/gpu``
    to ``vcuda-core`` (:func:`translate`); then set ``spec.schedulerName`` on GPU pods that name no other
    scheduler (HAMi's rule: never steal a pod from a scheduler the user chose)."""
    pod = request.object or {}
    patch: list[dict[str, Any]] = []
    if translate_gpus and asks_nvidia_gpu(pod):
        try:
            patch, pod = translate(pod, names)
        except InvalidRequestError as err:
            return _deny(request.uid, str(err), err.reason)
    patch += _scheduler_patch(pod, names, scheduler_name)
    if not patch:
        return AdmissionResponse(uid=request.uid, allowed=True)
    encoded = base64.b64encode(json.dumps(patch).encode()).decode()
    return AdmissionResponse(uid=request.uid, allowed=True, patchType="JSONPatch", patch=encoded)


def _scheduler_patch(
    pod: Mapping[str, Any], names: Names, scheduler_name: str | None
) -> list[dict[str, Any]]:
    spec = pod.get("spec")
    if not scheduler_name or not isinstance(spec, dict) or not wants_gpu(pod, names):
        return []
    current = spec.get("schedulerName")
    if current == scheduler_name or (current is not None and not _names_default(current)):
        return []
    return [
        {
            "op": "replace" if current is not None else "add",
            "path": "/spec/schedulerName",
            "value": scheduler_name,
        }
    ]


# --- translation of nvidia.com/gpu ---------------------------------------------------------------


def _containers(pod: Mapping[str, Any], field: str) -> list[Any]:
    spec = pod.get("spec")
    found = spec.get(field) if isinstance(spec, Mapping) else None
    return found if isinstance(found, list) else []


def _parts(container: object) -> dict[str, Mapping[str, Any]]:
    """The container's ``limits`` and ``requests`` maps that name ``nvidia.com/gpu``."""
    resources = container.get("resources") if isinstance(container, Mapping) else None
    if not isinstance(resources, Mapping):
        return {}
    return {
        part: values
        for part in _PARTS
        if isinstance(values := resources.get(part), Mapping) and NVIDIA_GPU_RESOURCE in values
    }


def asks_nvidia_gpu(pod: Mapping[str, Any]) -> bool:
    """Whether any container (init and ephemeral ones included) names ``nvidia.com/gpu``."""
    return any(_parts(c) for field in (*_LISTS, "ephemeralContainers") for c in _containers(pod, field))


def translate(pod: Mapping[str, Any], names: Names) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The JSONPatch that rewrites every ``nvidia.com/gpu: N`` to ``vcuda-core: N*100`` (N whole GPUs, their
    whole memory: a multiple of 100 without ``vcuda-memory`` is exclusive) and the translated pod.
    ``nvidia.com/gpu: 0`` asks for nothing and is removed.

    Raises :class:`InvalidRequestError` for what cannot be translated: a quantity that is not a whole number,
    negative or above :data:`MAX_GPUS_PER_CONTAINER`; limits and requests that differ; a container that asks
    for ``nvidia.com/gpu`` and vcuda resources at once (which one would it mean?); an ephemeral container
    with a GPU; or a translated pod that breaks kube-vgpu's own request rules (too many GPU containers)."""
    for c in _containers(pod, "ephemeralContainers"):
        if _parts(c):
            raise InvalidRequestError(
                "translation-ephemeral",
                f"ephemeral container {_name(c)}: asks for {NVIDIA_GPU_RESOURCE}; "
                "ephemeral containers get no GPU",
            )
    out: dict[str, Any] = copy.deepcopy(dict(pod))
    patch: list[dict[str, Any]] = []
    for field in _LISTS:
        for i, container in enumerate(_containers(out, field)):
            for part, values in _translated(container, names).items():
                container["resources"][part] = values
                patch.append(
                    {"op": "replace", "path": f"/spec/{field}/{i}/resources/{part}", "value": values}
                )
    parse_pod_request(out, names)  # the translated pod obeys the request rules, or the user reads why not
    return patch, out


def _translated(container: Mapping[str, Any], names: Names) -> dict[str, dict[str, Any]]:
    """The container's new ``limits`` / ``requests`` maps (only those that named ``nvidia.com/gpu``)."""
    parts = _parts(container)
    if not parts:
        return {}
    where = f"container {_name(container)}"
    counts = {_gpu_count(values[NVIDIA_GPU_RESOURCE], where) for values in parts.values()}
    if len(counts) > 1:
        raise InvalidRequestError(
            "translation-invalid", f"{where}: {NVIDIA_GPU_RESOURCE} limits and requests differ"
        )
    gpus = counts.pop()
    resources = container.get("resources")
    assert isinstance(resources, Mapping)
    for part in _PARTS:
        values = resources.get(part)
        if gpus and isinstance(values, Mapping) and (names.core in values or names.memory in values):
            raise InvalidRequestError(
                "translation-mixed",
                f"{where}: asks for {NVIDIA_GPU_RESOURCE} and {names.core}/{names.memory} at once; "
                f"ask for one ({NVIDIA_GPU_RESOURCE}: N is translated to {names.core}: N*{CORE_PER_GPU})",
            )
    out = {}
    for part, values in parts.items():
        kept = {k: v for k, v in values.items() if k != NVIDIA_GPU_RESOURCE}
        out[part] = {**kept, names.core: str(gpus * CORE_PER_GPU)} if gpus else kept
    return out


def _gpu_count(raw: object, where: str) -> int:
    try:
        gpus = parse_quantity(raw)
    except QuantityError as err:
        raise InvalidRequestError(
            "translation-invalid",
            f"{where}: {NVIDIA_GPU_RESOURCE} {shown(raw)} is not a GPU count ({err})",
        ) from err
    if gpus < 0:
        raise InvalidRequestError("translation-invalid", f"{where}: {NVIDIA_GPU_RESOURCE} {gpus} is negative")
    if gpus > MAX_GPUS_PER_CONTAINER:
        raise InvalidRequestError(
            "translation-too-large",
            f"{where}: {NVIDIA_GPU_RESOURCE} {shown(raw)} asks for more than {MAX_GPUS_PER_CONTAINER} GPUs",
        )
    return gpus


def _name(container: object) -> str:
    name = container.get("name") if isinstance(container, Mapping) else None
    return shown(name) if name is not None else "(unnamed)"
