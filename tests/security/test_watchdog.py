# mypy: disable-error-code="no-untyped-call"
"""The watchdog catches what the shim cannot stop: a process bypassing it, a container over its limit, a
process on a GPU its container was not given, a GPU process of no kube-vgpu pod.

Real parts: ``plugin.nvml.Nvml`` over the FAKE ``libnvidia-ml.so.1`` (process lists set through its control
file, as ``nvmlDeviceGetComputeRunningProcesses`` reports them: host PIDs and used memory), real state files
and a ``/proc`` tree under a temporary root (cgroup files in the systemd/containerd layout), the real
``kubernetes`` client against kmock (Warning events, the Eviction API), and the exporter's collector for the
counter. kmock has no eviction subresource: the test routes ``POST .../pods/<name>/eviction`` to a recorder
that answers as the API server does (201, or 429 while a PodDisruptionBudget forbids it).
"""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kmock import Response  # type: ignore[attr-defined]  # exported, not in __all__

from plugin.core.watchdog import Reason
from plugin.kube import ApiCluster
from plugin.metrics.exporter import NodeCollector
from plugin.metrics.sources import ViolationTally
from plugin.nvml import Nvml
from plugin.watchdog import ApiEvictor, Watchdog, WatchdogOptions
from tests.fakes.kmock import KmockCluster
from tests.fakes.node import (
    GIB,
    HOST_PROCESS,
    FakeContainer,
    FakeNodeFs,
    FakeSlot,
    cid,
    uid,
    usage_bytes,
    v2_systemd,
)
from tests.fakes.nvml.harness import FakeNvml, FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)
from vcuda.model import GpuUuid

NODE = "gpu-node-1"
NS = "team"
MIB = 1 << 20


def container(n: int, pod: str, gpu: str, limit: int, slots: list[FakeSlot]) -> FakeContainer:
    return FakeContainer(uid(n), NS, pod, "main", [(gpu, limit, 50, 50)], slots)


@pytest.fixture
def cluster() -> Iterator[KmockCluster]:
    with KmockCluster() as c:
        yield c


class Node:
    """Four A10s on the fake NVML, the state directory and /proc of a node, kmock with its pods."""

    def __init__(self, nvml: FakeNvml, fs: FakeNodeFs, cluster: KmockCluster) -> None:
        self.nvml, self.fs, self.cluster = nvml, fs, cluster
        self.g = [GpuUuid(u) for u in nvml.uuids]
        self.evictions: list[str] = []
        self.pdb_blocks: set[str] = set()

    def pod(self, n: int, name: str, container_name: str = "main") -> None:
        cs = {"name": container_name, "containerID": f"containerd://{cid(n)}", "image": "i", "imageID": "i"}
        status = {"containerStatuses": [{**cs, "ready": True, "restartCount": 0}]}
        spec = {"nodeName": NODE, "containers": [{"name": container_name, "image": "i"}]}
        body = {"metadata": {"name": name, "namespace": NS, "uid": uid(n)}, "spec": spec}
        self.cluster.core().create_namespaced_pod(NS, {**body, "status": status}, _preload_content=False)
        assert self.cluster.emulator is not None
        self.cluster.emulator[f"post /api/v1/namespaces/{NS}/pods/{name}/eviction"] << self._evict(name)

    def _evict(self, name: str) -> Any:
        def answer(request: Any) -> Any:
            assert request.data["deleteOptions"]["preconditions"]["uid"]
            if name in self.pdb_blocks:
                return Response(
                    status=429, payload={"kind": "Status", "code": 429, "reason": "TooManyRequests"}
                )
            self.evictions.append(name)
            return Response(status=201, payload={"kind": "Status", "status": "Success", "code": 201})

        return answer

    def process(self, pid: int, n: int | None) -> None:
        self.fs.add_process(pid, HOST_PROCESS if n is None else v2_systemd(uid(n), cid(n)), ns_pid=pid % 100)

    def events(self) -> list[tuple[str, str, str]]:
        items = json.loads(self.cluster.core().list_namespaced_event(NS, _preload_content=False).data)[
            "items"
        ]
        return sorted((e["involvedObject"]["name"], e["reason"], e["type"]) for e in items)

    def watchdog(self, tally: ViolationTally, evict: bool = False) -> Watchdog:
        nvml = Nvml()
        nvml.open()
        return Watchdog(
            node=NODE,
            state_dir=self.fs.state_dir,
            nvml=nvml,
            gpus=lambda: self.g,
            cluster=ApiCluster(self.cluster.api_client()),
            tally=tally,
            options=WatchdogOptions(interval_s=0.01, overhead_bytes=512 * MIB, evict=evict),
            evictor=ApiEvictor(self.cluster.api_client()),
            root=self.fs.root,
        )


