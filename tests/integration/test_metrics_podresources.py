"""KubeletPodResources against a fake kubelet PodResourcesLister served by real gRPC on a tmp_path Unix
socket: the live set, the TTL cache (one List per TTL, under the kubelet's rate limit), and errors."""

from concurrent import futures

import grpc
import pytest

from plugin.api.podresources.v1 import api_pb2, api_pb2_grpc
from plugin.metrics.podresources import KubeletPodResources
from plugin.metrics.sources import ContainerName, SourceError


class FakeKubeletPodResources(api_pb2_grpc.PodResourcesListerServicer):
    """A fake kubelet: List answers the pods in ``self.pods``; counts calls."""

    def __init__(self) -> None:
        self.pods: list[api_pb2.PodResources] = []
        self.calls = 0

    def List(self, request, context):  # noqa: N802
        self.calls += 1
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


def pod(ns: str, name: str, *containers: str) -> api_pb2.PodResources:
    devices = [api_pb2.ContainerDevices(resource_name="nvidia.com/vcuda-core", device_ids=["GPU-a::0"])]
    return api_pb2.PodResources(
        namespace=ns,
        name=name,
        containers=[api_pb2.ContainerResources(name=c, devices=devices) for c in containers],
    )


@pytest.fixture
def kubelet(tmp_path):
    fake = FakeKubeletPodResources()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    socket = tmp_path / "kubelet.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    yield fake, str(socket)
    server.stop(grace=None)


def test_live_containers_are_listed_and_cached_for_the_ttl(kubelet):
    fake, socket = kubelet
    fake.pods = [pod("team-a", "train", "trainer", "logger")]
    now = [0.0]
    source = KubeletPodResources(socket, ttl_s=10, timeout_s=5, clock=lambda: now[0])
    expected = {ContainerName("team-a", "train", "trainer"), ContainerName("team-a", "train", "logger")}
    assert source.live_containers() == expected
    fake.pods = []
    now[0] = 9.5
    assert source.live_containers() == expected
    now[0] = 10.0
    assert source.live_containers() == frozenset()
    assert fake.calls == 2
    source.close()


def test_unreachable_kubelet_is_a_source_error(tmp_path):
    source = KubeletPodResources(str(tmp_path / "absent.sock"), timeout_s=0.5)
    with pytest.raises(SourceError, match="PodResources List failed"):
        source.live_containers()
    source.close()
