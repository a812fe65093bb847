"""The extender's ``/metrics`` at 5,000 nodes, served as deployed: the scheduling and the metrics listeners as
two uvicorn servers on one event loop (``extender.__main__.serve``), over loopback HTTP.

Three processes, as in a cluster: the extender (``serve_child``, holding the cluster of ``bench_extender``:
5,000 nodes of 8 H100s, a third partly used by bound pods), kube-scheduler's part (this process: filter, then
prioritize, for each pod) and Prometheus' (a scraper on its own connection). No client shares the extender's
GIL: a busy client thread there would delay the server by the interpreter's switch interval, which is not what
a scrape costs.

- ``extender_metrics_bytes_5000n``: the body of the last scrape, after filters and prioritizes were served.
- ``extender_filter_p99_5000n_during_scrape``: the filter's round trip (ms, p99) for the same pods as
  ``extender_filter_p99_5000n`` while the scraper scrapes ``/metrics`` back to back.
- ``extender_scrape_cpu_ms_5000n``: the extender process's CPU time per scrape (HTTP, routing and render),
  scrapes back to back for 3 s with nothing else to do: the longest a scrape can hold a filter up, whatever
  the load of the machine (wall-clock percentiles on a shared machine also measure the neighbours).
"""

import asyncio
import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import uvicorn

from extender.app import create_app, create_metrics_app
from tests.bench.bench_extender import ROUNDS, _p, cluster_5000
from tests.fakes.extender import pod_obj

__all__ = ["ScrapeFigures", "filter_during_scrapes", "run", "serve_child"]

T = TypeVar("T")

_SCRAPER: Final = """
import select, socket, sys

sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
request, pending = b"GET /metrics HTTP/1.1\\r\\nHost: extender\\r\\n\\r\\n", b""


def scrape():
    global pending
    sock.sendall(request)
    while b"\\r\\n\\r\\n" not in pending:
        pending += sock.recv(65536)
    head, _, pending = pending.partition(b"\\r\\n\\r\\n")
    lines = head.split(b"\\r\\n")
    if lines[0].split()[1] != b"200":
        raise SystemExit(f"/metrics answered {lines[0]!r}")
    length = int(next(v for k, _, v in (x.partition(b":") for x in lines) if k.lower() == b"content-length"))
    while len(pending) < length:
        pending += sock.recv(65536)
    body, pending = pending[:length], pending[length:]
    return body


print("started", flush=True)
done, body = 0, scrape()
while not select.select([sys.stdin], [], [], 0)[0]:  # until the driver closes stdin
    body = scrape()
    done += 1
print(done, len(body), flush=True)
"""


def serve_child() -> None:
    """Run in a fresh process: hold 5,000 nodes and serve both listeners on one event loop until stdin closes;
    print the ports and the node names (one JSON line) once serving."""
    deps, names = cluster_5000()
    servers = [
        uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
        for app in (create_app(deps), create_metrics_app(deps))
    ]

    async def serve() -> None:
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        while not all(s.started for s in servers):
            await asyncio.sleep(0.01)
        ports = [s.servers[0].sockets[0].getsockname()[1] for s in servers]
        print(json.dumps({"ports": ports, "names": names}), flush=True)
        await asyncio.to_thread(sys.stdin.read)
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks)

    asyncio.run(serve())


@contextlib.contextmanager
def _child(code: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A Python child reading nothing but its stdin's end; yields it and, after it exits, its last output."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    last: list[str] = []
    try:
        yield proc, last
    finally:
        out, _ = proc.communicate("", timeout=120)  # closing its stdin ends it
        last.append(out)
    if proc.returncode != 0:
        raise RuntimeError(f"a benchmark child failed ({proc.returncode})")


def _post(conn: http.client.HTTPConnection, path: str, pod: object, names: object) -> tuple[Any, float]:
    body = json.dumps({"Pod": pod, "Nodes": None, "NodeNames": names}).encode()
    start = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    return answer, time.perf_counter() - start


def _filters(port: int, names: list[str]) -> list[float]:
    """The filter's round trips (seconds) for ``bench_extender``'s pods, each followed by its prioritize."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took = []
    for i in range(ROUNDS + 10):
        pod = pod_obj(f"bench-{i}", (20 + i % 50, 2048 + 37 * i))
        answer, seconds = _post(conn, "/scheduler/filter", pod, names)
        _post(conn, "/scheduler/prioritize", pod, answer["NodeNames"])
        if i >= 10:  # warm-up
            took.append(seconds)
    conn.close()
    return took


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scrapes(port: int, during: Callable[[], T]) -> tuple[T, int, int]:
    """``during()``'s result while a scraper scrapes back to back, the scrapes done and the last one's bytes."""
    with _child(_SCRAPER, str(port)) as (scraper, last):
        assert scraper.stdout is not None
        scraper.stdout.readline()
        result = during()
    done, size = (int(word) for word in last[0].split())
    return result, done, size


@dataclass(frozen=True)
class ScrapeFigures:
    size: int
    filter_p99_ms: float
    scrapes: int
    scrape_cpu_ms: float


def filter_during_scrapes() -> ScrapeFigures:
    """Filters while scrapes run back to back, then scrapes alone for 3 s, against one extender process."""
    server_code = "from tests.bench.bench_extender_metrics import serve_child; serve_child()"
    with _child(server_code) as (server, _):
        assert server.stdout is not None
        started = json.loads(server.stdout.readline())
        (port, metrics_port), names = started["ports"], started["names"]
        took, scrapes, size = _scrapes(metrics_port, lambda: _filters(port, names))
        before = _cpu_s(server.pid)
        _, alone, _ = _scrapes(metrics_port, lambda: time.sleep(3))
        cpu_ms = (_cpu_s(server.pid) - before) * 1000 / max(alone, 1)
    return ScrapeFigures(size, _p(took, 0.99) * 1000, scrapes, cpu_ms)


def run() -> list[tuple[str, float, str]]:
    figures = filter_during_scrapes()
    return [
        ("extender_metrics_bytes_5000n", figures.size, "bytes"),
        ("extender_filter_p99_5000n_during_scrape", round(figures.filter_p99_ms, 2), "ms"),
        ("extender_scrape_cpu_ms_5000n", round(figures.scrape_cpu_ms, 3), "ms"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:g} {unit}".rstrip())