@pytest.fixture
def node(fake_nvml: Any, cluster: KmockCluster, tmp_path: Any) -> Node:
    """Pods: ok (within limit + overhead), greedy (over), sneaky (a second process outside the shim),
    wander (its process on a GPU it was not given), rogue (no kube-vgpu container); plus a host process."""
    n = Node(fake_nvml("a10x4"), FakeNodeFs(tmp_path / "node"), cluster)
    g0, g1, g2, g3 = n.g
    n.fs.add_container(container(1, "ok", g0, 4 * GIB, [FakeSlot(7, [(4 * GIB, 0, 0, 0)], host_pid=1001)]))
    n.fs.add_container(
        container(2, "greedy", g0, 2 * GIB, [FakeSlot(7, [(2 * GIB, 0, 0, 0)], host_pid=1002)])
    )
    n.fs.add_container(container(3, "sneaky", g1, 4 * GIB, [FakeSlot(7, [(GIB, 0, 0, 0)], host_pid=1003)]))
    n.fs.add_container(container(4, "wander", g1, 4 * GIB, [FakeSlot(7, [(0, 0, 0, 0)], host_pid=1005)]))
    for i, name in [(1, "ok"), (2, "greedy"), (3, "sneaky"), (4, "wander")]:
        n.pod(i, name)
    n.pod(9, "rogue", "miner")
    for pid, owner in [(1001, 1), (1002, 2), (1003, 3), (1004, 3), (1005, 4), (1009, 9), (1010, None)]:
        n.process(pid, owner)
    n.nvml.set_processes(g0, [FakeProcess(1001, 4 * 1024 + 400), FakeProcess(1002, 3 * 1024)])
    n.nvml.set_processes(g1, [FakeProcess(1003, 1024), FakeProcess(1004, 2 * 1024)])
    n.nvml.set_processes(g2, [FakeProcess(1005, 512)])
    n.nvml.set_processes(g3, [FakeProcess(1009, 1024), FakeProcess(1010, 256)])
    return n


async def test_each_kind_of_violation_is_reported_once_with_an_event_and_a_counter(node: Node) -> None:
    tally = ViolationTally()
    dog = node.watchdog(tally)
    assert await dog.check_once() == []  # seen once: not yet (a process may be registering with its shim)
    reported = await dog.check_once()
    g0, g1, g2, g3 = node.g
    assert {(v.reason, v.pod.name if v.pod else "", v.container, v.gpu, v.pids) for v in reported} == {
        (Reason.OVER_LIMIT, "greedy", "main", g0, (1002,)),
        (Reason.OUTSIDE_SHIM, "sneaky", "main", g1, (1004,)),
        (Reason.WRONG_GPU, "wander", "main", g2, (1005,)),
        (Reason.UNMANAGED, "rogue", "miner", g3, (1009,)),
        (Reason.UNMANAGED, "", "", g3, (1010,)),
    }
    assert await dog.check_once() == []  # once per episode
    assert node.events() == [
        ("greedy", "GpuMemoryOverLimit", "Warning"),
        ("rogue", "GpuProcessUnmanaged", "Warning"),
        ("sneaky", "GpuProcessOutsideShim", "Warning"),
        ("wander", "GpuProcessOnWrongGpu", "Warning"),
    ]
    over = next(v for v in reported if v.reason is Reason.OVER_LIMIT)
    assert (over.nvml_bytes, over.shim_bytes, over.limit_bytes) == (3 * GIB, 2 * GIB, 2 * GIB)
    assert node.evictions == []  # eviction is off by default

    families = {
        f.name: f for f in NodeCollector(node=NODE, state_dir=node.fs.state_dir, violations=tally).collect()
    }
    counter = families["kube_vgpu_container_limit_violations"]
    assert counter.type == "counter"
    assert sorted(
        (s.name, s.labels["pod"], s.labels["container"], s.labels["reason"], s.value) for s in counter.samples
    ) == [
        ("kube_vgpu_container_limit_violations_total", "", "", "unmanaged", 1.0),
        ("kube_vgpu_container_limit_violations_total", "greedy", "main", "over_limit", 1.0),
        ("kube_vgpu_container_limit_violations_total", "rogue", "miner", "unmanaged", 1.0),
        ("kube_vgpu_container_limit_violations_total", "sneaky", "main", "outside_shim", 1.0),
        ("kube_vgpu_container_limit_violations_total", "wander", "main", "wrong_gpu", 1.0),
    ]


