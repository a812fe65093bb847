"""The plugin's one PodResources client (plugin.podresources.PodResourcesClient) against a fake kubelet
PodResourcesLister served by real gRPC (asyncio) on a tmp_path Unix socket.

Cases: ``held`` lists every container with the IDs of the asked resource only (a container holding none is
still listed); ``held_ids`` answers the union over several resources from one ``List`` (MIG partitioning used
to call ``List`` once per resource); MIG partitioning's ``held_device_ids`` gives ``None`` when the kubelet
does not answer, so nothing held is destroyed; the exporter's cached view (``PodResourcesCache``, asked from
another thread) and the allocator ask the same client over one channel.
"""

import asyncio
from pathlib import Path

import grpc
import pytest

from plugin.api.podresources.v1 import api_pb2
from plugin.core.admission import Held
from plugin.metrics.sources import ContainerName
from plugin.mig_partition import held_device_ids
from plugin.podresources import PodResourcesCache, PodResourcesClient
from tests.fakes.podresources import serving
from vcuda.names import Names

NAMES = Names()
CORE, GPU, MIG = NAMES.core, f"{NAMES.domain}/gpu", f"{NAMES.domain}/mig-1g.10gb"


def container(name: str, **devices: list[str]) -> api_pb2.ContainerResources:
    by_resource = {"core": CORE, "gpu": GPU, "mig": MIG}
    return api_pb2.ContainerResources(
        name=name,
        devices=[
            api_pb2.ContainerDevices(resource_name=by_resource[r], device_ids=ids)
            for r, ids in devices.items()
        ],
    )


PODS = [
    api_pb2.PodResources(
        namespace="team-a",
        name="train",
        containers=[container("trainer", core=["GPU-a::0", "GPU-a::1"], gpu=["GPU-b"]), container("logger")],
    ),
    api_pb2.PodResources(namespace="team-b", name="infer", containers=[container("server", mig=["MIG-c"])]),
]


@pytest.fixture
async def kubelet(tmp_path: Path):
    socket = tmp_path / "pod-resources.sock"
    async with serving(socket, PODS) as fake:
        yield fake, socket


async def test_held_lists_every_container_with_the_ids_of_its_own_resource_only(kubelet):
    _, socket = kubelet
    client = PodResourcesClient(socket)
    try:
        held = (await client.list()).held(CORE)
    finally:
        await client.close()
    assert held == [
        Held("team-a", "train", "trainer", frozenset({"GPU-a::0", "GPU-a::1"})),
        Held("team-a", "train", "logger", frozenset()),
        Held("team-b", "infer", "server", frozenset()),
    ]


async def test_held_ids_unites_several_resources_from_one_list_call(kubelet):
    fake, socket = kubelet
    client = PodResourcesClient(socket)
    try:
        ids = (await client.list()).held_ids({CORE, MIG})
    finally:
        await client.close()
    assert ids == frozenset({"GPU-a::0", "GPU-a::1", "MIG-c"})
    assert fake.calls == 1


async def test_mig_partitioning_reads_every_held_resource_with_one_list_call(kubelet):
    fake, socket = kubelet
    client = PodResourcesClient(socket)
    try:
        held = await held_device_ids(client.list, {CORE, GPU, MIG})
    finally:
        await client.close()
    assert held == frozenset({"GPU-a::0", "GPU-a::1", "GPU-b", "MIG-c"})
    assert fake.calls == 1


async def test_mig_partitioning_gets_none_when_the_kubelet_does_not_answer(tmp_path: Path):
    client = PodResourcesClient(tmp_path / "absent.sock", timeout_s=0.5)
    try:
        assert await held_device_ids(client.list, {CORE, GPU}) is None
    finally:
        await client.close()


async def test_the_exporters_view_and_the_allocator_ask_one_client_over_one_channel(kubelet, monkeypatch):
    """What plugin.__main__ wires: the allocator's ``held`` (plugin.wiring) and the exporter's scrape thread
    (a PodResourcesCache on the agent's loop) both call ``PodResourcesClient.list``: one aio channel, no sync
    one."""
    fake, socket = kubelet
    made: list[str] = []
    real = grpc.aio.insecure_channel

    def counted(target: str, *args: object, **kwargs: object) -> grpc.aio.Channel:
        made.append(target)
        return real(target, *args, **kwargs)  # type: ignore[arg-type]

    def refused(target: str, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"a second, synchronous channel to {target}")

    monkeypatch.setattr(grpc.aio, "insecure_channel", counted)
    monkeypatch.setattr(grpc, "insecure_channel", refused)
    client = PodResourcesClient(socket)
    view = PodResourcesCache(client.list, asyncio.get_running_loop())
    try:
        held = (await client.list()).held(CORE)  # the allocator, on the loop
        live = await asyncio.to_thread(view.live_containers)  # a scrape, from the exporter's thread
        held_again = (await client.list()).held(CORE)
    finally:
        await client.close()
    assert live == {
        ContainerName("team-a", "train", "trainer"),
        ContainerName("team-a", "train", "logger"),
        ContainerName("team-b", "infer", "server"),
    }
    assert held == held_again
    assert made == [f"unix://{socket}"]
    assert fake.calls == 3
