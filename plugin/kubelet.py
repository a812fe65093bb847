"""Kubelet plumbing: serve the device plugin on its socket, register, and re-register (PodResources is
:mod:`plugin.podresources`).

:class:`Registrar` is one supervised task (not a restart loop of the process): start the gRPC server on
``<device-plugin-dir>/<socket>``, call ``Register`` (the server already serves, as the kubelet requires), then
watch. When the kubelet restarts it deletes every socket in the directory and re-creates ``kubelet.sock``;
the watch sees our socket vanish or ``kubelet.sock`` change inode and starts over. It sleeps on inotify
(plugin.dirwatch, as NVIDIA's plugin uses fsnotify) and looks again every ``recheck_s`` in case an event was
lost; where inotify is unavailable it polls every ``poll_s`` (0.2 s by default, well inside the 2 s goal).
"""

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

import grpc

from plugin.api.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from plugin.dirwatch import wait_while

__all__ = ["API_VERSION", "KUBELET_SOCKET", "Registrar", "Servicer"]

log = logging.getLogger(__name__)
API_VERSION: Final = "v1beta1"
KUBELET_SOCKET: Final = "kubelet.sock"


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class Servicer(Protocol):
    """A resource's servicer as a registration needs it (a :class:`plugin.server.BoardServicer`)."""

    @property
    def pre_start_required(self) -> bool: ...
    @property
    def preferred_allocation(self) -> bool: ...
    def add_to(self, server: grpc.aio.Server) -> None: ...


class Registrar:
    """Keeps one resource registered with the kubelet for as long as :meth:`run` runs."""

    @classmethod
    def serving(
        cls, servicer: Servicer, resource: str, *, plugin_dir: Path, socket_prefix: str, poll_s: float
    ) -> "Registrar":
        """``resource`` served by ``servicer`` on ``<socket_prefix><resource name>.sock``; Register carries
        the servicer's own options (what its GetDevicePluginOptions says)."""
        return cls(
            plugin_dir=plugin_dir,
            socket_name=f"{socket_prefix}{resource.partition('/')[2]}.sock",
            resource=resource,
            add_servicer=servicer.add_to,
            poll_s=poll_s,
            pre_start_required=servicer.pre_start_required,
            preferred_allocation=servicer.preferred_allocation,
        )

    def __init__(
        self,
        *,
        plugin_dir: Path,
        socket_name: str,
        resource: str,
        add_servicer: Callable[[grpc.aio.Server], None],
        poll_s: float = 0.2,
        recheck_s: float = 60.0,
        register_timeout_s: float = 5.0,
        on_registered: Callable[[], None] | None = None,
        pre_start_required: bool = True,
        preferred_allocation: bool = True,
    ) -> None:
        self._dir = plugin_dir
        self._socket = plugin_dir / socket_name
        self._resource = resource
        self._add_servicer = add_servicer
        self._poll_s = poll_s
        self._recheck_s = recheck_s
        self._timeout_s = register_timeout_s
        self._on_registered = on_registered
        # Register carries the same options as GetDevicePluginOptions
        self._options = api_pb2.DevicePluginOptions(
            pre_start_required=pre_start_required, get_preferred_allocation_available=preferred_allocation
        )
        self.registrations = 0
        self.registered = asyncio.Event()

    async def run(self) -> None:
        while True:
            server = await self._serve()
            try:
                kubelet_inode = await self._register()
                await self._watch(kubelet_inode)
            finally:
                self.registered.clear()
                await server.stop(grace=0.1)  # ListAndWatch streams never finish on their own
            log.info("kubelet restarted or our socket vanished: re-registering %s", self._resource)

    async def _serve(self) -> grpc.aio.Server:
        self._socket.unlink(missing_ok=True)
        server = grpc.aio.server()
        self._add_servicer(server)
        server.add_insecure_port(f"unix://{self._socket}")
        await server.start()
        return server

    async def _register(self) -> int | None:
        """Register, retrying until the kubelet answers; returns the inode of the ``kubelet.sock`` used."""
        kubelet = self._dir / KUBELET_SOCKET
        delay = self._poll_s
        while True:
            inode = _inode(kubelet)
            if inode is not None and _inode(self._socket) is not None:
                try:
                    await self._register_once(kubelet)
                    self.registrations += 1
                    self.registered.set()
                    if self._on_registered is not None:
                        self._on_registered()
                    log.info("registered %s with the kubelet at %s", self._resource, kubelet)
                    return inode
                except grpc.aio.AioRpcError as err:
                    log.warning("Register %s failed: %s", self._resource, err.details())
            elif _inode(self._socket) is None:
                return None  # our socket is gone already: serve again
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _register_once(self, kubelet: Path) -> None:
        request = api_pb2.RegisterRequest(
            version=API_VERSION,
            endpoint=self._socket.name,
            resource_name=self._resource,
            options=self._options,
        )
        async with grpc.aio.insecure_channel(f"unix://{kubelet}") as channel:
            stub = api_pb2_grpc.RegistrationStub(channel)  # type: ignore[no-untyped-call]
            await stub.Register(request, timeout=self._timeout_s)

    async def _watch(self, kubelet_inode: int | None) -> None:
        if kubelet_inode is None:
            return
        kubelet = self._dir / KUBELET_SOCKET

        def standing() -> bool:
            return _inode(self._socket) is not None and _inode(kubelet) == kubelet_inode

        await wait_while(standing, self._dir, self._poll_s, self._recheck_s)
