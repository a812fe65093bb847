"""The extender's list-and-watch (``extender.kube.Watcher``) against the real kube-apiserver and etcd.

A control plane of its own (etcd and kube-apiserver only, no scheduler, extender or chart), so that the API
server's request counters are this module's alone, with ``--watch-cache=false``: watches are served from etcd,
whose history this test compacts (etcd's ``/v3/kv/compaction`` over its HTTP gateway) to make a
resourceVersion too old at once. With the watch cache on, a version leaves the cache's window only after
minutes of churn (the cache grows while its oldest event is younger than 75 s) or an API server restart.

Cases: the server ending a watch (``timeoutSeconds``) costs a WATCH and no LIST, counted by the Watcher and
by the API server's ``apiserver_request_total``; a watch resumed from a compacted version gets the real 410
and costs exactly one LIST per kind, after which a node created later is seen.
"""

import json
import logging
import re
import shutil
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extender.clusterstate import ClusterState
from extender.kube import Backoff, Watcher, WatchTimings
from tests.fakes.extender import KEY, NAMES, gpu_node
from tests.k8s.controlplane import BIN_DIR, ControlPlane, binaries_missing
from tests.k8s.processes import wait_for

WATCH_S = 2.0
"""Each watch asks the server to end it after this long (client-go asks for 5-10 min)."""
TIMINGS = WatchTimings(timeout_s=(WATCH_S, WATCH_S), backoff=Backoff(0.05, 0.4), short_s=0.5)
KINDS = ("nodes", "pods")


class _EtcdWatchPlane(ControlPlane):
    """The tier's control plane with watches served from etcd rather than the API server's watch cache."""

    def _apiserver_args(self) -> list[str]:
        return [*super()._apiserver_args(), "--watch-cache=false"]

    def etcd(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A call to etcd's v3 JSON gateway (``POST /v3/...``)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports.etcd_client}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def compact(self) -> int:
        """Compact etcd's history up to its current revision; returns that revision."""
        revision = int(self.etcd("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        self.etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def requests(self, resource: str) -> dict[str, int]:
        """``apiserver_request_total`` for ``resource`` summed by verb (LIST, WATCH, ...), from /metrics."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        with urllib.request.urlopen(self.url + "/metrics", context=context, timeout=10) as response:
            text = response.read().decode()
        counts: dict[str, int] = {}
        for labels, value in re.findall(r"^apiserver_request_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
            if f'resource="{resource}"' in labels and 'subresource=""' in labels:
                verb = re.search(r'verb="([A-Z]+)"', labels)
                if verb:
                    counts[verb.group(1)] = counts.get(verb.group(1), 0) + int(float(value))
        return counts


@pytest.fixture(scope="module")
def plane() -> Iterator[_EtcdWatchPlane]:
    missing = binaries_missing(("etcd", "kube-apiserver"))
    if missing:
        pytest.skip(f"{', '.join(missing)} not built in {BIN_DIR}: run `make k8s-controlplane`")
    workdir = Path(tempfile.mkdtemp(prefix="kv-k8s-watch-"))
    control = _EtcdWatchPlane(workdir)
    try:
        control.start()
        yield control
    except BaseException:
        for process in control.processes:
            print(f"--- {process.name}:\n{process.tail(40)}")
        raise
    finally:
        control.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def api(plane: _EtcdWatchPlane) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(plane.admin_kubeconfig))  # type: ignore[no-untyped-call]


@pytest.fixture
def state() -> ClusterState:
    return ClusterState(NAMES, KEY, grace_s=60, clock=time.monotonic)


@pytest.fixture
def watcher(api: Any, state: ClusterState) -> Iterator[Watcher]:
    watching = Watcher(api, state, timings=TIMINGS)
    watching.start()
    assert state.synced.wait(30), "the first lists never completed"
    yield watching
    watching.stop()


def add_node(api: Any, name: str) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)  # raw dict bodies
    core.create_node(gpu_node(name, gpus=2), _preload_content=False)


def add_config_map(api: Any, name: str) -> None:
    """A write that moves etcd's revision on without an event for the watched kinds."""
    from kubernetes import client

    body = {"metadata": {"name": name}, "data": {"k": "v"}}
    core: Any = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", body, _preload_content=False)


def lists_and_watches(plane: _EtcdWatchPlane) -> tuple[int, int]:
    """The API server's count of LIST and of WATCH requests for nodes and pods, all clients."""
    counts = [plane.requests(kind) for kind in KINDS]
    return sum(c.get("LIST", 0) for c in counts), sum(c.get("WATCH", 0) for c in counts)


def test_a_watch_the_server_ends_is_resumed_without_a_list(plane, api, state, watcher):
    lists_before, watches_before = lists_and_watches(plane)
    watches = dict(watcher.watches)
    wait_for(
        lambda: all(watcher.watches[k] >= watches[k] + 2 for k in KINDS),
        timeout_s=6 * WATCH_S,
        what="two watches of each kind ended by the server and resumed",
    )
    add_node(api, "after-timeouts")
    wait_for(lambda: state.ledger("after-timeouts"), timeout_s=3 * WATCH_S, what="the node from the watch")
    lists_after, watches_after = lists_and_watches(plane)

    assert dict(watcher.lists) == {"nodes": 1, "pods": 1}
    assert lists_after == lists_before
    # a WATCH is counted when it ends: at least the two per kind the server ended at timeoutSeconds
    assert watches_after >= watches_before + 2 * len(KINDS), (watches_before, watches_after)


def test_a_watch_resumed_from_a_compacted_version_lists_again_once(plane, api, state, watcher, caplog):
    caplog.set_level(logging.INFO, logger="extender.kube")
    add_node(api, "before-compaction")
    wait_for(lambda: state.ledger("before-compaction"), timeout_s=3 * WATCH_S, what="the first node")
    seen = {k: int(watcher.versions[k]) for k in KINDS}
    lists_before, _ = lists_and_watches(plane)
    for i in range(2):  # history past both versions, then drop it
        add_config_map(api, f"churn-{i}")
    compacted = plane.compact()
    assert compacted > max(seen.values()) + 1, (seen, compacted)

    wait_for(
        lambda: all(watcher.lists[k] == 2 and int(watcher.versions.get(k) or 0) >= compacted for k in KINDS),
        timeout_s=4 * WATCH_S,
        what="a new list of each kind after the real 410",
    )
    add_node(api, "after-410")
    wait_for(lambda: state.ledger("after-410"), timeout_s=3 * WATCH_S, what="the node created after the 410")
    time.sleep(WATCH_S)  # one more server timeout: resumed from the new version, no third list

    assert dict(watcher.lists) == {"nodes": 2, "pods": 2}
    assert lists_and_watches(plane)[0] == lists_before + len(KINDS)
    expired = [r.__dict__.get("kind") for r in caplog.records if "(410)" in r.getMessage()]
    assert sorted(expired) == list(KINDS), "each kind got exactly one 410 from the server"
    assert state.ledger("before-compaction") is not None