async def test_a_violation_that_clears_and_returns_is_a_new_episode(node: Node) -> None:
    tally = ViolationTally()
    dog = node.watchdog(tally)
    g0 = node.g[0]
    await dog.check_once()
    await dog.check_once()
    node.nvml.set_processes(g0, [FakeProcess(1001, 4 * 1024), FakeProcess(1002, 2 * 1024 + 511)])  # within
    await dog.check_once()
    node.nvml.set_processes(g0, [FakeProcess(1001, 4 * 1024), FakeProcess(1002, 8 * 1024)])
    assert await dog.check_once() == []
    again = await dog.check_once()
    assert [(v.reason, v.pod.name if v.pod else "") for v in again] == [(Reason.OVER_LIMIT, "greedy")]
    assert tally.violation_counts()[(NS, "greedy", "main", "over_limit")] == 2


async def test_eviction_when_configured_spares_pods_outside_kube_vgpu_and_retries_past_a_budget(
    node: Node,
) -> None:
    node.pdb_blocks.add("wander")
    dog = node.watchdog(ViolationTally(), evict=True)
    await dog.check_once()
    assert node.evictions == []  # nothing before a violation is confirmed
    await dog.check_once()
    assert sorted(node.evictions) == ["greedy", "sneaky"]  # wander: 429 from its PodDisruptionBudget
    node.pdb_blocks.clear()
    await dog.check_once()
    assert sorted(node.evictions) == ["greedy", "sneaky", "wander"]  # rogue and the host process: never
    await dog.check_once()
    assert len(node.evictions) == 3  # each pod once


async def test_nvml_failing_costs_a_round_not_the_watchdog(node: Node) -> None:
    dog = node.watchdog(ViolationTally())
    for uuid in node.g:
        node.nvml.lose_gpu(uuid)
    assert await dog.check_once() == []
    for uuid in node.g:
        node.nvml.recover_gpu(uuid)
    await dog.check_once()
    assert len(await dog.check_once()) == 5


async def test_a_tenant_cannot_hide_from_the_watchdog_by_forging_its_usage_file(node: Node) -> None:
    """The tenant of 'sneaky' writes its usage file (writable in its container). A forged slot claiming the
    bypassing PID makes it look shim-managed, but NVML's memory still counts against the limit; a symlink to
    /dev/zero is refused and leaves every process unclaimed, so they are outside the shim."""
    usage = node.fs.state_dir / "containers" / f"{uid(3)}_main" / "usage" / "usage.bin"
    usage.write_bytes(usage_bytes(1, [FakeSlot(7, [(0, 0, 0, 0)], 1003), FakeSlot(8, [(0, 0, 0, 0)], 1004)]))
    node.nvml.set_processes(node.g[1], [FakeProcess(1003, 1024), FakeProcess(1004, 5 * 1024)])
    dog = node.watchdog(ViolationTally())
    await dog.check_once()
    found = {(v.reason, v.pod.name if v.pod else "", v.pids) for v in await dog.check_once()}
    assert (Reason.OVER_LIMIT, "sneaky", (1003, 1004)) in found  # 6 GiB > 4 GiB + 2 x 512 MiB

    usage.unlink()
    usage.symlink_to("/dev/zero")
    await dog.check_once()
    found = {(v.reason, v.pod.name if v.pod else "", v.pids) for v in await dog.check_once()}
    assert (Reason.OUTSIDE_SHIM, "sneaky", (1003, 1004)) in found


async def test_an_unexpected_error_in_a_round_does_not_stop_the_watchdog(node: Node) -> None:
    class Broken:
        calls = 0

        def process_usage(self, uuid: GpuUuid, *, since_us: int = 0) -> Any:
            Broken.calls += 1
            raise RuntimeError("odd reading")

    dog = node.watchdog(ViolationTally())
    dog._nvml = Broken()
    task = asyncio.get_running_loop().create_task(dog.run())
    await asyncio.sleep(0.2)
    assert not task.done()
    assert Broken.calls > 4  # round after round
    task.cancel()
