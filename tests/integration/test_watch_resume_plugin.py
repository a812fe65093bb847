"""The plugin's Node publisher (``plugin.node.NodePublisher``) watches its Node instead of re-reading it on a
timer, against the simulated API server (``tests/fakes/kmock.py``: watch timeouts, bookmarks, 410 Gone,
request counts).

Cases: a Node whose ``vcuda-memory`` the kubelet reset is repaired from the watch event, with the timer an
hour away; an idle hour of server time costs one watch per 5-10 min and no read of the Node, even across a
compaction (410: the watch starts over from the Node itself); the timer takes over while the watch fails
or is refused, and the watch backs off.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from plugin.core.inventory import node_view
from plugin.kube import ApiCluster
from plugin.node import NodePublisher
from tests.builders.plugin import NAMES, h100x8
from tests.fakes.kmock import KmockCluster

NODE = "node-1"
WAIT_S = 10.0


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def api() -> Any:
    with KmockCluster() as cluster:
        cluster.core().create_node({"metadata": {"name": NODE}}, _preload_content=False)
        yield cluster


def capacity(api: KmockCluster) -> str | None:
    node = json.loads(api.core().read_node(NODE, _preload_content=False).data)
    return ((node.get("status") or {}).get("capacity") or {}).get(NAMES.memory)


@pytest.fixture
async def publishing(api: KmockCluster, request: Any) -> AsyncIterator[NodePublisher]:
    resync_s, short_s = getattr(request, "param", (3600.0, 1.0))
    publisher = NodePublisher(ApiCluster(api.api_client()), NODE, NAMES, resync_s, short_watch_s=short_s)
    task = asyncio.create_task(publisher.run())
    gpus = h100x8(NODE)
    await publisher.publish(node_view(gpus, {g.uuid: True for g in gpus.gpus}, 1.0, NAMES))
    await eventually(lambda: capacity(api) is not None, "the first publication")
    yield publisher
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_reset_extended_resource_is_repaired_from_the_watch_not_the_timer(api, publishing):
    published = capacity(api)
    body = {"status": {"capacity": {NAMES.memory: None}, "allocatable": {NAMES.memory: None}}}
    api.core().patch_node_status(NODE, body, _preload_content=False)  # the kubelet re-created its Node
    await eventually(lambda: capacity(api) == published, "the repair (the timer is an hour away)")


SCALE = 3600 / 2.0  # an hour of server time in two seconds


@pytest.mark.parametrize("publishing", [(30.0 / SCALE, 1.0 / SCALE)], indirect=True)  # defaults, scaled
async def test_an_idle_hour_costs_a_watch_per_timeout_and_no_read(api, publishing):
    server = api.emulator
    server.time_scale = SCALE
    server.drop_watches()  # the open watch had asked for an unscaled timeout
    await asyncio.sleep(0.2)
    before = dict(server.counts)
    await asyncio.sleep(1.0)
    api.core().create_namespaced_config_map("default", {"metadata": {"name": "c"}}, _preload_content=False)
    server.compact()  # the history is gone: the next resume gets 410 and starts from the Node itself
    await asyncio.sleep(1.0)
    spent = {k: v - before.get(k, 0) for k, v in server.counts.items() if v != before.get(k, 0)}
    assert spent.get(("get", "nodes"), 0) == 0, spent
    assert spent.get(("patch", "nodes"), 0) == 0, spent
    assert 4 <= spent.get(("watch", "nodes"), 0) <= 16, spent


@pytest.mark.parametrize("publishing", [(0.05, 1.0)], indirect=True)
async def test_while_the_watch_fails_the_node_is_read_on_the_timer(api, publishing):
    server = api.emulator
    server.gone_as_http = True
    server.time_scale = 1e9  # every watch ends at once: failures, backing off
    server.drop_watches()
    await asyncio.sleep(0.5)
    before = server.counts["get", "nodes"]
    await asyncio.sleep(0.5)
    assert server.counts["get", "nodes"] - before >= 3  # the 0.05 s timer (about 10), not silence


@pytest.mark.parametrize("publishing", [(0.05, 1.0)], indirect=True)
async def test_a_refused_watch_backs_off_and_the_timer_takes_over(api, publishing):
    server = api.emulator
    server.refuse_watches = 403  # e.g. a ClusterRole without "watch"
    server.drop_watches()
    await asyncio.sleep(0.2)
    before = dict(server.counts)
    await asyncio.sleep(1.5)
    spent = {k: v - before.get(k, 0) for k, v in server.counts.items()}
    assert spent[("watch", "nodes")] <= 3, spent  # 0.8 s, then 1.6 s, ... with jitter: never a tight loop
    assert spent[("get", "nodes")] >= 10, spent  # the Node re-read on the 0.05 s timer meanwhile
