"""The kube-scheduler extender wire format as Go's ``encoding/json`` writes and reads it (contracts §3).

Requests are built with the Go field names (PascalCase, no json tags, nil as ``null``). Replies are decoded
the way Go decodes them, so that the SIMULATED scheduler fails where the real one would: keys match
case-insensitively (an exact match wins), unknown keys are ignored, and a non-integer number in an ``int64``
field (``"Score": 5.0``) or a value of the wrong JSON type is an error.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BindingResult",
    "FilterResult",
    "HostPriority",
    "WireError",
    "binding_args",
    "decode_binding_result",
    "decode_filter_result",
    "decode_host_priority_list",
    "extender_args",
]


class WireError(ValueError):
    """A reply Go's ``encoding/json`` would refuse to decode into the extender types."""


class _GoFloat(str):
    """A JSON number with a fraction or exponent: never decodable into an ``int64``."""


@dataclass(frozen=True, slots=True)
class FilterResult:
    nodes: list[dict[str, Any]] | None
    node_names: list[str] | None
    failed: dict[str, str]
    failed_unresolvable: dict[str, str]
    error: str


@dataclass(frozen=True, slots=True)
class HostPriority:
    host: str
    score: int


@dataclass(frozen=True, slots=True)
class BindingResult:
    error: str


def extender_args(
    pod: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]], *, cache_capable: bool
) -> bytes:
    """``ExtenderArgs``: ``NodeNames`` when ``nodeCacheCapable``, otherwise the full ``Nodes`` list."""
    if cache_capable:
        doc = {"Pod": pod, "Nodes": None, "NodeNames": [n["metadata"]["name"] for n in nodes]}
    else:
        doc = {"Pod": pod, "Nodes": {"metadata": {}, "items": list(nodes)}, "NodeNames": None}
    return json.dumps(doc).encode()


def binding_args(*, name: str, namespace: str, uid: str, node: str) -> bytes:
    return json.dumps({"PodName": name, "PodNamespace": namespace, "PodUID": uid, "Node": node}).encode()


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data, parse_float=_GoFloat, parse_constant=_GoFloat)
    except ValueError as err:
        raise WireError(f"reply is not JSON: {err}") from err


def _fields(doc: Any, names: Sequence[str], what: str) -> dict[str, Any]:
    """Go's key matching: a key sets the field whose name it equals case-insensitively (in document order,
    so the last one wins); other keys are ignored."""
    if not isinstance(doc, dict):
        raise WireError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    folded = {name.lower(): name for name in names}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key.lower() in folded:
            out[folded[key.lower()]] = value
    return out


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or isinstance(value, _GoFloat):
        raise WireError(f"{what}: cannot unmarshal {value!r} into a Go string")
    return value


def _int64(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{what}: cannot unmarshal number {value!s} into a Go value of type int64")
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(f"{what}: expected an object of strings")
    return {k: _string(v, f"{what}[{k}]") for k, v in value.items()}


def _string_list(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise WireError(f"{what}: expected an array of strings")
    return [_string(v, what) for v in value]


def decode_filter_result(data: bytes) -> FilterResult:
    names = ("Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error")
    doc = _fields(_loads(data), names, "ExtenderFilterResult")
    nodes = doc.get("Nodes")
    if nodes is not None and not isinstance(nodes, dict):
        raise WireError("ExtenderFilterResult.Nodes: expected a NodeList object")
    return FilterResult(
        nodes=None if nodes is None else list(nodes.get("items") or []),
        node_names=_string_list(doc.get("NodeNames"), "NodeNames"),
        failed=_string_map(doc.get("FailedNodes"), "FailedNodes"),
        failed_unresolvable=_string_map(doc.get("FailedAndUnresolvableNodes"), "FailedAndUnresolvableNodes"),
        error=_string(doc.get("Error"), "Error"),
    )


def decode_host_priority_list(data: bytes) -> list[HostPriority]:
    doc = _loads(data)
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise WireError("HostPriorityList: expected a JSON array")
    out = []
    for item in doc:
        fields = _fields(item, ("Host", "Score"), "HostPriority")
        out.append(HostPriority(_string(fields.get("Host"), "Host"), _int64(fields.get("Score"), "Score")))
    return out


def decode_binding_result(data: bytes) -> BindingResult:
    doc = _fields(_loads(data), ("Error",), "ExtenderBindingResult")
    return BindingResult(_string(doc.get("Error"), "Error"))
