"""serve(): the exporter over real loopback HTTP, on its own registry (no default process/python metrics)."""

import urllib.request

import pytest

from plugin.metrics.exporter import DEFAULT_PORT, NodeCollector, serve
from tests.fakes.node import GIB, FakeContainer, FakeNodeFs, uid


@pytest.fixture
def exporter(tmp_path):
    fs = FakeNodeFs(tmp_path)
    fs.add_container(FakeContainer(uid(1), "team-a", "train", "trainer", [("GPU-x", 2 * GIB, 25, 25)]))
    server, thread = serve(
        0, NodeCollector(node="n1", state_dir=fs.state_dir, root=tmp_path), addr="127.0.0.1"
    )
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_metrics_path_serves_the_text_format_with_our_series_only(exporter):
    with urllib.request.urlopen(exporter, timeout=5) as response:
        body = response.read().decode()
        content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=0.0.4")
    assert (
        'kube_vgpu_container_memory_limit_bytes{container="trainer",gpu_uuid="GPU-x",namespace="team-a",'
        'node="n1",pod="train"} 2.147483648e+09'
    ) in body.splitlines()
    assert "# TYPE kube_vgpu_container_throttled_seconds_total counter" in body
    assert not [line for line in body.splitlines() if line.startswith(("python_", "process_"))]


def test_default_port_is_9400():
    assert DEFAULT_PORT == 9400
