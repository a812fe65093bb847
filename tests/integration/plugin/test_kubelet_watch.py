# mypy: disable-error-code="no-untyped-call"
"""The Registrar re-registers on the kubelet's restart, woken by inotify on the device-plugins directory
(plugin.dirwatch), and by its poll where inotify is unavailable.

Real gRPC on Unix sockets: the FakeKubelet's restart deletes every socket in the directory and serves a new
``kubelet.sock``, as the real kubelet's CleanupPluginDirectory does; that file-system change is the trigger.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from plugin import dirwatch as dirwatch_module
from plugin.api.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from plugin.kubelet import Registrar
from tests.fakes.kubelet import FakeKubelet

RESOURCE = "example.com/thing"


class _Servicer(api_pb2_grpc.DevicePluginServicer):
    async def GetDevicePluginOptions(self, request, context):  # noqa: N802
        return api_pb2.DevicePluginOptions()

    async def ListAndWatch(self, request, context):  # noqa: N802
        yield api_pb2.ListAndWatchResponse(devices=[api_pb2.Device(ID="d0", health="Healthy")])
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def registered(root: Path, *, poll_s: float) -> AsyncIterator[tuple[FakeKubelet, Registrar]]:
    kubelet = FakeKubelet(root / "device-plugins", root / "pod-resources" / "kubelet.sock")
    await kubelet.start()
    registrar = Registrar(
        plugin_dir=kubelet.plugin_dir,
        socket_name="thing.sock",
        resource=RESOURCE,
        add_servicer=lambda server: api_pb2_grpc.add_DevicePluginServicer_to_server(_Servicer(), server),
        poll_s=poll_s,
        recheck_s=60.0,
    )
    task = asyncio.get_running_loop().create_task(registrar.run())
    try:
        await kubelet.wait_registered(RESOURCE, timeout=5)
        yield kubelet, registrar
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
        await kubelet.stop()


async def restart_and_time(kubelet: FakeKubelet, registrar: Registrar) -> float:
    """Seconds from the kubelet's restart until the Registrar has its ``Register`` answered again."""
    await asyncio.sleep(0.2)  # the Registrar is asleep in its watch
    before = registrar.registrations
    started = time.monotonic()
    await kubelet.restart()
    while registrar.registrations == before and time.monotonic() - started < 3.0:
        await asyncio.sleep(0.01)
    await kubelet.wait_registered(RESOURCE, timeout=1.0)
    return time.monotonic() - started


async def test_kubelet_restart_wakes_the_registrar_through_inotify_not_its_poll(short_dir: Path) -> None:
    async with registered(short_dir, poll_s=60.0) as (kubelet, registrar):
        assert (
            await restart_and_time(kubelet, registrar) < 1.0
        )  # a 60 s poll and a 60 s recheck: only inotify
        assert registrar.registrations == 2
        assert (
            await restart_and_time(kubelet, registrar) < 1.0
        )  # and again: a fresh watch after each registration
        assert registrar.registrations == 3


async def test_without_inotify_the_registrar_polls(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dirwatch_module, "watch_dir", lambda path: None)
    async with registered(short_dir, poll_s=0.05) as (kubelet, registrar):
        assert await restart_and_time(kubelet, registrar) < 2.0
        assert registrar.registrations == 2
