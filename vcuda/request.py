"""Read a pod's GPU request from its Kubernetes JSON, validating every rule with a user-facing reason.

Used by the extender (filter, bind, webhook) and the plugin (attribution). Standard library only.

Every input here may come from a tenant or from anyone who reaches a kube-vgpu port, so parsing is bounded:
a quantity is refused on its length and exponent before any arithmetic (``1e500000`` costs as little as
``30``), a value is shown in a message cut to a few dozen characters, and wrong types are reasons, not
exceptions.
"""

import re
from collections.abc import Mapping
from typing import Any, Final

from vcuda.errors import ContractError, InvalidRequestError, shown
from vcuda.model import Constraints, ContainerKind, ContainerRequest, PodRequest, Policy
from vcuda.names import Names
from vcuda.units import CORE_PER_GPU, MAX_GPUS_PER_CONTAINER

__all__ = [
    "MAX_GPU_CONTAINERS",
    "MAX_QUANTITY",
    "MAX_QUANTITY_CHARS",
    "REASONS",
    "QuantityError",
    "effective_totals",
    "parse_pod_request",
    "parse_quantity",
    "wants_gpu",
]

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
    "too-many-containers",
)

Pod = Mapping[str, Any]

MAX_QUANTITY_CHARS: Final = 64
"""Longer quantities are refused unread. The API server's own canonical forms are a few characters; 64 leaves
room for any honest spelling (``0.000000000000000000000000000001E+32``)."""
MAX_QUANTITY: Final = 2**63 - 1
"""The API server's quantities are int64 (``resource.Quantity`` caps there); anything larger is refused."""
_MAX_DIGITS: Final = len(str(MAX_QUANTITY))
_MIN_SCALE: Final = -2 * MAX_QUANTITY_CHARS
"""Below ``10**_MIN_SCALE`` a non-zero value of at most 64 digits can never be whole (5**k must divide it)."""
MAX_GPU_CONTAINERS: Final = 64
"""GPU containers (app, init and sidecar, each asking for ``vcuda`` resources) one pod may have. Kubernetes
sets no limit and counts only the largest init container in a pod's fit, so a tenant's pod could carry
thousands; placing init and sidecar containers recurses once per container, and the cost per node grows with
their number. Real GPU pods have a handful."""
_QUANTITY: Final = re.compile(
    r"(?P<sign>[+-]?)(?P<whole>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?:(?P<suffix>[KMGTPE]i|[mkMGTPE])|[eE](?P<exp>[+-]?[0-9]+))?"
)
"""Kubernetes' quantity grammar (``<signedNumber><suffix>``; the exponent is a suffix, so ``1e3Mi`` is not a
quantity). Matched only on at most :data:`MAX_QUANTITY_CHARS` characters: linear, no backtracking blow-up."""
_PERCENT: Final = re.compile(r"[0-9]{1,3}")
_DECIMAL: Final = {"": 0, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def wants_gpu(pod: Pod, names: Names) -> bool:
    """True when any container or init container names a vcuda resource (what kube-scheduler checks)."""
    return any(names.core in _resources(c) or names.memory in _resources(c) for c in _all_containers(pod))


def parse_pod_request(pod: Pod, names: Names) -> PodRequest:
    """The pod's validated request; ``containers`` is empty when the pod asks for no GPU.

    Raises :class:`InvalidRequestError` with a stable ``reason`` and a sentence for the user.
    """
    containers = tuple(
        request
        for c, kind in _kinded_containers(pod)
        if (request := _container_request(c, names, kind)) is not None
    )
    if len(containers) > MAX_GPU_CONTAINERS:
        raise InvalidRequestError(
            "too-many-containers",
            f"the pod asks for GPUs in {len(containers)} containers (init containers included); "
            f"kube-vgpu places at most {MAX_GPU_CONTAINERS} GPU containers per pod",
        )
    annotations = _annotations(pod)
    core_limit = _core_limit(annotations.get(names.core_limit), containers)
    return PodRequest(containers, _constraints(annotations, names), core_limit)


def _all_containers(pod: Pod) -> list[Mapping[str, Any]]:
    return [c for c, _ in _kinded_containers(pod)]


def _kinded_containers(pod: Pod) -> list[tuple[Mapping[str, Any], ContainerKind]]:
    """Init containers (sidecars among them) then app containers: the order the kubelet admits them."""
    spec = pod.get("spec") or {}
    if not isinstance(spec, Mapping):
        return []
    init, app = spec.get("initContainers"), spec.get("containers")
    out = [(c, _init_kind(c)) for c in (init if isinstance(init, list) else []) if isinstance(c, Mapping)]
    return out + [
        (c, ContainerKind.APP) for c in (app if isinstance(app, list) else []) if isinstance(c, Mapping)
    ]


def _init_kind(container: Mapping[str, Any]) -> ContainerKind:
    """``restartPolicy: Always`` makes an init container a sidecar (``IsRestartableInitContainer``)."""
    return ContainerKind.SIDECAR if container.get("restartPolicy") == "Always" else ContainerKind.INIT


def effective_totals(request: PodRequest) -> tuple[int, int]:
    """The pod's (``vcuda-core``, ``vcuda-memory``) as the kube-scheduler and kubelet count them
    (``component-helpers`` ``PodRequests``): the larger of the app containers plus sidecars and of each init
    container plus the sidecars started before it; never the sum of init and app containers."""
    app = [0, 0]
    sidecars = [0, 0]
    peak = [0, 0]
    for c in request.containers:
        amount = (c.cores, c.memory_mib)
        if c.kind is ContainerKind.APP:
            app = [a + b for a, b in zip(app, amount, strict=True)]
            continue
        if c.kind is ContainerKind.SIDECAR:
            sidecars = [a + b for a, b in zip(sidecars, amount, strict=True)]
            app = [a + b for a, b in zip(app, amount, strict=True)]
            running = sidecars
        else:
            running = [a + b for a, b in zip(sidecars, amount, strict=True)]
        peak = [max(a, b) for a, b in zip(peak, running, strict=True)]
    return max(app[0], peak[0]), max(app[1], peak[1])


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


class QuantityError(ContractError):
    """A quantity that is not a whole number kube-vgpu can use; the message says why."""


def parse_quantity(raw: object) -> int:
    """A Kubernetes quantity that must be a whole number (extended resources are integers), in bounded time.

    Accepts a JSON integer or a quantity string (``4096``, ``4Ki``, ``1e3``, ``0.5Ki``); refuses, with the
    reason in the message, anything else: other types, more than :data:`MAX_QUANTITY_CHARS` characters, text
    outside the grammar, fractions, magnitudes past :data:`MAX_QUANTITY`. Length and exponent are checked
    before any arithmetic, so every answer costs about the same.

    >>> parse_quantity("4096"), parse_quantity("1k"), parse_quantity(30), parse_quantity("0.5Ki")
    (4096, 1000, 30, 512)
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        if -MAX_QUANTITY <= raw <= MAX_QUANTITY:
            return raw
        raise QuantityError("too large")
    if isinstance(raw, float):
        raw = repr(raw)  # a JSON number with a fraction or exponent: judged by the grammar like a string
    if not isinstance(raw, str):
        raise QuantityError(f"a quantity is a string or an integer, not {type(raw).__name__}")
    if len(raw) > MAX_QUANTITY_CHARS:
        raise QuantityError(f"longer than {MAX_QUANTITY_CHARS} characters")
    match = _QUANTITY.fullmatch(raw.strip())
    if match is None or not (match["whole"] or match["frac"]):
        raise QuantityError("not a Kubernetes quantity")
    return _value(match)


def _value(match: "re.Match[str]") -> int:
    """The matched quantity's exact value; the scale is bounded before any power is taken."""
    digits = (match["whole"] + (match["frac"] or "")).lstrip("0")
    stripped = digits.rstrip("0")
    if not stripped:
        return 0
    exponent = match["exp"] or "0"
    if len(exponent.lstrip("+-").lstrip("0")) > 4:
        raise QuantityError("too large" if not exponent.startswith("-") else "not a whole number")
    suffix = match["suffix"] or ""
    scale = int(exponent) + _DECIMAL.get(suffix, 0) - len(match["frac"] or "") + len(digits) - len(stripped)
    twos = _BINARY.get(suffix, 0)
    if len(stripped) + scale + twos * 0.302 > _MAX_DIGITS + 1:
        raise QuantityError("too large")
    if scale < _MIN_SCALE:
        raise QuantityError("not a whole number")
    numerator: int = int(stripped) << twos
    whole: int
    if scale < 0:
        whole, rest = divmod(numerator, 10**-scale)
        if rest:
            raise QuantityError("not a whole number")
    else:
        whole = numerator * 10**scale
    if whole > MAX_QUANTITY:
        raise QuantityError("too large")
    return -whole if match["sign"] == "-" else whole


def _quantity(raw: object, resource: str, container: str) -> int:
    try:
        return parse_quantity(raw)
    except QuantityError as err:
        raise InvalidRequestError(
            "quantity-invalid",
            f"container {shown(container)}: {resource} {shown(raw)} is not a whole number ({err})",
        ) from err


def _container_request(
    container: Mapping[str, Any], names: Names, kind: ContainerKind = ContainerKind.APP
) -> ContainerRequest | None:
    raw_name = container.get("name", "")
    name = raw_name if isinstance(raw_name, str) else shown(raw_name)
    resources = _resources(container)
    cores = _quantity(resources.get(names.core, 0), names.core, name)
    memory = _quantity(resources.get(names.memory, 0), names.memory, name)
    if cores == 0 and memory == 0:
        return None
    _check_cores(cores, memory, name, names)
    return ContainerRequest(name=name, cores=cores, memory_mib=memory, kind=kind)


def _check_cores(cores: int, memory: int, name: str, names: Names) -> None:
    where = f"container {shown(name)}"
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
    text = raw.strip() if isinstance(raw, str) else ""
    if _PERCENT.fullmatch(text) is None or not 1 <= int(text) <= CORE_PER_GPU:
        raise InvalidRequestError(
            "core-limit-invalid", f"vcuda-core-limit {shown(raw)} must be a whole percent in 1..100"
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
            "selector-invalid", f"GPU selector {shown(raw)} must be a comma-separated string"
        )
    words = (w.strip() for w in raw.split(","))
    return frozenset(w.lower() if lower else w for w in words if w)


def _policy(raw: object, key: str) -> Policy | None:
    if raw is None:
        return None
    try:
        return Policy(raw.strip().lower() if isinstance(raw, str) else "")
    except ValueError as err:
        allowed = ", ".join(p.value for p in Policy)
        raise InvalidRequestError(
            "policy-invalid", f"{key} {shown(raw)} is invalid, use one of: {allowed}"
        ) from err
