# mypy: disable-error-code="no-untyped-call"
"""``nvidia.com/gpu`` served beside ``vcuda-core`` from NVIDIA's config file, through the real device-plugin
gRPC API against the fake kubelet (plugin.nvidia, docs/nvidia-plugin.md).

Matrix: whole GPUs (UUID device IDs, NVLink/NUMA-aligned preference, envvar/cdi/device-specs visibility,
inventory ``other``, ``vcuda-memory`` and GFD labels); time-slicing replicas (``<uuid>::<n>``, isolation
with the shim, renamed resource, failRequestsGreaterThanOne); MPS (daemon per GPU started, restarted when it
dies, told to quit; client environment); a mode switch refused while a container holds the GPU.
"""

import asyncio
import dataclasses
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from plugin.core.errors import ConfigError
from plugin.core.gpu import MigInstance
from plugin.core.nvallocate import MPS_PIPE_PATH
from plugin.nvidia import MODES_FILE, quit_recorded_mps
from plugin.settings import load_settings
from plugin.wiring import build_agent
from tests.builders.plugin import NAMES, gpus, h100x8
from tests.fakes.gpu_source import FakeGpuSource
from tests.fakes.kubelet import Admitted
from tests.fixtures.plugin_env import NODE, PluginEnv, eventually, make_settings
from vcuda import names as vnames
from vcuda.annotations import decode_inventory
from vcuda.model import GpuLink, GpuMode, GpuUuid, NodeInventory, PcieLevel
from vcuda.shimfile import decode_config, decode_placement

GPU = "nvidia.com/gpu"
FAKE_MPS = Path(__file__).parents[2] / "fakes" / "mps_control.py"
H100 = h100x8()
UUIDS = [g.uuid for g in H100.gpus]


def config_file(root: Path, doc: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "nvidia-config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def nvidia_env(
    env_factory: Any, short_dir: Path, doc: dict[str, Any], resource: str = GPU, **kw: Any
) -> PluginEnv:
    env: PluginEnv = await env_factory(config_file=config_file(short_dir / "cfg", doc), **kw)
    await env.kubelet.wait_registered(resource, timeout=10)
    return env


async def inventory(env: PluginEnv, ready: Callable[[NodeInventory], bool] = lambda _: True) -> NodeInventory:
    """The inventory annotation once the agent has written it and ``ready`` holds (it writes in its own time:
    the device lists a test waits for may reach the kubelet first)."""

    def written() -> NodeInventory | None:
        raw = (env.node()["metadata"].get("annotations") or {}).get(NAMES.inventory)
        return None if raw is None else decode_inventory(raw)

    await eventually(lambda: (inv := written()) is not None and ready(inv))
    found = written()
    assert found is not None
    return found


async def events(env: PluginEnv, count: int) -> list[dict[str, Any]]:
    """The namespace's events once ``count`` are recorded (the agent posts them in its own time)."""

    def recorded() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            env.core.list_namespaced_event("default", _preload_content=False).data
        )["items"]
        return items

    await eventually(lambda: len(recorded()) >= count)
    return recorded()


async def test_whole_gpus_are_served_as_nvidia_gpu_with_uuid_ids_and_leave_the_vcuda_inventory(
    env_factory: Any, short_dir: Path
) -> None:
    env = await nvidia_env(env_factory, short_dir, {"version": "v1", "flags": {"migStrategy": "none"}})
    devices = await env.kubelet.devices_until(GPU, lambda d: len(d) == 8)
    assert sorted(d.ID for d in devices) == sorted(UUIDS)
    assert await env.kubelet.devices_until(NAMES.core, lambda d: not d, timeout=5) == []
    (got,) = await env.kubelet.admit("default", "trainer", [("main", 2)], GPU)
    assert got.response is not None
    assert got.response.envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(got.ids)
    assert not any(m.container_path == vnames.LD_SO_PRELOAD_PATH for m in got.response.mounts)
    inv = await inventory(env)
    assert inv.gpus == ()
    assert {(o.mode, o.resource, o.replicas) for o in inv.other} == {(GpuMode.WHOLE, GPU, 1)}
    await eventually(lambda: env.node()["status"]["capacity"].get(NAMES.memory) == "0")
    labels = env.node()["metadata"]["labels"]
    assert (labels["nvidia.com/gpu.replicas"], labels["nvidia.com/gpu.sharing-strategy"]) == ("1", "none")


