"""The exporter's PodResources view (plugin.podresources.PodResourcesCache over the agent's client, asked from
another thread as the scrape thread asks it) against a fake kubelet PodResourcesLister served by real gRPC on a
tmp_path Unix socket: the live set, the TTL cache (one List per TTL, under the kubelet's rate limit), and
errors."""

import asyncio
from pathlib import Path

import pytest

from plugin.api.podresources.v1 import api_pb2
from plugin.metrics.sources import ContainerName, SourceError
from plugin.podresources import PodResourcesCache, PodResourcesClient
from tests.fakes.podresources import serving


def pod(ns: str, name: str, *containers: str) -> api_pb2.PodResources:
    devices = [api_pb2.ContainerDevices(resource_name="nvidia.com/vcuda-core", device_ids=["GPU-a::0"])]
    return api_pb2.PodResources(
        namespace=ns,
        name=name,
        containers=[api_pb2.ContainerResources(name=c, devices=devices) for c in containers],
    )


@pytest.fixture
async def kubelet(tmp_path):
    socket = tmp_path / "kubelet.sock"
    async with serving(socket) as fake:
        yield fake, str(socket)


async def test_live_containers_are_listed_and_cached_for_the_ttl(kubelet):
    fake, socket = kubelet
    fake.pods = [pod("team-a", "train", "trainer", "logger")]
    now = [0.0]
    client = PodResourcesClient(Path(socket), timeout_s=5)
    source = PodResourcesCache(client.list, asyncio.get_running_loop(), ttl_s=10, clock=lambda: now[0])
    expected = {ContainerName("team-a", "train", "trainer"), ContainerName("team-a", "train", "logger")}
    assert await asyncio.to_thread(source.live_containers) == expected
    fake.pods = []
    now[0] = 9.5
    assert await asyncio.to_thread(source.live_containers) == expected
    assert await asyncio.to_thread(source.container_claims) == {}  # from the same cached List
    now[0] = 10.0
    assert await asyncio.to_thread(source.live_containers) == frozenset()
    assert fake.calls == 2
    await client.close()


async def test_unreachable_kubelet_is_a_source_error(tmp_path):
    client = PodResourcesClient(tmp_path / "absent.sock", timeout_s=0.5)
    source = PodResourcesCache(client.list, asyncio.get_running_loop())
    with pytest.raises(SourceError, match="PodResources List failed"):
        await asyncio.to_thread(source.live_containers)
    await client.close()
