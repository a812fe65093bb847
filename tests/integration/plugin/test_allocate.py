# mypy: disable-error-code="no-untyped-call"
"""Allocate over real gRPC: fractional, multi-container and 2-GPU exclusive pods under every device-list
strategy; the config, usage and identity a container gets; PreStartContainer confirmation.

Case matrix (strategy x pod): envvar/uuid, envvar/index, cdi, device-specs x fractional (30 cores, 4 GiB),
multi-container (20 + 50 cores, an init container), exclusive (200 cores, 2 GPUs).
"""

import json
from pathlib import Path

import pytest

from tests.builders.plugin import NAMES, h100x8
from tests.fakes.gpu_source import FakeGpuSource
from vcuda import names as vnames
from vcuda.model import Phase
from vcuda.shimfile import decode_usage
from vcuda.units import MIB

G = "GPU-node-1-{:04d}".format
STRATEGIES = [
    pytest.param({"device_list_strategy": "envvar"}, id="envvar with uuids"),
    pytest.param({"device_list_strategy": "envvar", "device_id_strategy": "index"}, id="envvar with indexes"),
    pytest.param({"device_list_strategy": "cdi", "cdi_prefix": "example.com/gpu"}, id="cdi"),
    pytest.param({"device_list_strategy": "device-specs"}, id="device-specs"),
]


def fake_driver_root(root: Path) -> None:
    lib = root / "driver" / "usr" / "lib" / "x86_64-linux-gnu"
    lib.mkdir(parents=True)
    for name in ("libcuda.so.1", "libnvidia-ml.so.1", "libunrelated.so"):
        (lib / name).write_bytes(b"")
    (root / "driver" / "usr" / "bin").mkdir(parents=True)
    (root / "driver" / "usr" / "bin" / "nvidia-smi").write_bytes(b"")


async def start(env_factory, short_dir, settings):
    fake_driver_root(short_dir / "0")
    return await env_factory(FakeGpuSource(h100x8()), **settings)


def check_visibility(env, response, indexes):
    strategy = env.settings.device_list_strategy.value
    envs = dict(response.envs)
    if strategy == "envvar":
        want = (
            [str(i) for i in indexes]
            if env.settings.device_id_strategy.value == "index"
            else [G(i) for i in indexes]
        )
        assert envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(want)
        assert not response.devices
        assert not response.cdi_devices
    elif strategy == "cdi":
        assert [d.name for d in response.cdi_devices] == [f"example.com/gpu={G(i)}" for i in indexes]
        spec = json.loads((env.settings.cdi_dir / "example.com-gpu.json").read_text())
        assert {d["name"] for d in spec["devices"]} >= {G(i) for i in indexes}
        assert envs["NVIDIA_VISIBLE_DEVICES"] == "void"
    else:
        paths = [d.container_path for d in response.devices]
        assert paths == [
            *(f"/dev/nvidia{i}" for i in indexes),
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
        ]
        assert all(d.permissions == "rw" for d in response.devices)
        mounts = {m.container_path: m.host_path for m in response.mounts}
        assert mounts["/usr/local/nvidia/lib64/libcuda.so.1"].endswith(
            "usr/lib/x86_64-linux-gnu/libcuda.so.1"
        )
        assert "/usr/local/nvidia/bin/nvidia-smi" in mounts
        assert not any("unrelated" in p for p in mounts)


def check_shim_mounts(env, admitted):
    mounts = {m.container_path: m for m in admitted.response.mounts}
    assert mounts[vnames.CONTAINER_SHIM_PATH].read_only
    assert mounts[vnames.CONTAINER_SHIM_PATH].host_path == str(env.settings.shim_dir / "lib" / "libvcuda.so")
    preload = mounts[vnames.LD_SO_PRELOAD_PATH]
    assert preload.read_only
    assert Path(preload.host_path).read_text().strip() == vnames.CONTAINER_SHIM_PATH
    assert mounts[vnames.CONTAINER_CONFIG_PATH].read_only
    usage = mounts[vnames.CONTAINER_USAGE_DIR]
    assert not usage.read_only
    assert decode_usage((Path(usage.host_path) / vnames.USAGE_FILE_NAME).read_bytes()) == ()
    node = mounts[vnames.CONTAINER_NODE_DIR]  # every tenant's records, read-only; only its own dir writable
    assert node.read_only
    assert Path(node.host_path) == env.settings.state_dir / "node"
    assert Path(node.host_path).stat().st_mode & 0o7777 == 0o755
    (own,) = (m for m in mounts.values() if m.container_path.startswith(vnames.CONTAINER_NODE_DIR + "/"))
    assert not own.read_only
    assert Path(own.host_path).parent == Path(node.host_path) / "tenants"
    assert own.container_path == f"{vnames.CONTAINER_NODE_DIR}/tenants/{Path(own.host_path).name}"
    envs = dict(admitted.response.envs)
    assert envs[vnames.ENV_POD_NAME] == admitted.pod
    assert envs[vnames.ENV_NAMESPACE] == admitted.namespace
    assert envs[vnames.ENV_CONTAINER_NAME] == admitted.container


