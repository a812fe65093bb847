"""PodResources adapter: response conversion. The gRPC round trip, TTL cache and failures are in
tests/integration/test_metrics_podresources.py (a fake kubelet on a tmp_path Unix socket)."""

from types import SimpleNamespace

from plugin.metrics.podresources import live_from_response
from plugin.metrics.sources import ContainerName


def pod(ns: str, name: str, *containers: str) -> SimpleNamespace:
    return SimpleNamespace(namespace=ns, name=name, containers=[SimpleNamespace(name=c) for c in containers])


def test_every_container_of_every_pod_is_live():
    live = live_from_response([pod("a", "p", "c1", "c2"), pod("b", "q"), pod("b", "r", "c")])
    assert live == {
        ContainerName("a", "p", "c1"),
        ContainerName("a", "p", "c2"),
        ContainerName("b", "r", "c"),
    }
