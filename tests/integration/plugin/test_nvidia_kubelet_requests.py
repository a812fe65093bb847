# mypy: disable-error-code="no-untyped-call"
"""``nvidia.com/gpu`` requests no well-behaved kubelet sends, straight to the plugin's gRPC servicer: the
answer is a refusal or a well-formed suggestion, never a container given more than the devices it holds."""

import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from plugin.api.deviceplugin.v1beta1 import api_pb2
from tests.integration.plugin.test_nvidia_modes import FAKE_MPS, GPU, TS, UUIDS, nvidia_env
from vcuda.shimfile import decode_placement

MPS = {"version": "v1", "sharing": {"mps": {"resources": [{"name": "gpu", "replicas": 4, "devices": [0]}]}}}


def allocate(*ids: str) -> api_pb2.AllocateRequest:
    return api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=list(ids))]
    )


@pytest.mark.parametrize(
    "ids",
    [
        [f"{UUIDS[0]}::1", f"{UUIDS[0]}::1"],  # one replica twice: twice its share
        [f"{UUIDS[0]}::9"],  # never advertised
        [UUIDS[0]],  # the GPU of a replicated resource, whole
        [f"{UUIDS[5]}::0"],  # a vcuda GPU's slice, under this resource
    ],
    ids=["duplicated", "not advertised", "whole id of a shared gpu", "another resource's gpu"],
)
async def test_allocate_refuses_device_ids_the_resource_does_not_hold_once_each(
    env_factory: Any, short_dir: Path, ids: list[str]
) -> None:
    env = await nvidia_env(env_factory, short_dir, TS)
    ep = await env.kubelet.wait_registered(GPU)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ep.stub.Allocate(allocate(*ids), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_mps_replica_given_twice_does_not_get_twice_its_share(
    env_factory: Any, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_LOG", str(short_dir / "mps.log"))
    env = await nvidia_env(env_factory, short_dir, MPS, mps_control_path=FAKE_MPS)
    ep = await env.kubelet.wait_registered(GPU)
    with pytest.raises(grpc.aio.AioRpcError, match="more than once"):
        await ep.stub.Allocate(allocate(f"{UUIDS[0]}::0", f"{UUIDS[0]}::0"), timeout=10)


async def test_a_suggestion_the_plugin_cannot_make_still_names_each_device_once(
    env_factory: Any, short_dir: Path
) -> None:
    env = await nvidia_env(env_factory, short_dir, TS)
    ep = await env.kubelet.wait_registered(GPU)
    must = f"{UUIDS[0]}::0"
    # The kubelet lists the reused device among the available ones; an ID it should not have makes the
    # plugin leave the choice to it.
    req = api_pb2.ContainerPreferredAllocationRequest(
        available_deviceIDs=[must, "GPU-not-here::0", f"{UUIDS[1]}::0", f"{UUIDS[1]}::1"],
        must_include_deviceIDs=[must],
        allocation_size=2,
    )
    reply = await ep.stub.GetPreferredAllocation(
        api_pb2.PreferredAllocationRequest(container_requests=[req]), timeout=10
    )
    (got,) = reply.container_responses
    assert len(set(got.deviceIDs)) == len(got.deviceIDs) == 2
    assert must in got.deviceIDs


async def test_the_next_tenant_of_the_same_replicas_finds_nothing_the_last_one_left(
    env_factory: Any, short_dir: Path
) -> None:
    env = await nvidia_env(env_factory, short_dir, TS)
    ep = await env.kubelet.wait_registered(GPU)
    replica = f"{UUIDS[0]}::0"

    async def writable_dirs() -> list[Path]:
        reply = await ep.stub.Allocate(allocate(replica), timeout=10)
        (answer,) = reply.container_responses
        return sorted(Path(m.host_path) for m in answer.mounts if not m.read_only)

    first = await writable_dirs()
    assert len(first) == 2  # the usage directory and the node record directory
    for folder in first:  # the first tenant plants files for whoever gets these replicas next
        (folder / "planted").write_text("x")
        os.mkfifo(folder / f"{UUIDS[0]}.bin")
    second = await writable_dirs()  # the first container ended; the kubelet gives the same replica again
    assert second == first
    for folder in second:
        assert not (folder / "planted").exists()
        assert not (folder / f"{UUIDS[0]}.bin").exists()
    usage = next(f for f in second if f.name == "usage")
    assert [p.name for p in usage.iterdir() if not p.name.startswith(".")], "the usage file is written again"


async def test_only_live_replica_sets_are_placed_as_neighbours(env_factory: Any, short_dir: Path) -> None:
    env = await nvidia_env(env_factory, short_dir, TS)
    ep = await env.kubelet.wait_registered(GPU)
    # one after another (each container ended before the next): every replica of GPU 0 in turn, then pairs
    for ids in ([f"{UUIDS[0]}::{n}"] for n in range(4)):
        await ep.stub.Allocate(allocate(*ids), timeout=10)
    await ep.stub.Allocate(allocate(f"{UUIDS[0]}::1", f"{UUIDS[0]}::2"), timeout=10)
    await ep.stub.Allocate(allocate(f"{UUIDS[0]}::0", f"{UUIDS[0]}::1"), timeout=10)
    placed = decode_placement((env.settings.state_dir / "node" / "placed" / UUIDS[0]).read_bytes())
    # live now, at most: {::0, ::1} (the last) and {::3}; {::1, ::2} and the single ::0, ::1, ::2 were replaced
    assert sorted(placed) == sorted([(f"{UUIDS[0]}.0-n2_replica", 50), (f"{UUIDS[0]}.3-n1_replica", 25)])
    assert sum(share for _, share in placed) <= 100


async def test_an_mps_gpu_is_exclusive_process_while_its_daemon_runs_and_default_after(
    env_factory: Any, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = short_dir / "mps.log"
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    env = await nvidia_env(env_factory, short_dir, MPS, mps_control_path=FAKE_MPS)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    smi = [c["argv"] for c in calls if c.get("prog") == "nvidia-smi"]
    assert smi == [["-i", UUIDS[0], "-c", "EXCLUSIVE_PROCESS"]]
    assert calls.index(next(c for c in calls if c["argv"] == ["-d"])) > 0, (
        "exclusive before the daemon starts"
    )
    await env.stop()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["argv"] for c in calls if c.get("prog") == "nvidia-smi"][-1] == [
        "-i",
        UUIDS[0],
        "-c",
        "DEFAULT",
    ]
