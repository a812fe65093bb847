"""Serve the DRA service and register it with the kubelet's plugin watcher (``pluginregistration.v1``).

The kubelet watches ``/var/lib/kubelet/plugins_registry``: for a new socket there it calls ``GetInfo`` (1 s
timeout), checks the type (``DRAPlugin``) and the versions, connects to the endpoint we name (our DRA
socket, ``<plugins dir>/<driver>/dra.sock``, served *before* the registration socket appears, since the
kubelet may call it at once) and tells us the outcome with ``NotifyRegistrationStatus``. A removed
registration socket deregisters the driver; a kubelet restart re-reads the directory and registers again.

:class:`DraPlugin` is one supervised task: serve both sockets, then watch them (inotify on the registry
directory, a look every ``recheck_s`` in case an event was lost); when either socket vanishes, serve both
anew (on start-up too: an old socket is removed first, as the plugin watcher requires).
"""

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import grpc

from plugin.api.pluginregistration.v1 import api_pb2 as reg
from plugin.api.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from plugin.dirwatch import wait_while

__all__ = ["PLUGIN_TYPE", "DraPlugin", "RegistrationServicer"]

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]
PLUGIN_TYPE: Final = "DRAPlugin"


class RegistrationServicer(reg_grpc.RegistrationServicer):
    def __init__(self, plugin: "DraPlugin") -> None:
        self._plugin = plugin

    async def GetInfo(self, request: reg.InfoRequest, context: Ctx) -> reg.PluginInfo:  # noqa: N802
        p = self._plugin
        return reg.PluginInfo(
            type=PLUGIN_TYPE, name=p.driver, endpoint=str(p.service_socket), supported_versions=p.versions
        )

    async def NotifyRegistrationStatus(  # noqa: N802 (gRPC method name)
        self, request: reg.RegistrationStatus, context: Ctx
    ) -> reg.RegistrationStatusResponse:
        self._plugin.notified(request.plugin_registered, request.error)
        return reg.RegistrationStatusResponse()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


class DraPlugin:
    """Keeps the driver's DRA service served and registered for as long as :meth:`run` runs."""

    def __init__(
        self,
        *,
        driver: str,
        registry_dir: Path,
        plugins_dir: Path,
        versions: tuple[str, ...],
        add_services: Callable[[grpc.aio.Server], None],
        poll_s: float = 0.2,
        recheck_s: float = 30.0,
    ) -> None:
        self.driver = driver
        self.versions = list(versions)
        self.registration_socket = registry_dir / f"{driver}-reg.sock"
        self.service_socket = plugins_dir / driver / "dra.sock"
        self._add_services = add_services
        self._poll_s = poll_s
        self._recheck_s = recheck_s
        self.registered = asyncio.Event()
        self.registrations = 0
        self.last_error = ""

    def notified(self, registered: bool, error: str) -> None:
        if registered:
            self.registrations += 1
            self.registered.set()
            log.info("the kubelet registered DRA driver %s", self.driver)
        else:
            self.registered.clear()
            self.last_error = error
            log.error("the kubelet refused DRA driver %s: %s", self.driver, error)

    async def run(self) -> None:
        while True:
            service = await self._serve(self.service_socket, self._add_services)
            registration = await self._serve(self.registration_socket, self._add_registration)
            try:
                await self._watch()
            finally:
                self.registered.clear()
                await registration.stop(grace=0.1)
                await service.stop(grace=1.0)  # a prepare in flight finishes; its claim is checkpointed
            log.info("a DRA socket of %s vanished: serving and registering again", self.driver)

    def _add_registration(self, server: grpc.aio.Server) -> None:
        reg_grpc.add_RegistrationServicer_to_server(  # type: ignore[no-untyped-call]
            RegistrationServicer(self), server
        )

    async def _serve(self, socket: Path, add: Callable[[grpc.aio.Server], None]) -> grpc.aio.Server:
        socket.parent.mkdir(parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)
        server = grpc.aio.server()
        add(server)
        server.add_insecure_port(f"unix://{socket}")
        await server.start()
        return server

    async def _watch(self) -> None:
        sockets = (self.registration_socket, self.service_socket)
        inodes = [_inode(s) for s in sockets]

        def standing() -> bool:
            return None not in inodes and [_inode(s) for s in sockets] == inodes

        await wait_while(standing, self.registration_socket.parent, self._poll_s, self._recheck_s)
