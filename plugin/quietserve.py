"""``socketserver``'s ``serve_forever`` without its 0.5 s poll, for the plugin's probes and metrics servers.

``serve_forever`` wakes every ``poll_interval`` to look for a ``shutdown()`` request: 120 wake-ups a minute
per idle server, on every GPU node. :class:`QuietServing` sleeps in ``select`` until a connection comes or
``shutdown()`` writes to a socket pair, so an idle server costs nothing. Mix it in before the server class::

    class Server(QuietServing, ThreadingHTTPServer): ...
"""

import logging
import selectors
import socket
import sys
import threading
from typing import Any

__all__ = ["QuietServing"]

log = logging.getLogger(__name__)


class QuietServing:
    """Replaces ``serve_forever`` (``poll_interval`` ignored), ``shutdown`` and ``server_close`` of a
    ``socketserver.BaseServer``. As there, ``shutdown`` waits for ``serve_forever`` to end: call it once the
    serving thread is started (it may not have reached ``serve_forever`` yet)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_r, self._stop_w = socket.socketpair()
        self._stopped = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)  # type: ignore[arg-type]  # has fileno()
                selector.register(self._stop_r, selectors.EVENT_READ)
                while all(key.fileobj is not self._stop_r for key, _ in selector.select()):
                    self.handle_request()  # type: ignore[attr-defined]  # the server class's
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Ends ``serve_forever`` and waits for it (from another thread, as ``socketserver``'s)."""
        self._stop_w.send(b"x")
        self._stopped.wait()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-request (a probe timing out, a scanner, anyone on the node's network) is
        routine: one debug line, not ``socketserver``'s traceback printed to stderr for every reset; any other
        failure is logged, with its traceback, through logging."""
        err = sys.exc_info()[1]
        if isinstance(err, ConnectionError):
            log.debug("HTTP client %s hung up: %s", client_address, err)
        else:
            log.warning("HTTP request from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()  # type: ignore[misc]  # the server class's
        self._stop_r.close()
        self._stop_w.close()
