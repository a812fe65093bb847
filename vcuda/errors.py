"""Errors raised by the contract, and how a bad value read from a file is shown in any message. Standard
library only."""

import reprlib
from typing import Final

__all__ = ["ContractError", "InvalidRequestError", "shown"]

_SHORT: Final = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def shown(value: object) -> str:
    """``repr`` of a value read from a file, bounded for an error message: YAML aliases nest a list nine
    deep with nine items each ("billion laughs") at no cost to load, and forever to ``repr``. Both binaries'
    settings errors and the plugin's NVIDIA config errors use it."""
    return _SHORT.repr(value)


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
