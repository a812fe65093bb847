"""The extender's list-and-watch against the simulated API server (``tests/fakes/kmock.py``), which ends
watches after ``timeoutSeconds``, sends bookmarks, answers 410 Gone for versions older than its history and
counts every request.

Cases: a dropped watch resumes from its version without a LIST (and sees what changed meanwhile); an idle
hour of server time (watch timeouts every 5-10 min, scaled down) costs no LIST and one WATCH per kind per
timeout; a 410 (as an ERROR event or as HTTP 410) costs exactly one new LIST, after which changes flow again;
bookmarks keep an idle watch's version fresh, so that compaction of other kinds' history costs no LIST; a
watch that keeps failing backs off with delays that grow, capped, with jitter. The fake itself: a watch from a
version sends only later events, a compacted version gets 410, bookmarks arrive when asked for. Pods are
listed before nodes, so that a replica taking over never knows a node without its pods' load.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extender.clusterstate import ClusterState
from extender.kube import Backoff, Watcher, WatchTimings
from tests.fakes.extender import KEY, NAMES, gpu_node
from tests.fakes.kmock import KmockCluster

WAIT_S = 10.0
FAST = WatchTimings(backoff=Backoff(initial_s=0.02, max_s=0.2))


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Bounded wait: the state offers no change signal to block on."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.01)


@pytest.fixture
def api() -> Iterator[KmockCluster]:
    with KmockCluster() as cluster:
        cluster.core().create_node(gpu_node("n1"), _preload_content=False)
        yield cluster


@pytest.fixture
def state() -> ClusterState:
    return ClusterState(NAMES, KEY, grace_s=60, clock=time.monotonic)


@pytest.fixture
def watching(api: KmockCluster, state: ClusterState) -> Iterator[Watcher]:
    watcher = Watcher(api.api_client(), state, timings=FAST)
    watcher.start()
    assert state.synced.wait(WAIT_S), "the first lists never completed"
    wait_until(lambda: emulator(api).open_watches == 2, "both watches open")
    yield watcher
    watcher.stop()


def emulator(api: KmockCluster) -> Any:
    assert api.emulator is not None
    return api.emulator


def lists(api: KmockCluster) -> dict[str, int]:
    counts = emulator(api).counts
    return {kind: counts["list", kind] for kind in ("nodes", "pods")}


def add_node(api: KmockCluster, name: str) -> None:
    api.core().create_node(gpu_node(name), _preload_content=False)


def test_a_dropped_watch_resumes_from_its_version_without_a_list(api, state, watching):
    assert emulator(api).drop_watches() == 2
    add_node(api, "n2")  # while no watch is open: the resumed watch must still deliver it
    wait_until(lambda: state.ledger("n2") is not None, "the node created between watches")
    wait_until(lambda: emulator(api).open_watches == 2, "both watches resumed")
    assert lists(api) == {"nodes": 1, "pods": 1}
    assert watching.watches["nodes"] >= 2


def test_an_idle_hour_of_server_time_costs_no_list(api, state):
    server = emulator(api)
    server.time_scale = 3600 / 2.0  # one hour of watch timeouts and bookmarks in two seconds
    watcher = Watcher(api.api_client(), state, timings=FAST)
    watcher.start()
    try:
        assert state.synced.wait(WAIT_S)
        time.sleep(2.0)
    finally:
        watcher.stop()
    assert lists(api) == {"nodes": 1, "pods": 1}
    for kind in ("nodes", "pods"):  # one watch per 5-10 min timeout: 6-12 an hour (plus slack)
        assert 4 <= server.counts["watch", kind] <= 16, server.counts


@pytest.mark.parametrize("as_http", [False, True], ids=["410 as an ERROR event", "410 as HTTP status"])
def test_a_410_costs_exactly_one_new_list(api, state, watching, as_http):
    server = emulator(api)
    server.gone_as_http = as_http
    add_node(api, "n2")
    wait_until(lambda: state.ledger("n2") is not None, "n2")
    api.core().create_namespaced_config_map("default", {"metadata": {"name": "c"}}, _preload_content=False)
    server.compact()  # both watches' versions are now older than any history kept
    server.drop_watches()
    add_node(api, "n3")
    wait_until(lambda: state.ledger("n3") is not None, "the node created while the history was gone")
    wait_until(lambda: server.open_watches == 2, "both watches resumed")
    add_node(api, "n4")  # and the watch after the new list delivers again
    wait_until(lambda: state.ledger("n4") is not None, "n4")
    assert lists(api) == {"nodes": 2, "pods": 2}


def test_bookmarks_keep_an_idle_watch_fresh_past_compaction(api, state, watching):
    server = emulator(api)
    before = watching.versions["pods"]
    core = api.core()
    core.create_namespaced_config_map("default", {"metadata": {"name": "churn"}}, _preload_content=False)
    server.bookmark_s = 0.05  # no pod changes: only a bookmark can move the pods' version on
    server.drop_watches()  # (the resumed watches take the new period)
    wait_until(lambda: int(watching.versions["pods"]) > int(before), "a bookmark for the pods' watch")
    wait_until(lambda: int(watching.versions["nodes"]) > int(before), "a bookmark for the nodes' watch")
    server.compact()
    server.drop_watches()
    wait_until(lambda: server.open_watches == 2, "both watches resumed")
    add_node(api, "n2")
    wait_until(lambda: state.ledger("n2") is not None, "n2")
    assert lists(api) == {"nodes": 1, "pods": 1}


def test_a_failing_watch_backs_off_instead_of_hammering(api, state):
    watcher = Watcher(api.api_client(), state, timings=WatchTimings(backoff=Backoff(0.05, 0.4)))
    server = emulator(api)
    server.gone_as_http = True
    watcher.start()
    try:
        assert state.synced.wait(WAIT_S)
        wait_until(lambda: server.open_watches == 2, "both watches open")
        server.time_scale = 1e9  # every watch now ends at once, with no event: each one counts as a failure
        server.bookmark_s = 1e12
        server.drop_watches()
        time.sleep(1.5)
    finally:
        watcher.stop()
    # 0.05 s doubling to 0.4 s, each stretched by up to 2x: about 6-9 tries in 1.5 s, never hundreds
    assert server.counts["watch", "nodes"] <= 14, server.counts
    assert lists(api) == {"nodes": 1, "pods": 1}


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        pytest.param(0.0, [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0], id="no jitter: doubling, capped"),
        pytest.param(1.0, [1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60.0, 60.0], id="full jitter: twice as long"),
    ],
)
def test_backoff_doubles_to_its_cap_and_jitter_stretches_it(draw, expected):
    delays = [Backoff().delay(n, lambda: draw) for n in range(1, 9)]
    assert delays == pytest.approx(expected)


def test_backoff_delays_differ_between_clients():
    delays = {round(Backoff().delay(3), 6) for _ in range(20)}
    assert len(delays) > 10
    assert all(3.2 <= d <= 6.4 for d in delays)


class Recording(ClusterState):
    """The state, noting which kind each fresh list replaced."""

    def __init__(self) -> None:
        super().__init__(NAMES, KEY, grace_s=60, clock=time.monotonic)
        self.order: list[str] = []

    def replace_nodes(self, nodes: Any) -> None:
        self.order.append("nodes")
        super().replace_nodes(nodes)

    def replace_pods(self, pods: Any) -> None:
        self.order.append("pods")
        super().replace_pods(pods)


def test_pods_are_listed_before_nodes_even_when_their_list_is_slow(api):
    """A replica answering before its lists are done must not know a node without its pods' load."""
    emulator(api).list_delay_s = {"pods": 0.3}
    state = Recording()
    watcher = Watcher(api.api_client(), state, timings=FAST)
    watcher.start()
    try:
        assert state.synced.wait(WAIT_S)
    finally:
        watcher.stop()
    assert state.order == ["pods", "nodes"]


