"""Errors raised by the contract. Standard library only."""

__all__ = ["ContractError", "InvalidRequestError"]


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
