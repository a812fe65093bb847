"""The SIMULATED scheduler's CEL: the small part of Kubernetes' device-selector CEL the sim evaluates.

Supported (conjunctions with ``&&`` of these terms, nothing else):

- ``device.driver == "<driver>"``;
- ``device.attributes["<domain>"].<name> == <string | int | true | false>`` (and ``!=``);
- ``device.attributes["<domain>"].<name>.startsWith("<prefix>")``;
- ``device.attributes["<domain>"].<name>.compareTo(semver("<x.y.z>")) <op> 0`` with ``<op>`` one of
  ``== != < <= > >=``.

As in Kubernetes, ``device.attributes["<driver>"]`` holds the device's unqualified attributes and those
qualified with that domain; any other domain holds the attributes qualified with it. A term that reads an
attribute the device lacks is false (the real evaluation errors, and the scheduler counts that device out).
Anything else (``||``, parentheses, other functions) raises :class:`UnsupportedCelError`: the sim refuses a
selector it cannot evaluate rather than guessing.
"""

import operator
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["UnsupportedCelError", "matches"]

_ATTR: Final = r'device\.attributes\["(?P<domain>[^"]+)"\]\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)'
_LITERAL: Final = r'(?P<value>"[^"]*"|-?\d+|true|false)'
_DRIVER: Final = re.compile(r'device\.driver\s*(?P<op>==|!=)\s*"(?P<value>[^"]*)"')
_EQUAL: Final = re.compile(_ATTR + r"\s*(?P<op>==|!=)\s*" + _LITERAL)
_PREFIX: Final = re.compile(_ATTR + r'\.startsWith\("(?P<value>[^"]*)"\)')
_SEMVER: Final = re.compile(
    _ATTR + r'\.compareTo\(semver\("(?P<value>[^"]+)"\)\)\s*(?P<op>==|!=|<=|>=|<|>)\s*0'
)


class UnsupportedCelError(ValueError):
    """An expression outside the subset the simulated scheduler evaluates."""


def _attribute(device: Mapping[str, Any], domain: str, name: str) -> Any:
    attrs = device.get("attributes") or {}
    found = attrs.get(f"{domain}/{name}")
    if found is None and domain == device.get("driver"):
        found = attrs.get(name)
    if not found:
        return None
    return next(iter(found.values()))


def _literal(text: str) -> object:
    if text.startswith('"'):
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return int(text)


def _version(text: str) -> tuple[int, ...]:
    parts = text.split("-")[0].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UnsupportedCelError(f"{text!r} is not a semantic version")
    return tuple(int(p) for p in parts)


_OPERATORS: Final = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(left: Any, right: Any, op: str) -> bool:
    if op not in ("==", "!=") and type(left) is not type(right):
        return False  # CEL: no ordering across types (an evaluation error, so no match)
    return bool(_OPERATORS[op](left, right))


def _term(term: str, device: Mapping[str, Any]) -> bool:
    if m := _DRIVER.fullmatch(term):
        return _compare(device.get("driver"), m["value"], m["op"])
    if m := _EQUAL.fullmatch(term):
        value = _attribute(device, m["domain"], m["name"])
        return value is not None and _compare(value, _literal(m["value"]), m["op"])
    if m := _PREFIX.fullmatch(term):
        value = _attribute(device, m["domain"], m["name"])
        return isinstance(value, str) and value.startswith(m["value"])
    if m := _SEMVER.fullmatch(term):
        value = _attribute(device, m["domain"], m["name"])
        if not isinstance(value, str):
            return False
        left, right = _version(value), _version(m["value"])
        return _compare((left > right) - (left < right), 0, m["op"])
    raise UnsupportedCelError(f"the simulated scheduler cannot evaluate {term!r}")


def matches(expression: str, device: Mapping[str, Any]) -> bool:
    """Whether ``device`` (a slice's device plus its ``driver``) passes ``expression``."""
    if "||" in expression:
        raise UnsupportedCelError(f"the simulated scheduler cannot evaluate {expression!r}")
    return all(_term(t.strip(), device) for t in expression.split("&&"))