# --- the fake's real-server behaviours ------------------------------------------------------------


def watch_events(api: KmockCluster, **params: Any) -> list[dict[str, Any]]:
    """One watch of nodes through the real client, ended by the server's ``timeoutSeconds``."""
    from kubernetes.watch.watch import iter_resp_lines

    response = api.core().list_node(watch=True, _preload_content=False, timeout_seconds=1, **params)
    try:
        return [json.loads(line) for line in iter_resp_lines(response)]  # type: ignore[no-untyped-call]
    finally:
        response.close()


def test_the_fake_resumes_a_watch_after_the_given_version_only(api):
    emulator(api).time_scale = 10.0  # timeoutSeconds=1 ends the watch after 0.1 s
    listed = json.loads(api.core().list_node(_preload_content=False).data)
    add_node(api, "n2")
    events = watch_events(api, resource_version=listed["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "n2")]
    assert [e["type"] for e in watch_events(api)] == ["ADDED", "ADDED"]  # no version: the current objects


def test_the_fake_answers_410_for_a_compacted_version_and_sends_bookmarks(api):
    server = emulator(api)
    server.time_scale = 10.0
    listed = json.loads(api.core().list_node(_preload_content=False).data)
    add_node(api, "n2")
    server.compact()
    (gone,) = watch_events(api, resource_version=listed["metadata"]["resourceVersion"])
    assert (gone["type"], gone["object"]["code"]) == ("ERROR", 410)
    events = watch_events(api, resource_version=str(int(listed["metadata"]["resourceVersion"]) + 1))
    assert [e["type"] for e in events] == []  # nothing after n2, no bookmarks unless asked for
    events = watch_events(api, resource_version=_current(api), allow_watch_bookmarks=True)
    assert [e["type"] for e in events][-1:] == ["BOOKMARK"]


def _current(api: KmockCluster) -> str:
    return str(json.loads(api.core().list_node(_preload_content=False).data)["metadata"]["resourceVersion"])
