# mypy: disable-error-code="no-untyped-call"
"""The FakeKubelet's PodResources server can be rate-limited as the real kubelet's is (100 QPS, burst 10,
``RESOURCE_EXHAUSTED`` "rejected by rate limit"): calls are counted, never timed (the bucket runs on a clock
the test holds)."""

import grpc
import pytest

from plugin.api.podresources.v1 import api_pb2 as pr_pb2
from plugin.api.podresources.v1 import api_pb2_grpc as pr_grpc
from tests.fakes.kubelet import FakeKubelet, RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_gives_its_burst_then_refills_at_the_qps():
    clock = Clock()
    limit = RateLimit(qps=100, burst=10, clock=clock)
    assert [limit.allow() for _ in range(11)] == [True] * 10 + [False]
    clock.now = 0.05  # 5 tokens at 100 per second
    assert [limit.allow() for _ in range(6)] == [True] * 5 + [False]
    clock.now = 60.0  # never more than the burst
    assert sum(limit.allow() for _ in range(20)) == 10


@pytest.fixture
async def kubelet(short_dir):
    fake = FakeKubelet(short_dir / "device-plugins", short_dir / "pod-resources" / "kubelet.sock")
    await fake.start()
    yield fake
    await fake.stop()


async def test_list_past_the_burst_is_refused_with_resource_exhausted(kubelet):
    clock = Clock()
    kubelet.pod_resources_limit = RateLimit(qps=100, burst=3, clock=clock)
    async with grpc.aio.insecure_channel(f"unix://{kubelet.pod_resources_socket}") as channel:
        stub = pr_grpc.PodResourcesListerStub(channel)
        for _ in range(3):
            await stub.List(pr_pb2.ListPodResourcesRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.List(pr_pb2.ListPodResourcesRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == "rejected by rate limit"
        clock.now = 0.01  # one token back
        await stub.List(pr_pb2.ListPodResourcesRequest(), timeout=5)
    assert (kubelet.list_calls, kubelet.list_refused) == (5, 1)
