"""The plugin's liveness and readiness endpoints, for the DaemonSet's probes (``--health-port``).

- ``GET /healthz`` (liveness): 200 while the asyncio loop runs. Each probe asks the loop for a beat
  (``call_soon_threadsafe``) and waits up to ``wait_s``; a question left open for ``stall_s`` answers 503,
  so the kubelet restarts a wedged plugin. No timer runs between probes: an idle plugin costs nothing.
- ``GET /readyz`` (readiness): 200 once ``vcuda-core`` is registered with the kubelet (and again after each
  re-registration), 503 before; a rolling update waits for it before it moves to the next node.

A small HTTP server of its own, in a daemon thread, apart from the Prometheus exporter: probes keep working
with ``--metrics-port=0`` and a slow scrape never fails a probe. Anything else answers 404. The server
thread sleeps in ``select`` until a connection or ``shutdown`` (:mod:`plugin.quietserve`, no 0.5 s poll).
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from plugin.quietserve import QuietServing

__all__ = ["Heartbeat", "serve_probes"]

log = logging.getLogger(__name__)
_TEXT: Final = "text/plain; charset=utf-8"


class Heartbeat:
    """Asks the loop for a sign of life when a probe comes; between probes nothing runs (idle cost)."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._stall_s = stall_s
        self._clock = clock
        self._asked: float | None = None  # when the loop was asked and has not answered yet
        self._answered = threading.Condition()

    def beat(self) -> None:
        """The loop's answer (runs on the loop)."""
        with self._answered:
            self._asked = None
            self._answered.notify_all()

    def ask(self, loop: asyncio.AbstractEventLoop, wait_s: float) -> float | None:
        """From the server thread: ask ``loop`` to :meth:`beat`, wait up to ``wait_s`` for it, then
        :meth:`stalled_for`. A question still open is not asked again, so a stall is timed from the first."""
        with self._answered:
            if self._asked is None:
                self._asked = self._clock()
                with contextlib.suppress(RuntimeError):  # a closed loop never answers: stalled, in time
                    loop.call_soon_threadsafe(self.beat)
            self._answered.wait_for(lambda: self._asked is None, wait_s)
        return self.stalled_for()

    def stalled_for(self) -> float | None:
        """Seconds the loop has left a question open past the limit, or None while it is alive."""
        with self._answered:
            asked = self._asked
        silent = 0.0 if asked is None else self._clock() - asked
        return silent if silent > self._stall_s else None


def _handler(
    heartbeat: Heartbeat, loop: asyncio.AbstractEventLoop, ready: Callable[[], bool], wait_s: float
) -> type[BaseHTTPRequestHandler]:
    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                stalled = heartbeat.ask(loop, wait_s)
                ok = stalled is None
                self._answer(200 if ok else 503, "ok" if ok else f"event loop stalled for {stalled:.0f} s")
            elif path == "/readyz":
                ok = ready()
                self._answer(200 if ok else 503, "ok" if ok else "not registered with the kubelet")
            else:
                self._answer(404, "not found: /healthz or /readyz")

        def _answer(self, code: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", _TEXT)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("probe %s", format % args)

    return Probe


class _Server(QuietServing, ThreadingHTTPServer):
    daemon_threads = True


@contextlib.asynccontextmanager
async def serve_probes(
    port: int,
    ready: Callable[[], bool],
    *,
    addr: str = "0.0.0.0",
    stall_s: float = 30.0,
    wait_s: float = 0.5,
) -> AsyncIterator[int]:
    """Serve ``/healthz`` and ``/readyz`` on ``addr:port`` while the block runs; yields the bound port
    (``port=0`` picks a free one). ``ready`` is called from the server thread: it must only read.
    ``/healthz`` waits up to ``wait_s`` for the loop's answer (under the probe's ``timeoutSeconds``)."""
    loop = asyncio.get_running_loop()
    server = _Server((addr, port), _handler(Heartbeat(stall_s), loop, ready, wait_s))
    thread = threading.Thread(target=server.serve_forever, name="probes", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
