"""The SIMULATED API server: kmock's in-memory Kubernetes emulator served over HTTP on 127.0.0.1.

The emulator class comes from ``tests/fakes/kmock.py`` (uids, resourceVersions, selectors, watch, the binding
subresource; see that module for what is faked). Its watches behave as the real API server's: they resume
from a ``resourceVersion``, answer 410 Gone for versions older than the history kept (``compact()``), send
bookmarks when asked, end after ``timeoutSeconds`` (or 30-60 min) and on ``drop_watches()``; every request
is counted in ``emulator.counts``. This module adds what a long simulation needs and runs it
in a thread of its own, so that blocking test code never stalls the server:

* ``_ForgetServedRequests``: kmock keeps every request it ever served and matches each new request against
  that whole history, so one request costs O(requests so far), past 100 ms after a few thousand. The mixin
  drops a request from the history once it has been answered (measured: constant ~1 ms per request).

Not simulated: admission (no webhooks, no defaulting), strategic merge patch (lists are replaced), field
validation, RBAC, quotas, garbage collection, the node lifecycle controller.
"""

import asyncio
import importlib
import threading
from typing import Any

import kmock

from tests.fakes.kmock import CORE_RESOURCES, declare_resources

__all__ = ["CORE_RESOURCES", "SimApiServer", "emulator_class"]


class _ForgetServedRequests:
    _requests: list[Any]

    async def _handle(self, request: Any) -> Any:
        try:
            return await super()._handle(request)  # type: ignore[misc]
        finally:
            self._requests[:] = [r for r in self._requests if r is not request]


def emulator_class() -> type[Any]:
    """The project's emulator (``tests.fakes.kmock``) with the request history trimmed."""
    module = importlib.import_module("tests.fakes.kmock")
    base = next(
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, kmock.KubernetesEmulator)
        and value.__module__ == module.__name__
    )
    return type(f"Sim{base.__name__}", (_ForgetServedRequests, base), {})


class SimApiServer:
    """Start with :meth:`start`, read :attr:`url`, end with :meth:`stop` (idempotent)."""

    def __init__(self, emulator: type[Any] | None = None) -> None:
        self._emulator_cls = emulator or emulator_class()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.url = ""
        self.emulator: Any = None

    def start(self, timeout_s: float = 10.0) -> "SimApiServer":
        self._thread = threading.Thread(target=self._run, name="sim-apiserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"simulated API server did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # reported to start(); the thread must not die silently
            self._error = err
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self._emulator_cls() as emulator, kmock.Server(emulator) as server:
            declare_resources(emulator)  # known before any object exists, so empty lists answer 200
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)
            self._loop = None