@pytest.mark.parametrize("settings", STRATEGIES)
async def test_fractional_pod_gets_its_gpu_and_limits(env_factory, short_dir, settings):
    env = await start(env_factory, short_dir, settings)
    pod = env.create_pod(
        "frac",
        [("main", 30, 4096)],
        {"main": [(G(3), 30, 4096)]},
        annotations={NAMES.core_limit: "60"},
        core_limit={"main": 60},
    )
    [admitted] = await env.admit("frac", [("main", 30)])
    assert {i.rpartition("::")[0] for i in admitted.ids} == {G(3)}
    check_visibility(env, admitted.response, [3])
    check_shim_mounts(env, admitted)
    config = env.config_of(admitted)
    assert (config.pod_uid, config.pod_name, config.container) == (pod["metadata"]["uid"], "frac", "main")
    [limit] = config.gpus
    assert (limit.uuid, limit.memory_limit_bytes, limit.core_limit, limit.soft_limit) == (
        G(3),
        4096 * MIB,
        30,
        60,
    )
    assert dict(admitted.response.envs)[vnames.ENV_POD_UID] == pod["metadata"]["uid"]
    await env.start_container("frac", "main")
    status = env.status("frac")
    assert status.phase is Phase.ALLOCATED
    assert status.allocated == ("main",)


@pytest.mark.parametrize("settings", STRATEGIES)
async def test_multi_container_pod_gets_each_container_its_own_record(env_factory, short_dir, settings):
    env = await start(env_factory, short_dir, settings)
    body_shares = {"prep": [(G(1), 10, 1024)], "a": [(G(1), 20, 2048)], "b": [(G(2), 50, 8192)]}
    env.create_pod("multi", [("a", 20, 2048), ("b", 50, 8192)], body_shares, init=[("prep", 10, 1024)])
    admitted = await env.admit("multi", [("prep", 10), ("a", 20), ("b", 50)])
    by_name = {a.container: a for a in admitted}
    for name, gpu, cores, mib in [("prep", 1, 10, 1024), ("a", 1, 20, 2048), ("b", 2, 50, 8192)]:
        config = env.config_of(by_name[name])
        assert config.container == name
        assert [(g.uuid, g.core_limit, g.memory_limit_bytes) for g in config.gpus] == [
            (G(gpu), cores, mib * MIB)
        ]
        check_visibility(env, by_name[name].response, [gpu])
    for name in ("prep", "a"):
        await env.start_container("multi", name)
        assert env.status("multi").phase is Phase.ASSUMED
    await env.start_container("multi", "b")
    assert env.status("multi").phase is Phase.ALLOCATED
    assert env.status("multi").allocated == ("a", "b", "prep")


@pytest.mark.parametrize("settings", STRATEGIES)
async def test_two_gpu_exclusive_pod_gets_whole_gpus_unthrottled(env_factory, short_dir, settings):
    env = await start(env_factory, short_dir, settings)
    env.create_pod("excl", [("train", 200, 0)], {"train": [(G(4), 100, 81559), (G(5), 100, 81559)]})
    [admitted] = await env.admit("excl", [("train", 200)])
    assert sorted({i.rpartition("::")[0] for i in admitted.ids}) == [G(4), G(5)]
    check_visibility(env, admitted.response, [4, 5])
    config = env.config_of(admitted)
    assert [(g.uuid, g.core_limit, g.soft_limit, g.memory_limit_bytes) for g in config.gpus] == [
        (G(4), 100, 100, 81559 * MIB),
        (G(5), 100, 100, 81559 * MIB),
    ]
    await env.start_container("excl", "train")
    assert env.status("excl").phase is Phase.ALLOCATED


async def test_allocate_without_any_matching_assignment_fails_admission(env_factory):
    import grpc

    env = await env_factory()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.admit("stranger", [("main", 30)])
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "no pending container" in str(err.value.details())


async def test_assignment_signed_with_another_key_is_never_honoured(env_factory):
    import grpc

    from tests.builders.plugin import assignment, pod_body
    from tests.signing_keys import OTHER_SIGNER

    env = await env_factory()
    body = pod_body("forged", [("main", 30, 4096)])
    body["metadata"]["annotations"][NAMES.assignment] = assignment(
        "node-1", {"main": [(G(0), 30, 4096)]}, pod=body, signer=OTHER_SIGNER
    )
    env.core.create_namespaced_pod("default", body, _preload_content=False)
    env.cluster.bind("default", "forged", "node-1")
    with pytest.raises(grpc.aio.AioRpcError):
        await env.admit("forged", [("main", 30)])
