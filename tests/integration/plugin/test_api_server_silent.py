"""An API server that accepts connections and never answers: every plugin call fails within its timeout."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from plugin.kube import ApiCluster, KubeError


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections on 127.0.0.1 and reads nothing; the kernel completes the handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


async def test_a_silent_api_server_costs_one_timeout_per_call_not_a_stuck_worker(silent_server: str) -> None:
    configuration = client.Configuration()
    configuration.host = silent_server
    configuration.retries = 0
    cluster = ApiCluster(client.ApiClient(configuration), timeout_s=0.3)
    for call in (
        cluster.get_node("node-1"),
        cluster.node_pods("node-1"),
        cluster.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}}),
    ):
        started = time.monotonic()
        with pytest.raises(KubeError):
            await call
        assert time.monotonic() - started < 3.0
