"""The plugin's HTTP servers (metrics exporter, probes) sleep while idle, and still serve and stop.

Counted, not timed: the serving thread's voluntary context switches (``/proc/self/task/<tid>/status``) over an
idle spell after a first request. A server blocked in ``select`` until a connection adds none (one is allowed
for a thread slow to get back to its wait); the control, ``socketserver``'s own ``serve_forever``, adds one per
0.5 s poll.
"""

import asyncio
import socket
import struct
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from plugin.metrics.exporter import NodeCollector, serve
from plugin.probes import serve_probes
from plugin.quietserve import QuietServing

IDLE_S = 1.6  # more than three of serve_forever's polls


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Quiet(QuietServing, ThreadingHTTPServer):
    pass


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()
        return int(response.status)


def _switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt"))


def _idle_wakeups(url: str, thread: threading.Thread) -> int:
    """The serving thread's wake-ups over an idle spell, once it has answered a request."""
    assert _get(url) == 200
    time.sleep(0.1)  # back in its wait (if not yet, going back adds the one wake-up the checks allow)
    before = _switches(thread)
    time.sleep(IDLE_S)
    return _switches(thread) - before


@pytest.mark.parametrize("server_class", [_Quiet, ThreadingHTTPServer], ids=["quiet", "socketserver-control"])
def test_an_idle_server_wakes_only_when_it_polls(server_class: type[ThreadingHTTPServer]) -> None:
    server = server_class(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        wakeups = _idle_wakeups(f"http://127.0.0.1:{server.server_port}/", thread)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
    if server_class is _Quiet:
        assert wakeups <= 1
    else:
        assert wakeups >= 3


def test_the_metrics_exporter_sleeps_while_nobody_scrapes(tmp_path: Path) -> None:
    server, thread = serve(0, NodeCollector(node="n1", state_dir=tmp_path, root=tmp_path), addr="127.0.0.1")
    try:
        assert _idle_wakeups(f"http://127.0.0.1:{server.server_port}/metrics", thread) <= 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


async def test_the_probes_sleep_between_probes() -> None:
    before = set(threading.enumerate())
    async with serve_probes(0, lambda: True, addr="127.0.0.1") as port:
        [thread] = [t for t in threading.enumerate() if t not in before and t.name == "probes"]
        wakeups = await asyncio.to_thread(_idle_wakeups, f"http://127.0.0.1:{port}/readyz", thread)
    assert wakeups <= 1
    thread.join(timeout=10)
    assert not thread.is_alive()


async def test_clients_that_hang_up_leave_a_debug_line_each_and_no_traceback_on_stderr(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG", logger="plugin.quietserve")
    rudely = 20
    async with serve_probes(0, lambda: True, addr="127.0.0.1") as port:
        for _ in range(rudely):  # ask, then reset the connection (SO_LINGER 0) before the answer is read
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        for _ in range(500):  # count the handled resets (each handler thread ends with one)
            if sum("hung up" in r.getMessage() for r in caplog.records) >= rudely:
                break
            await asyncio.sleep(0.02)
        assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz") == 200
    assert sum("hung up" in r.getMessage() for r in caplog.records) >= 1
    assert "Traceback" not in capfd.readouterr().err
