"""The unit tier means no sockets and no processes: each unit test runs with both refused, from the set-up of
its fixtures (module- and session-scoped ones too) to their tear-down.

A test that needs a socket (HTTP, gRPC, a Unix socket) or a process (a subprocess, the fake NVML driving
processes, kmock) belongs in tests/integration. Refused here, whatever the caller:
- a new socket of family AF_INET, AF_INET6 or AF_UNIX (`socket.socket(...)`, which asyncio, http.client,
  urllib, httpx and uvicorn all go through). Wrapping an existing descriptor stays allowed, so
  `socket.socketpair()` works: asyncio's event loop wakes itself with one, in-process and off the network;
- a gRPC server or channel (gRPC's C core opens its sockets without Python's `socket` module);
- a new process: `subprocess.Popen` (so `subprocess.run` and asyncio's subprocesses), `os.fork`,
  `os.forkpty`, `os.posix_spawn`, `os.posix_spawnp`, `os.system` and the `os.spawn*` family.
Starlette's TestClient calls the ASGI app in-process (no socket), so it is allowed.
tests/contract/test_unit_tier_guard.py proves the guard fails a unit test that opens a socket or a process.
"""

import os
import socket
import subprocess
from collections.abc import Generator
from typing import Any

import grpc
import grpc.aio
import pytest

REFUSED_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6, socket.AF_UNIX})
PROCESS_CALLS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "spawnv", "spawnve", "spawnvp",
                 "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe")  # fmt: skip
GRPC_CALLS = ("server", "insecure_channel", "secure_channel")


class UnitTierError(RuntimeError):
    """A unit test reached for a socket or a process; move it to tests/integration."""


def _refuse(what: str) -> Any:
    def refused(*args: object, **kwargs: object) -> Any:
        raise UnitTierError(f"unit tests open no {what}; move this test to tests/integration")

    return refused


def _refuse_sockets_and_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    real_init = socket.socket.__init__

    def guarded_init(self: socket.socket, family: int = -1, type: int = -1, proto: int = -1,
                     fileno: int | None = None) -> None:  # fmt: skip
        if fileno is None and (socket.AF_INET if family == -1 else family) in REFUSED_FAMILIES:
            raise UnitTierError("unit tests open no socket; move this test to tests/integration")
        real_init(self, family, type, proto, fileno)

    monkeypatch.setattr(socket.socket, "__init__", guarded_init)
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("process"))
    for name in PROCESS_CALLS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse("process"))
    for module in (grpc, grpc.aio):
        for name in GRPC_CALLS:
            monkeypatch.setattr(module, name, _refuse("gRPC socket"))


def _guarded() -> Generator[None, object, object]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _refuse_sockets_and_processes(monkeypatch)
        return (yield)


# Each phase of a unit test (set-up, module- and session-scoped fixtures included; call; tear-down) runs
# guarded, and the guard is undone after it. These hooks, called through the item's own hook proxy, reach
# only items under tests/unit, so the other tiers of the same session keep their sockets (not
# pytest_runtest_protocol, which pytest calls for every item once any conftest implements it).
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    return (yield from _guarded())
