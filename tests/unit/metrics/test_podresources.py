"""PodResources (plugin.podresources): the reading of a ``List`` answer, and the exporter's cached view when
the agent's event loop does not answer. The gRPC round trip, TTL cache and kubelet failures are in
tests/integration/test_metrics_podresources.py and test_podresources_client.py (a fake kubelet on a tmp_path
Unix socket)."""

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from plugin.core.admission import Held
from plugin.metrics.sources import ContainerName, SourceError
from plugin.podresources import Listing, PodResourcesCache


def live_from_response(pod_resources: Any) -> frozenset[ContainerName]:
    return Listing.of(pod_resources).live_containers()


def claims_from_response(pod_resources: Any) -> dict[ContainerName, frozenset[str]]:
    return Listing.of(pod_resources).container_claims()


def pod(ns: str, name: str, *containers: str) -> SimpleNamespace:
    return SimpleNamespace(
        namespace=ns,
        name=name,
        containers=[SimpleNamespace(name=c, devices=[], dynamic_resources=[]) for c in containers],
    )


def test_every_container_of_every_pod_is_live():
    live = live_from_response([pod("a", "p", "c1", "c2"), pod("b", "q"), pod("b", "r", "c")])
    assert live == {
        ContainerName("a", "p", "c1"),
        ContainerName("a", "p", "c2"),
        ContainerName("b", "r", "c"),
    }


def _dra_pod(ns: str, name: str, containers: dict[str, list[str]]) -> Any:
    """containers: name -> CDI device names of its dynamic resources, as real protobuf messages."""
    from plugin.api.podresources.v1 import api_pb2

    return api_pb2.PodResources(
        name=name,
        namespace=ns,
        containers=[
            api_pb2.ContainerResources(
                name=c,
                dynamic_resources=[
                    api_pb2.DynamicResource(
                        claim_name="claim",
                        claim_namespace=ns,
                        claim_resources=[
                            api_pb2.ClaimResource(cdi_devices=[api_pb2.CDIDevice(name=n) for n in names])
                        ],
                    )
                ],
            )
            for c, names in containers.items()
        ],
    )


UID = "5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11"


def test_dra_containers_name_the_kube_vgpu_claims_they_use():
    ours = f"kube-vgpu.nvidia.com/claim={UID}-gpu-5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11"
    found = claims_from_response(
        [_dra_pod("a", "p", {"cuda": [ours, "gpu.nvidia.com/gpu=gpu-0"], "log": [], "other": ["k8s.io/x=y"]})]
    )
    assert found == {ContainerName("a", "p", "cuda"): frozenset({UID})}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("gpu.nvidia.com/claim=u-gpu-x", id="another driver"),
        pytest.param("kube-vgpu.nvidia.com/gpu=gpu-0", id="our device-plugin CDI kind"),
        pytest.param("kube-vgpu.nvidia.com/claim=../../etc-gpu-x", id="a path in the UID"),
        pytest.param("kube-vgpu.nvidia.com/claim=" + "u" * 80 + "-gpu-x", id="a UID too long"),
    ],
)
def test_other_cdi_devices_name_no_claim(name: str):
    assert claims_from_response([_dra_pod("a", "p", {"cuda": [name]})]) == {}


def _device_pod() -> Any:
    """One pod, as the kubelet lists it: a resource may come in several entries (one per NUMA node)."""
    from plugin.api.podresources.v1 import api_pb2

    def devices(resource: str, *ids: str) -> Any:
        return api_pb2.ContainerDevices(resource_name=resource, device_ids=ids)

    return api_pb2.PodResources(
        namespace="a",
        name="p",
        containers=[
            api_pb2.ContainerResources(
                name="main",
                devices=[devices("core", "g::0"), devices("core", "g::1"), devices("gpu", "GPU-b")],
            ),
            api_pb2.ContainerResources(name="log", devices=[devices("mig", "MIG-c")]),
            api_pb2.ContainerResources(name="idle"),
        ],
    )


def test_every_reader_projects_the_one_listing():
    listing = Listing.of([_device_pod()])
    assert listing.held("core") == [
        Held("a", "p", "main", frozenset({"g::0", "g::1"})),
        Held("a", "p", "log", frozenset()),
        Held("a", "p", "idle", frozenset()),
    ]
    assert listing.held_ids({"core", "mig"}) == {"g::0", "g::1", "MIG-c"}
    assert listing.held_by_resource() == {
        "core": frozenset({"g::0", "g::1"}),
        "gpu": frozenset({"GPU-b"}),
        "mig": frozenset({"MIG-c"}),
    }
    assert listing.live_containers() == {ContainerName("a", "p", c) for c in ("main", "log", "idle")}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The agent's event loop, running in its own thread while the test plays the scrape thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


async def _empty() -> Listing:
    return Listing(())


def test_a_stuck_loop_is_a_source_error_for_each_scrape_never_a_hung_one(loop):
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait)  # the loop is stuck in a blocking call until released
    cache = PodResourcesCache(_empty, loop, wait_s=0.05)
    try:
        for _ in range(2):  # every scrape gives up on its own: nothing waits for the first
            with pytest.raises(SourceError, match="did not answer within"):
                cache.live_containers()
    finally:
        release.set()
    assert (
        PodResourcesCache(_empty, loop, wait_s=60).live_containers() == frozenset()
    )  # the loop serves again


def test_a_closed_loop_is_a_source_error():
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(SourceError, match="loop is gone"):
        PodResourcesCache(_empty, loop).live_containers()


async def test_asking_from_the_loops_own_thread_is_a_source_error_not_a_deadlock():
    cache = PodResourcesCache(_empty, asyncio.get_running_loop())
    with pytest.raises(SourceError, match="its own event loop"):
        cache.container_claims()