async def test_the_preferred_whole_gpus_are_the_nvlinked_pair_on_one_numa_node(
    env_factory: Any, short_dir: Path
) -> None:
    node = gpus(4, nvlinks=0)
    a, b, c, d = node.gpus
    links = (GpuLink(c.uuid, d.uuid, 12, PcieLevel.SYSTEM), GpuLink(a.uuid, b.uuid, 0, PcieLevel.NODE))
    env = await nvidia_env(
        env_factory, short_dir, {"flags": {}}, source=FakeGpuSource(dataclasses.replace(node, links=links))
    )
    (got,) = await env.kubelet.admit("default", "pair", [("main", 2)], GPU)
    assert got.preferred is not None
    assert sorted(got.preferred) == sorted([c.uuid, d.uuid])


@pytest.mark.parametrize(
    ("strategy", "check"),
    [
        pytest.param(
            "cdi-cri", lambda r, u: [x.name for x in r.cdi_devices] == [f"kube-vgpu.io/gpu={u}"], id="cdi-cri"
        ),
        pytest.param("envvar", lambda r, u: r.envs["NVIDIA_VISIBLE_DEVICES"] == u, id="envvar"),
    ],
)
async def test_whole_gpus_follow_the_device_list_strategy_of_nvidias_flags(
    env_factory: Any, short_dir: Path, strategy: str, check: Any
) -> None:
    doc = {"flags": {"plugin": {"deviceListStrategy": strategy}}}
    loaded = load_settings(["--config-file", str(config_file(short_dir / "l", doc))], env={"NODE_NAME": NODE})
    env = await nvidia_env(env_factory, short_dir, doc, device_list_strategy=loaded.device_list_strategy)
    (got,) = await env.kubelet.admit("default", "one", [("main", 1)], GPU)
    assert check(got.response, got.ids[0])


TS = {
    "version": "v1",
    "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4, "devices": [0, 1]}]}},
    "kubeVgpu": {"defaultMode": "vcuda", "timeSlicing": {"isolation": True}},
}


async def test_isolated_time_slicing_gives_each_replica_the_shim_with_a_quarter_of_the_gpu(
    env_factory: Any, short_dir: Path
) -> None:
    env = await nvidia_env(env_factory, short_dir, TS)
    devices = await env.kubelet.devices_until(GPU, lambda d: len(d) == 8)
    assert {d.ID for d in devices} == {f"{u}::{n}" for u in UUIDS[:2] for n in range(4)}
    core = await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 600)
    assert {d.ID.partition("::")[0] for d in core} == set(UUIDS[2:])
    (first,) = await env.kubelet.admit("default", "r1", [("main", 1)], GPU)
    (second,) = await env.kubelet.admit("default", "r2", [("main", 1)], GPU)
    assert first.ids[0].partition("::")[0] != second.ids[0].partition("::")[0], "distributed over GPUs"
    assert first.response is not None
    paths = {m.container_path: m.host_path for m in first.response.mounts}
    assert vnames.LD_SO_PRELOAD_PATH in paths
    config = decode_config(Path(paths[vnames.CONTAINER_CONFIG_PATH]).read_bytes())
    (limit,) = config.gpus
    assert (limit.memory_limit_bytes, limit.core_limit) == ((81559 // 4) << 20, 25)
    await eventually(lambda: env.node()["status"]["capacity"].get(NAMES.memory) == str(6 * 81559))
    labels = env.node()["metadata"]["labels"]
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert labels["nvidia.com/gpu.product"].endswith("-SHARED")
    assert {o.uuid for o in (await inventory(env, lambda i: len(i.other) == 2)).other} == set(UUIDS[:2])


async def test_a_renamed_resource_refuses_two_replicas_when_fail_requests_greater_than_one(
    env_factory: Any, short_dir: Path
) -> None:
    doc = {
        "sharing": {
            "timeSlicing": {
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "gpu", "rename": "gpu.shared", "replicas": 2}],
            }
        }
    }
    env = await nvidia_env(env_factory, short_dir, doc, resource="nvidia.com/gpu.shared")
    await env.kubelet.devices_until("nvidia.com/gpu.shared", lambda d: len(d) == 16)
    with pytest.raises(grpc.aio.AioRpcError, match="maximum request size for shared resources is 1"):
        await env.kubelet.admit("default", "greedy", [("main", 2)], "nvidia.com/gpu.shared")
    labels = env.node()["metadata"]["labels"]
    assert not labels.get("nvidia.com/gpu.product", "").endswith("-SHARED")


