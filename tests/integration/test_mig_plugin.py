# mypy: disable-error-code="no-untyped-call"
"""MIG device plugins over real gRPC on Unix sockets: a FakeKubelet, real pynvml over the FAKE NVML.

Cases: ListAndWatch under each strategy (none: nothing registered; single: every instance as <domain>/gpu,
refused with two profiles; mixed: one resource per profile); an XID on one instance marks only it, a whole-GPU
XID marks all the GPU's instances; Allocate under envvar, cdi (with the spec file) and device-specs (with the
capability devices from the minors file), and an unknown ID refused.
"""

import asyncio
import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import grpc
import pytest

from plugin.core.allocate import CONTROL_DEVICES, DeviceListStrategy, PlanOptions
from plugin.core.mig import MigConfigError, MigStrategy
from plugin.mig import MigOptions, MigPlugins
from plugin.nvml import Nvml
from tests.fakes.kubelet import FakeKubelet
from tests.fakes.nvml.harness import fake_nvml_fixture, node_description  # noqa: F401 (fixture)
from vcuda.names import Names

MIG_3G = "nvidia.com/mig-3g.20gb"


@pytest.fixture
def short_dir():
    """Unix socket paths must stay under 108 bytes, so not tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="kvm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class MigEnv:
    def __init__(self, root: Path, node, nvml: Nvml, kubelet: FakeKubelet, plugins: MigPlugins) -> None:
        self.root, self.node, self.nvml, self.kubelet, self.plugins = root, node, nvml, kubelet, plugins
        self.task: asyncio.Task[None] | None = None

    async def admit(self, resource: str, count: int):
        await self.kubelet.wait_registered(resource)
        return await self.kubelet.admit("default", "p", [("c", count)], resource)

    def ids(self, resource: str) -> list[str]:
        return [d.uuid for d in self.plugins.resources[resource]]


@pytest.fixture
async def serve(fake_nvml, short_dir):
    """``await serve(strategy, list_strategy=..., node=...)`` -> a running :class:`MigEnv`."""
    envs: list[MigEnv] = []

    async def make(strategy, *, list_strategy=DeviceListStrategy.ENVVAR, node="a100x4-mig", minors=""):
        fake = fake_nvml(node)
        nvml = Nvml(event_poll_ms=20)
        nvml.open()
        kubelet = FakeKubelet(short_dir / "dp", short_dir / "pr" / "kubelet.sock")
        await kubelet.start()
        (short_dir / "mig-minors").write_text(minors)
        options = MigOptions(
            strategy=strategy,
            plan=PlanOptions(list_strategy=list_strategy, cdi_prefix="kube-vgpu.io/gpu"),
            cdi_dir=short_dir / "cdi",
            plugin_dir=short_dir / "dp",
            probe_s=0.05,
            poll_s=0.05,
            minors_path=short_dir / "mig-minors",
        )
        env = MigEnv(short_dir, fake, nvml, kubelet, None)  # type: ignore[arg-type]
        envs.append(env)
        env.plugins = MigPlugins(nvml.discover(), nvml, Names(), options)
        env.task = asyncio.get_running_loop().create_task(env.plugins.run())
        return env

    yield make
    for env in envs:
        if env.task is not None:
            env.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await env.task
        await env.kubelet.stop()
        env.nvml.close()


def health(devices):
    return {d.ID: d.health for d in devices}


async def test_strategy_none_registers_nothing(serve):
    env = await serve(MigStrategy.NONE)

    await asyncio.wait_for(env.task, 2)

    assert env.kubelet.endpoints == {}


async def test_strategy_mixed_lists_each_profile_under_its_own_resource(serve):
    env = await serve(MigStrategy.MIXED)

    lists = {r: await env.kubelet.next_devices(r) for r in env.plugins.resources}

    assert {r: len(d) for r, d in lists.items()} == {
        "nvidia.com/mig-1g.5gb": 1,
        "nvidia.com/mig-2g.10gb": 3,
        MIG_3G: 2,
    }
    assert [d.ID for d in lists[MIG_3G]] == env.ids(MIG_3G)
    assert all(d.health == "Healthy" and d.topology.nodes[0].ID == 0 for d in lists[MIG_3G])


async def test_strategy_single_lists_every_instance_as_a_whole_gpu(serve):
    description = node_description("a100x4-mig")
    description["gpus"][1]["mig"]["instances"] = [{"profile": "3g.20gb"}, {"profile": "3g.20gb"}]

    env = await serve(MigStrategy.SINGLE, node=description)
    devices = await env.kubelet.next_devices("nvidia.com/gpu")

    assert len(devices) == 4
    assert all(d.ID.startswith("MIG-") for d in devices)


async def test_strategy_single_refuses_a_node_with_two_profiles(serve):
    with pytest.raises(MigConfigError, match="'single' needs one MIG profile"):
        await serve(MigStrategy.SINGLE)


async def test_an_xid_on_one_instance_marks_only_that_instance(serve):
    env = await serve(MigStrategy.MIXED)
    first, second = env.ids(MIG_3G)
    await env.kubelet.next_devices(MIG_3G)

    env.node.inject_xid(env.node.uuid(0), 79, gpu_instance_id=2, compute_instance_id=0)
    devices = await env.kubelet.devices_until(MIG_3G, lambda ds: "Unhealthy" in health(ds).values())

    assert health(devices) == {first: "Healthy", second: "Unhealthy"}


async def test_a_whole_gpu_xid_marks_every_instance_of_the_gpu(serve):
    env = await serve(MigStrategy.MIXED)
    await env.kubelet.next_devices(MIG_3G)
    other = await env.kubelet.next_devices("nvidia.com/mig-2g.10gb")

    env.node.inject_xid(env.node.uuid(0), 48)
    devices = await env.kubelet.devices_until(MIG_3G, lambda ds: set(health(ds).values()) == {"Unhealthy"})

    assert len(devices) == 2
    assert set(health(other).values()) == {"Healthy"}  # GPU 1's instances are untouched


async def test_an_application_xid_on_an_instance_changes_nothing(serve):
    env = await serve(MigStrategy.MIXED)
    await env.kubelet.next_devices(MIG_3G)

    env.node.inject_xid(env.node.uuid(0), 43, gpu_instance_id=1, compute_instance_id=0)
    env.node.inject_xid(env.node.uuid(0), 79, gpu_instance_id=2, compute_instance_id=0)
    devices = await env.kubelet.devices_until(MIG_3G, lambda ds: "Unhealthy" in health(ds).values())

    assert health(devices)[env.ids(MIG_3G)[0]] == "Healthy"


async def test_allocate_with_envvar_names_the_mig_uuid(serve):
    env = await serve(MigStrategy.MIXED)

    (admitted,) = await env.admit(MIG_3G, 1)

    assert dict(admitted.response.envs) == {"NVIDIA_VISIBLE_DEVICES": admitted.ids[0]}
    assert admitted.ids[0] in env.ids(MIG_3G)


async def test_allocate_with_cdi_names_the_instance_described_in_the_spec(serve):
    minors = "gpu0/gi1/access 10\ngpu0/gi1/ci0/access 11\ngpu0/gi2/access 20\ngpu0/gi2/ci0/access 21\n"
    env = await serve(MigStrategy.MIXED, list_strategy=DeviceListStrategy.CDI, minors=minors)

    (admitted,) = await env.admit(MIG_3G, 2)
    spec = json.loads((env.root / "cdi" / "kube-vgpu.io-gpu-mig.json").read_text())

    assert [c.name for c in admitted.response.cdi_devices] == [f"kube-vgpu.io/gpu={i}" for i in admitted.ids]
    described = {d["name"]: d["containerEdits"]["deviceNodes"] for d in spec["devices"]}
    assert described[env.ids(MIG_3G)[1]] == [
        {"path": "/dev/nvidia0"},
        {"path": "/dev/nvidia-caps/nvidia-cap20"},
        {"path": "/dev/nvidia-caps/nvidia-cap21"},
    ]


async def test_allocate_with_device_specs_adds_the_capability_devices(serve):
    minors = "config 1\nmonitor 2\ngpu1/gi4/access 40\ngpu1/gi4/ci0/access 41\n"
    env = await serve(MigStrategy.MIXED, list_strategy=DeviceListStrategy.DEVICE_SPECS, minors=minors)

    (admitted,) = await env.admit("nvidia.com/mig-1g.5gb", 1)

    assert [d.host_path for d in admitted.response.devices] == [
        "/dev/nvidia1",
        "/dev/nvidia-caps/nvidia-cap40",
        "/dev/nvidia-caps/nvidia-cap41",
        *CONTROL_DEVICES,
    ]
    assert dict(admitted.response.envs) == {"NVIDIA_VISIBLE_DEVICES": "void"}


async def test_allocate_refuses_an_id_it_does_not_serve(serve):
    from plugin.api.deviceplugin.v1beta1 import api_pb2

    env = await serve(MigStrategy.MIXED)
    ep = await env.kubelet.wait_registered(MIG_3G)
    request = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["x"])]
    )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ep.stub.Allocate(request, timeout=5)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_allocate_refuses_an_id_listed_twice(serve):
    """A device counted twice would hand the container one instance as two; NVIDIA's plugin refuses it too."""
    from plugin.api.deviceplugin.v1beta1 import api_pb2

    env = await serve(MigStrategy.MIXED)
    ep = await env.kubelet.wait_registered(MIG_3G)
    device = (await env.kubelet.devices_until(MIG_3G, lambda d: len(d) > 0))[0].ID
    request = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=[device, device])]
    )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ep.stub.Allocate(request, timeout=5)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than once" in (raised.value.details() or "")
