"""``/metrics`` over real loopback HTTP (uvicorn, the metrics listener's app) never waits on scheduling.

Cases: while another thread holds the state's scheduling lock (as a filter, a bind or a watch update does), a
scrape is answered within a second with the cluster aggregates and no per-node or per-GPU series; the
scrape's size is the same for 20 nodes and for 1,000.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from extender.app import create_metrics_app
from tests.fakes.extender import gpu_node, make_deps
from tests.fixtures.extender_server import serving


@pytest.fixture
def lock_held() -> Iterator[Any]:
    """A cluster whose scheduling lock another thread holds until the test ends."""
    deps, _ = make_deps([gpu_node(f"n{i}") for i in range(20)])
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with deps.state.lock:
            held.set()
            release.wait(5)  # an old, locking scrape would wait this long

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    try:
        yield deps
    finally:
        release.set()
        holder.join(5)


async def test_a_scrape_is_answered_while_the_scheduling_lock_is_held(lock_held):
    async with (
        serving(create_metrics_app(lock_held)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as http,
    ):
        start = time.monotonic()
        answer = await http.get("/metrics")
        took = time.monotonic() - start
    assert took < 1.0, "the scrape waited on the scheduling lock"
    assert answer.status_code == 200
    assert "kube_vgpu_extender_gpu_nodes 20.0" in answer.text
    assert 'kube_vgpu_extender_gpus{health="healthy"} 160.0' in answer.text
    assert "gpu_uuid=" not in answer.text
    assert "node=" not in answer.text


async def test_a_scrape_is_the_same_size_for_20_and_1000_nodes():
    sizes = []
    for count in (20, 1000):
        deps, _ = make_deps([gpu_node(f"node-{i:05d}") for i in range(count)])
        async with (
            serving(create_metrics_app(deps)) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http,
        ):
            sizes.append(len((await http.get("/metrics")).content))
    assert abs(sizes[1] - sizes[0]) < 16  # only the figures' digits differ