def mps_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_mps_starts_one_daemon_per_gpu_restarts_it_when_it_dies_and_stops_it(
    env_factory: Any, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = short_dir / "mps.log"
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    doc = {"sharing": {"mps": {"resources": [{"name": "gpu", "replicas": 2, "devices": [0]}]}}}
    env = await nvidia_env(env_factory, short_dir, doc, mps_control_path=FAKE_MPS)
    starts = [e for e in mps_log(log) if e["argv"] == ["-d"]]
    assert len(starts) == 1
    pipe = Path(starts[0]["env"]["CUDA_MPS_PIPE_DIRECTORY"])
    assert starts[0]["env"]["CUDA_VISIBLE_DEVICES"] == UUIDS[0]
    assert pipe == env.settings.state_dir / "mps" / UUIDS[0] / "pipe"
    commands = [c for e in mps_log(log) for c in e["stdin"]]
    assert "set_default_active_thread_percentage 50" in commands
    assert f"set_default_device_pinned_mem_limit 0 {81559 // 2}M" in commands
    (got,) = await env.kubelet.admit("default", "client", [("main", 1)], GPU)
    assert got.ids[0].startswith(UUIDS[0])
    assert got.response is not None
    assert got.response.envs["CUDA_MPS_PIPE_DIRECTORY"] == MPS_PIPE_PATH
    assert got.response.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert got.response.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={81559 // 2}M"
    assert {m.container_path: m.host_path for m in got.response.mounts}[MPS_PIPE_PATH] == str(pipe)
    os.kill(int((pipe / "nvidia-cuda-mps-control.pid").read_text()), signal.SIGKILL)
    await eventually(lambda: len([e for e in mps_log(log) if e["argv"] == ["-d"]]) == 2, timeout=20)
    await env.stop()
    assert any("quit" in e["stdin"] for e in mps_log(log))


def compute_modes(path: Path) -> list[tuple[str, str]]:
    """(GPU, mode) of every ``nvidia-smi -c`` call, in order."""
    return [(e["argv"][1], e["argv"][3]) for e in mps_log(path) if e.get("prog") == "nvidia-smi"]


@pytest.mark.parametrize(
    "record",
    [None, "{not json", '{"gpus": 1}'],
    ids=["recorded by the last run", "record unreadable", "record not a list"],
)
async def test_a_gpu_moved_from_mps_to_whole_goes_back_to_default_compute_mode(
    env_factory: Any, short_dir: Path, monkeypatch: pytest.MonkeyPatch, record: str | None
) -> None:
    log = short_dir / "mps.log"
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    mps = {"sharing": {"mps": {"resources": [{"name": "gpu", "replicas": 2, "devices": [0]}]}}}
    first = await nvidia_env(env_factory, short_dir, mps, mps_control_path=FAKE_MPS)
    assert compute_modes(log) == [(UUIDS[0], "EXCLUSIVE_PROCESS")]
    # As a SIGKILLed plugin leaves it: the daemon gone, the GPU never set back (here: nvidia-smi refused).
    monkeypatch.setenv("FAKE_NVIDIA_SMI_DENY", "1")
    await first.stop()
    monkeypatch.delenv("FAKE_NVIDIA_SMI_DENY")
    mps_root = first.settings.mps_dir
    if record is not None:
        (mps_root / "exclusive.json").write_text(record)
    log.unlink()

    whole = {"flags": {}, "kubeVgpu": {"vcudaDevices": [1, 2, 3, 4, 5, 6, 7]}}  # GPU 0: one nvidia.com/gpu
    second = await nvidia_env(
        env_factory, short_dir / "again", whole, mps_control_path=FAKE_MPS, mps_root=mps_root
    )
    resets = set(compute_modes(log))
    expected = {(UUIDS[0], "DEFAULT")} if record is None else {(u, "DEFAULT") for u in UUIDS}
    assert resets == expected
    assert json.loads((mps_root / "exclusive.json").read_text()) == []
    await second.stop()
    log.unlink()
    await (await env_factory(config_file=config_file(short_dir / "third", whole), mps_control_path=FAKE_MPS,
                             mps_root=mps_root)).stop()  # fmt: skip
    assert compute_modes(log) == []  # set back once, not at every start


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded modes", "no record: all were vcuda"])
async def test_a_mode_switch_is_refused_while_a_container_holds_the_gpu(
    short_dir: Path, kmock_cluster: Any, recorded: bool
) -> None:
    from tests.fixtures.plugin_env import _reset_cluster

    _reset_cluster(kmock_cluster)
    root = short_dir / "switch"
    settings = make_settings(
        root, config_file=config_file(root, {"flags": {}, "kubeVgpu": {"vcudaDevices": [1]}})
    )
    (root / "state").mkdir(parents=True)
    record = {
        "v": 1,
        "gpus": [
            {"uuid": u, "index": i, "mode": "vcuda", "resource": "", "replicas": 1}
            for i, u in enumerate(UUIDS)
        ],
    }
    if recorded:
        (root / "state" / MODES_FILE).write_text(json.dumps(record))
    env = PluginEnv(root, kmock_cluster, FakeGpuSource(H100), settings)
    env.kubelet.pods[("default", "holder")] = ["main"]
    env.kubelet.allocations[("default", "holder", "main")] = Admitted(
        "default", "holder", "main", [f"{UUIDS[0]}::3"], NAMES.core
    )
    try:
        await env.start()
        devices = await env.kubelet.devices_until(GPU, lambda d: len(d) == 6)
        assert {d.ID for d in devices} == set(UUIDS[2:])
        core = await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 200)
        assert {d.ID.partition("::")[0] for d in core} == {UUIDS[0], UUIDS[1]}
        posted = await events(env, 1)
        assert [e["reason"] for e in posted] == ["VGPUModeSwitchRefused"]
        assert "GPU 0" in posted[0]["message"]
        assert json.loads((root / "state" / MODES_FILE).read_text())["gpus"][0]["mode"] == "vcuda"
    finally:
        await env.stop()


@pytest.mark.parametrize("corrupt", ["{not json", '{"v": 1, "gpus": [{"uuid": 7}]}', "[]"])
async def test_an_unreadable_mode_record_withholds_a_gpu_a_container_holds_in_another_mode(
    short_dir: Path, kmock_cluster: Any, corrupt: str
) -> None:
    from tests.fixtures.plugin_env import _reset_cluster

    _reset_cluster(kmock_cluster)
    root = short_dir / "corrupt"
    settings = make_settings(
        root, config_file=config_file(root, {"flags": {}, "kubeVgpu": {"vcudaDevices": [1]}})
    )
    (root / "state").mkdir(parents=True)
    (root / "state" / MODES_FILE).write_text(corrupt)
    env = PluginEnv(root, kmock_cluster, FakeGpuSource(H100), settings)
    held: dict[str, tuple[list[str], str]] = {
        "old": ([f"{UUIDS[0]}::3"], NAMES.core),  # GPU 0 was vcuda; the plan makes it a whole nvidia.com/gpu
        "same": ([f"{UUIDS[1]}::7"], NAMES.core),  # GPU 1 stays vcuda: no switch, served
        "whole": ([UUIDS[2]], GPU),  # GPU 2 stays a whole nvidia.com/gpu: served
    }
    for name, (ids, resource) in held.items():
        env.kubelet.pods[("default", name)] = ["main"]
        env.kubelet.allocations[("default", name, "main")] = Admitted("default", name, "main", ids, resource)
    try:
        await env.start()
        devices = await env.kubelet.devices_until(GPU, lambda d: len(d) == 6)
        assert {d.ID for d in devices} == set(UUIDS[2:])  # GPU 0 in no resource
        core = await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 100)
        assert {d.ID.partition("::")[0] for d in core} == {UUIDS[1]}
        inv = await inventory(env, lambda i: UUIDS[0] in {o.uuid for o in i.other})
        assert UUIDS[0] not in {g.uuid for g in inv.gpus}  # no vcuda shares placed on it
        [withheld] = [g for g in inv.other if g.uuid == UUIDS[0]]
        assert not withheld.healthy  # nor a whole GPU
        recorded = await events(env, 1)
        assert [e["reason"] for e in recorded] == ["VGPUModeSwitchRefused"]
        assert "GPU 0" in recorded[0]["message"]
        assert (root / "state" / MODES_FILE).read_text() == corrupt  # the next start withholds it again
    finally:
        await env.stop()


