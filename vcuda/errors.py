"""Errors raised by the contract, and how a hostile value is shown in any message. Standard library only."""

import contextlib
import reprlib
from itertools import islice
from typing import Final

__all__ = ["MAX_SHOWN", "ContractError", "InvalidRequestError", "shown"]

MAX_SHOWN: Final = 60
"""The most characters :func:`shown` returns: a message never echoes a megabyte back."""
_INT_BITS: Final = 13_000
"""Past about 3,900 decimal digits an int is named by its size, not printed: ``repr`` refuses past 4,300
digits (ValueError, Python's ``sys.get_int_max_str_digits``) and is quadratic where that limit is lifted."""


class _Bounded(reprlib.Repr):
    """``reprlib`` bounds the depth (YAML aliases nest a list nine deep with nine items each, "billion
    laughs", at no cost to load and forever to ``repr``) and the items shown; these overrides keep every
    step bounded: no sorting of a tenant's whole mapping or set, no ``repr`` of an int too long to print."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() <= _INT_BITS:
            with contextlib.suppress(ValueError):  # a lower sys.set_int_max_str_digits
                return super().repr_int(x, level)
        return f"<int of {x.bit_length()} bits>"

    def repr_dict(self, x: dict[object, object], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{" + self.fillvalue + "}"
        items = [
            f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
            for k, v in islice(x.items(), self.maxdict)
        ]
        return "{" + ", ".join(items) + (", " + self.fillvalue if len(x) > self.maxdict else "") + "}"

    def repr_set(self, x: set[object], level: int) -> str:
        return self._repr_unsorted(x, level, "{", "}", self.maxset) if x else "set()"

    def repr_frozenset(self, x: frozenset[object], level: int) -> str:
        return self._repr_unsorted(x, level, "frozenset({", "})", self.maxfrozenset) if x else "frozenset()"

    def _repr_unsorted(
        self, x: set[object] | frozenset[object], level: int, left: str, right: str, most: int
    ) -> str:
        if level <= 0:
            return left + self.fillvalue + right
        items = [self.repr1(v, level - 1) for v in islice(x, most)]
        return left + ", ".join(items) + (", " + self.fillvalue if len(x) > most else "") + right


_SHORT: Final = _Bounded()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 40, 40


def shown(value: object) -> str:
    """``repr`` of a hostile value (a tenant's pod field, a settings or config file's value) for an error
    message, bounded in depth, in items and in length (:data:`MAX_SHOWN` characters), in bounded time."""
    text = _SHORT.repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


class ContractError(ValueError):
    """A value that crosses a component boundary (annotation, file, env) is malformed."""


class InvalidRequestError(ContractError):
    """A user's pod asks for GPU resources in a way that can never be satisfied.

    ``reason`` is a short stable code (for metrics and tests); ``str(err)`` is the sentence a user reads
    in ``kubectl describe pod``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
