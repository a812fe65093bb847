"""Bounded waits on conditions (never a bare sleep as synchronisation)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["WaitTimeoutError", "wait_until"]

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A condition the simulation waited for did not come true in time."""


async def wait_until(
    probe: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str, every_s: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; raise :class:`WaitTimeout` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)