async def test_uninstall_tells_the_recorded_mps_daemons_to_quit(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = short_dir / "mps.log"
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    state, mps = short_dir / "state", short_dir / "mps"
    pipe = mps / UUIDS[3] / "pipe"
    pipe.mkdir(parents=True)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    started = await asyncio.create_subprocess_exec(str(FAKE_MPS), "-d")
    assert await started.wait() == 0
    state.mkdir()
    record = {"v": 1, "gpus": [{"uuid": UUIDS[3], "index": 3, "mode": "mps", "resource": GPU, "replicas": 2}]}
    (state / MODES_FILE).write_text(json.dumps(record))
    (mps / "shm").mkdir()
    (mps / "shm" / "segment").write_bytes(b"x")
    assert await quit_recorded_mps(state, FAKE_MPS, mps) == [UUIDS[3]]
    assert list((mps / "shm").iterdir()) == []
    *_, told, reset = mps_log(log)
    assert told["stdin"] == ["quit"]
    assert (reset["prog"], reset["argv"]) == ("nvidia-smi", ["-i", UUIDS[3], "-c", "DEFAULT"])
    assert not (pipe / "nvidia-cuda-mps-control.pid").exists()


async def test_a_lost_gpu_makes_every_replica_of_it_unhealthy(env_factory: Any, short_dir: Path) -> None:
    source = FakeGpuSource(H100)
    env = await nvidia_env(env_factory, short_dir, TS, source=source)
    await env.kubelet.devices_until(GPU, lambda d: len(d) == 8)
    source.unreachable.add(UUIDS[1])
    devices = await env.kubelet.devices_until(
        GPU, lambda d: any(x.health == "Unhealthy" for x in d), timeout=10
    )
    assert {d.ID for d in devices if d.health == "Unhealthy"} == {f"{UUIDS[1]}::{n}" for n in range(4)}


async def test_nvidia_gpu_registers_again_after_a_kubelet_restart(env_factory: Any, short_dir: Path) -> None:
    env = await nvidia_env(env_factory, short_dir, {"flags": {}})
    before = env.agent.nvidia.registrars[0].registrations if env.agent else 0
    await env.kubelet.restart()
    await env.kubelet.wait_registered(GPU, timeout=10)
    assert env.agent is not None
    await eventually(lambda: env.agent is not None and env.agent.nvidia.registrars[0].registrations > before)
    assert len(await env.kubelet.devices_until(GPU, lambda d: len(d) == 8, timeout=10)) == 8


async def test_mig_single_and_a_whole_gpu_resource_cannot_both_be_nvidia_gpu(short_dir: Path) -> None:
    mig = dataclasses.replace(
        H100.gpus[0],
        mig_enabled=True,
        mig_instances=(MigInstance("MIG-1", H100.gpus[0].uuid, "3g.40gb", 1, 0, 40000, 60),),
    )
    node = dataclasses.replace(H100, gpus=(mig, *H100.gpus[1:]))
    settings = make_settings(
        short_dir, mig_strategy="single", config_file=config_file(short_dir, {"flags": {}})
    )

    with pytest.raises(ConfigError, match=r"nvidia\.com/gpu is served by --mig-strategy=single"):
        build_agent(settings, source=FakeGpuSource(node), cluster=None, pod_resources=None, verifier=None)  # type: ignore[arg-type]


def with_real_uuids(node: Any) -> Any:
    """The node with UUIDs in NVIDIA's format (its config names GPUs by real UUIDs only)."""
    new = {g.uuid: GpuUuid(f"GPU-00000000-0000-4000-8000-{g.index:012d}") for g in node.gpus}
    gpus_ = tuple(dataclasses.replace(g, uuid=new[g.uuid]) for g in node.gpus)
    links = tuple(dataclasses.replace(x, a=new[x.a], b=new[x.b]) for x in node.links)
    return dataclasses.replace(node, gpus=gpus_, links=links)


REAL = with_real_uuids(H100)


def shared(resources: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"version": "v1", "sharing": {"timeSlicing": {"resources": resources, **extra}}}


@pytest.mark.parametrize(
    ("doc", "served"),
    [
        pytest.param(
            shared([{"name": "gpu", "replicas": 2}], renameByDefault=True),
            {"nvidia.com/gpu.shared": 16},
            id="renameByDefault: every GPU as gpu.shared x2",
        ),
        pytest.param(
            shared([{"name": "gpu", "replicas": 3, "devices": 2}]),
            {GPU: 2 * 3 + 6},
            id="a count: the first two GPUs x3, the rest whole under the same name",
        ),
        pytest.param(
            shared([{"name": "gpu", "replicas": 3, "devices": [REAL.gpus[5].uuid], "rename": "gpu.five"}]),
            {"nvidia.com/gpu.five": 3, GPU: 7},
            id="a UUID renamed: its replicas apart, the rest whole",
        ),
        pytest.param(
            {
                **shared([{"name": "gpu", "replicas": 2, "devices": [0]}]),
                "kubeVgpu": {"defaultMode": "vcuda"},
            },
            {GPU: 2, NAMES.core: 700},
            id="defaultMode vcuda: one GPU x2, seven as vcuda shares",
        ),
    ],
)
async def test_each_sharing_layout_registers_its_resources_with_their_devices(
    env_factory: Any, short_dir: Path, doc: dict[str, Any], served: dict[str, int]
) -> None:
    env = await nvidia_env(
        env_factory, short_dir, doc, resource=next(iter(served)), source=FakeGpuSource(REAL)
    )
    for resource, count in served.items():
        devices = await env.kubelet.devices_until(resource, lambda d, n=count: len(d) == n, timeout=10)
        assert len(devices) == count


async def test_packed_replicas_fill_one_gpu_before_the_next(env_factory: Any, short_dir: Path) -> None:
    doc = {
        **shared([{"name": "gpu", "replicas": 4}]),
        "flags": {"plugin": {"sharedDevicesAllocationPolicy": "packed"}},
    }
    env = await nvidia_env(env_factory, short_dir, doc)
    admitted = [(await env.kubelet.admit("default", f"p{i}", [("main", 1)], GPU))[0] for i in range(3)]
    assert len({a.ids[0].partition("::")[0] for a in admitted}) == 1


@pytest.mark.parametrize(
    ("flags", "check"),
    [
        pytest.param(
            {"plugin": {"deviceIDStrategy": "index"}},
            lambda r: r.envs["NVIDIA_VISIBLE_DEVICES"] in {str(i) for i in range(8)},
            id="deviceIDStrategy index",
        ),
        pytest.param(
            {"plugin": {"passDeviceSpecs": True}},
            lambda r: (
                r.envs["NVIDIA_VISIBLE_DEVICES"] == "void"
                and "/dev/nvidiactl" in {d.container_path for d in r.devices}
            ),
            id="passDeviceSpecs",
        ),
    ],
)
async def test_nvidias_flags_shape_the_allocate_answer(
    env_factory: Any, short_dir: Path, flags: dict[str, Any], check: Any
) -> None:
    doc = {"flags": flags}
    loaded = load_settings(["--config-file", str(config_file(short_dir / "l", doc))], env={"NODE_NAME": NODE})
    env = await nvidia_env(
        env_factory,
        short_dir,
        doc,
        device_list_strategy=loaded.device_list_strategy,
        device_id_strategy=loaded.device_id_strategy,
    )
    (got,) = await env.kubelet.admit("default", "one", [("main", 1)], GPU)
    assert check(got.response)


async def test_isolated_replicas_of_one_gpu_are_placed_as_each_others_neighbours(
    env_factory: Any, short_dir: Path
) -> None:
    doc = {
        **shared([{"name": "gpu", "replicas": 4, "devices": [0]}]),
        "kubeVgpu": {"defaultMode": "vcuda", "timeSlicing": {"isolation": True}},
    }
    env = await nvidia_env(env_factory, short_dir, doc)
    admitted = [(await env.kubelet.admit("default", f"t{i}", [("main", 1)], GPU))[0] for i in range(2)]
    dirs = []
    for got in admitted:
        assert got.response is not None
        config_path = Path(
            {m.container_path: m.host_path for m in got.response.mounts}[vnames.CONTAINER_CONFIG_PATH]
        )
        config = decode_config(config_path.read_bytes())
        assert f"{config.pod_uid}_{config.container}" == config_path.parent.name  # the shim's own record name
        dirs.append(config_path.parent.name)
    placed = decode_placement((env.settings.state_dir / "node" / "placed" / UUIDS[0]).read_bytes())
    assert sorted(placed) == sorted((d, 25) for d in dirs)
