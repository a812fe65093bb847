"""Read a pod's GPU request from its Kubernetes JSON, validating every rule with a user-facing reason.

Used by the extender (filter, webhook) and the plugin (attribution). Standard library only.
"""

from collections.abc import Mapping
from typing import Any, Final

from vcuda.errors import ContractError, InvalidRequestError
from vcuda.model import Constraints, ContainerRequest, PodRequest, Policy
from vcuda.names import Names
from vcuda.units import CORE_PER_GPU, MAX_GPUS_PER_CONTAINER, parse_quantity

__all__ = ["REASONS", "parse_pod_request", "wants_gpu"]

REASONS: Final = (
    "quantity-invalid",
    "core-invalid",
    "core-too-large",
    "memory-without-core",
    "memory-missing",
    "memory-invalid",
    "core-limit-invalid",
    "policy-invalid",
    "selector-invalid",
)

Pod = Mapping[str, Any]


def wants_gpu(pod: Pod, names: Names) -> bool:
    """True when any container or init container names a vcuda resource (what kube-scheduler checks)."""
    return any(names.core in _resources(c) or names.memory in _resources(c) for c in _all_containers(pod))


def parse_pod_request(pod: Pod, names: Names) -> PodRequest:
    """The pod's validated request; ``containers`` is empty when the pod asks for no GPU.

    Raises :class:`InvalidRequestError` with a stable ``reason`` and a sentence for the user.
    """
    containers = tuple(
        request for c in _all_containers(pod) if (request := _container_request(c, names)) is not None
    )
    annotations = _annotations(pod)
    core_limit = _core_limit(annotations.get(names.core_limit), containers)
    return PodRequest(containers, _constraints(annotations, names), core_limit)


def _all_containers(pod: Pod) -> list[Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    if not isinstance(spec, Mapping):
        return []
    found = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return [c for c in found if isinstance(c, Mapping)]


def _annotations(pod: Pod) -> Mapping[str, Any]:
    meta = pod.get("metadata") or {}
    found = meta.get("annotations") if isinstance(meta, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def _resources(container: Mapping[str, Any]) -> dict[str, Any]:
    """Limits win over requests (for extended resources the API server makes them equal)."""
    resources = container.get("resources") or {}
    if not isinstance(resources, Mapping):
        return {}
    merged: dict[str, Any] = {}
    for part in ("requests", "limits"):
        values = resources.get(part) or {}
        if isinstance(values, Mapping):
            merged.update(values)
    return merged


def _quantity(raw: object, resource: str, container: str) -> int:
    try:
        return parse_quantity(raw)
    except ContractError as err:
        raise InvalidRequestError(
            "quantity-invalid", f"container {container!r}: {resource} {raw!r} is not a whole number"
        ) from err


def _container_request(container: Mapping[str, Any], names: Names) -> ContainerRequest | None:
    name = str(container.get("name", ""))
    resources = _resources(container)
    cores = _quantity(resources.get(names.core, 0), names.core, name)
    memory = _quantity(resources.get(names.memory, 0), names.memory, name)
    if cores == 0 and memory == 0:
        return None
    _check_cores(cores, memory, name, names)
    return ContainerRequest(name=name, cores=cores, memory_mib=memory)


def _check_cores(cores: int, memory: int, name: str, names: Names) -> None:
    where = f"container {name!r}"
    if memory < 0:
        raise InvalidRequestError("memory-invalid", f"{where}: {names.memory} {memory} must be positive")
    if cores == 0:
        raise InvalidRequestError(
            "memory-without-core",
            f"{where}: {names.memory} needs {names.core} too (1..100 for a share of one GPU)",
        )
    if cores < 0 or (cores > CORE_PER_GPU and cores % CORE_PER_GPU):
        raise InvalidRequestError(
            "core-invalid",
            f"{where}: {names.core} {cores} is invalid, use 1..100 or a multiple of 100",
        )
    if cores > CORE_PER_GPU * MAX_GPUS_PER_CONTAINER:
        raise InvalidRequestError(
            "core-too-large",
            f"{where}: {names.core} {cores} asks for more than {MAX_GPUS_PER_CONTAINER} GPUs",
        )
    if cores < CORE_PER_GPU and memory == 0:
        raise InvalidRequestError(
            "memory-missing",
            f"{where}: a share of a GPU ({names.core} {cores}) needs {names.memory} in MiB",
        )


def _core_limit(raw: object, containers: tuple[ContainerRequest, ...]) -> int | None:
    if raw is None:
        return None
    text = str(raw).strip()
    if not text.isdigit() or not 1 <= int(text) <= CORE_PER_GPU:
        raise InvalidRequestError(
            "core-limit-invalid", f"vcuda-core-limit {raw!r} must be a whole percent in 1..100"
        )
    limit = int(text)
    for c in containers:
        if not c.exclusive and limit < c.cores:
            raise InvalidRequestError(
                "core-limit-invalid",
                f"vcuda-core-limit {limit} is below container {c.name!r}'s vcuda-core {c.cores}",
            )
    return limit


def _constraints(annotations: Mapping[str, Any], names: Names) -> Constraints:
    return Constraints(
        include_models=_word_set(annotations.get(names.include_models), lower=True),
        exclude_models=_word_set(annotations.get(names.exclude_models), lower=True),
        include_uuids=_word_set(annotations.get(names.include_uuids)),
        exclude_uuids=_word_set(annotations.get(names.exclude_uuids)),
        gpu_policy=_policy(annotations.get(names.gpu_policy), names.gpu_policy),
        node_policy=_policy(annotations.get(names.node_policy), names.node_policy),
    )


def _word_set(raw: object, *, lower: bool = False) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, str):
        raise InvalidRequestError(
            "selector-invalid", f"GPU selector {raw!r} must be a comma-separated string"
        )
    words = (w.strip() for w in raw.split(","))
    return frozenset(w.lower() if lower else w for w in words if w)


def _policy(raw: object, key: str) -> Policy | None:
    if raw is None:
        return None
    try:
        return Policy(str(raw).strip().lower())
    except ValueError as err:
        allowed = ", ".join(p.value for p in Policy)
        raise InvalidRequestError(
            "policy-invalid", f"{key} {raw!r} is invalid, use one of: {allowed}"
        ) from err
