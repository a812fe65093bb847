"""Reading and writing kube-vgpu's versioned JSON documents: canonical form and typed field access that
raises :class:`ContractError`. Standard library only; shared by :mod:`vcuda.assignment` and
:mod:`vcuda.annotations`."""

import json
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Final, TypeVar

from vcuda.errors import ContractError, shown

__all__ = ["VERSION", "dumps", "get", "items", "load", "member", "obj"]

VERSION: Final = 1
T = TypeVar("T")
E = TypeVar("E", bound=Enum)


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def load(text: str, what: str, version: int = VERSION) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (TypeError, ValueError) as err:
        raise ContractError(f"{what} annotation is not JSON: {err}") from err
    except RecursionError as err:  # ``[[[[...`` deeper than the stack: a tenant's or a node's, never ours
        raise ContractError(f"{what} annotation is nested too deeply") from err
    if not isinstance(doc, dict):
        raise ContractError(f"{what} annotation must be a JSON object")
    if doc.get("v") != version:
        raise ContractError(f"{what} annotation has version {shown(doc.get('v'))}, expected {version}")
    return doc


def get(doc: Mapping[str, Any], key: str, kind: type[T], what: str) -> T:
    value = doc.get(key)
    if kind is int and isinstance(value, bool):
        value = None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise ContractError(f"{what}: {key!r} must be {kind.__name__}, got {shown(value)}")
    return value


def member(doc: Mapping[str, Any], key: str, enum: type[E], what: str, label: str) -> E:
    """``doc[key]`` as a member of ``enum`` (an int for an ``IntEnum``, else a str); an unknown value is
    refused as ``unknown <label>``."""
    raw: object = get(doc, key, int, what) if issubclass(enum, int) else get(doc, key, str, what)
    try:
        return enum(raw)
    except ValueError as err:
        raise ContractError(f"{what}: unknown {label} {shown(raw)}") from err


def items(doc: Mapping[str, Any], key: str, what: str, read: Callable[[Any], T]) -> tuple[T, ...]:
    return tuple(read(item) for item in get(doc, key, list, what))


def obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"{what} must be an object, got {shown(value)}")
    return value
