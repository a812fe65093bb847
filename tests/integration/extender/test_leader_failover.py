"""Two REAL ``kube-vgpu-extender`` processes with ``--leader-elect`` against kmock (``tests/fakes/kmock.py``),
as the chart runs them in default-scheduler mode: two replicas behind one Service.

The test plays the two parts that are not kube-vgpu's: the Service (it sends each call to a replica whose
``/readyz`` answers 200, as endpoints follow readiness) and kube-scheduler (filter, then bind on the first
node that passes; any error, a 503 or a refused connection, puts the pod back to be retried, as
kube-scheduler does with an extender error). Lease timings are scaled down from kube's 15/10/2 s.

Cases: only one replica is ready and answers the verbs, the other answers 503 on every verb; the leader is
SIGKILLed in the middle of a burst of binds that fills every GPU exactly: the standby is ready within the
lease duration (plus one retry period and its fresh list), every pod is bound, and no GPU holds more than its
cores or memory (a standby that answered with a stale ledger would place pods on GPUs already full).
"""

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.extender import assignment_of, gpu_node, pod_obj
from tests.fakes.kmock import KmockCluster
from tests.ports import free_port
from tests.signing_keys import write_private_key
from tests.sim.processes import Child, console_script, write_kubeconfig

LEASE_S, RENEW_S, RETRY_S = 2.0, 1.5, 0.25
NODES = ("n1", "n2", "n3")
GPUS_PER_NODE, POD = 2, (50, 40960)  # two pods fill an 80 GiB GPU: 12 pods fill the cluster exactly


class Replica:
    def __init__(self, name: str, workdir: Path, kubeconfig: Path, key: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        argv = [
            *console_script("kube-vgpu-extender"),
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--metrics-port={self.metrics_port}",
            f"--assignment-key-file={key}",
            f"--kubeconfig={kubeconfig}",
            "--scheduler-names=default-scheduler",
            "--leader-elect=true",
            "--leader-elect-resource-namespace=kube-system",
            f"--leader-elect-identity={name}",
            f"--leader-elect-lease-duration-seconds={LEASE_S}",
            f"--leader-elect-renew-deadline-seconds={RENEW_S}",
            f"--leader-elect-retry-period-seconds={RETRY_S}",
        ]
        self.child = Child(name, argv, {"KUBECONFIG": str(kubeconfig)}, workdir / f"{name}.log")
        self.name = name

    async def ready(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(f"http://127.0.0.1:{self.metrics_port}/readyz") as answer:
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    async def verb(self, http: aiohttp.ClientSession, verb: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with http.post(f"http://127.0.0.1:{self.port}/scheduler/{verb}", json=body) as answer:
            return answer.status, json.loads(await answer.read())


@pytest.fixture
def api() -> Iterator[KmockCluster]:
    with KmockCluster() as cluster:
        core = cluster.core()
        for name in NODES:
            core.create_node(gpu_node(name, gpus=GPUS_PER_NODE), _preload_content=False)
        yield cluster


@pytest.fixture
async def replicas(api: KmockCluster, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    key = write_private_key(tmp_path / "assignment.key")
    started = [Replica(n, tmp_path, kubeconfig, key) for n in ("extender-a", "extender-b")]
    try:
        for replica in started:
            await replica.child.start()
        yield started
    finally:
        for replica in started:
            await replica.child.stop()


async def readiness(http: aiohttp.ClientSession, replicas: list[Replica]) -> list[bool]:
    return list(await asyncio.gather(*(r.ready(http) for r in replicas)))


async def one_ready(http: aiohttp.ClientSession, replicas: list[Replica], timeout_s: float = 20) -> Replica:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for replica in replicas:
            assert replica.child.alive, replica.child.log_tail()
        ready = [r for r, ok in zip(replicas, await readiness(http, replicas), strict=True) if ok]
        if ready:
            assert len(ready) == 1, "two replicas ready at once"
            return ready[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no replica became ready: " + " | ".join(r.child.log_tail(5) for r in replicas))


def create_pods(api: KmockCluster, count: int) -> list[dict[str, Any]]:
    core = api.core()
    pods = []
    for i in range(count):
        pod = pod_obj(f"p{i:02d}", POD)
        pod["metadata"].pop("uid")
        pods.append(json.loads(core.create_namespaced_pod("default", pod, _preload_content=False).data))
    return pods


async def schedule_once(http: aiohttp.ClientSession, replicas: list[Replica], pod: dict[str, Any]) -> bool:
    """One kube-scheduler cycle through the Service: False on any extender error (the pod is retried)."""
    ready = [r for r, ok in zip(replicas, await readiness(http, replicas), strict=True) if ok]
    if not ready:
        return False
    meta = pod["metadata"]
    try:
        status, found = await ready[0].verb(http, "filter", {"Pod": pod, "NodeNames": list(NODES)})
        if status != 200 or not found["NodeNames"]:
            return False
        args = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"]}
        status, bound = await ready[0].verb(http, "bind", {**args, "Node": found["NodeNames"][0]})
    except (aiohttp.ClientError, ConnectionError):
        return False
    return status == 200 and bound["Error"] == ""


def gpu_load(api: KmockCluster) -> dict[str, tuple[int, int]]:
    pods = json.loads(api.core().list_namespaced_pod("default", _preload_content=False).data)["items"]
    load: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for pod in pods:
        for container in assignment_of(pod).containers:
            for share in container.shares:
                load[share.uuid][0] += share.cores
                load[share.uuid][1] += share.memory_mib
    return {uuid: (cores, mib) for uuid, (cores, mib) in load.items()}


async def test_only_the_leader_is_ready_and_answers_the_verbs(api, replicas):
    async with aiohttp.ClientSession() as http:
        leader = await one_ready(http, replicas)
        standby = next(r for r in replicas if r is not leader)
        await asyncio.sleep(3 * RETRY_S)  # the standby has tried and lost meanwhile
        assert await readiness(http, [leader, standby]) == [True, False]
        pod = create_pods(api, 1)[0]
        meta = pod["metadata"]
        bind = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": "n1"}
        for verb, body in [("filter", {"Pod": pod, "NodeNames": list(NODES)}), ("bind", bind)]:
            status, answer = await standby.verb(http, verb, body)
            assert status == 503, answer
            assert "standby" in answer["Error"]
        status, answer = await leader.verb(http, "bind", bind)
        assert (status, answer["Error"]) == (200, "")


async def test_killing_the_leader_mid_burst_hands_over_within_the_lease_and_overcommits_no_gpu(api, replicas):
    async with aiohttp.ClientSession() as http:
        leader = await one_ready(http, replicas)
        standby = next(r for r in replicas if r is not leader)
        pending = create_pods(api, len(NODES) * GPUS_PER_NODE * 2)
        killed_at = takeover_s = None
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            pod = pending.pop(0)
            if not await schedule_once(http, replicas, pod):
                pending.append(pod)  # kube-scheduler's retry
                await asyncio.sleep(0.02)
            if killed_at is None and len(pending) <= 8:  # a third of the burst bound: the leader dies
                await leader.child.stop(kill=True)
                killed_at = time.monotonic()
            if killed_at is not None and takeover_s is None and await standby.ready(http):
                takeover_s = time.monotonic() - killed_at
        assert pending == [], standby.child.log_tail()
        assert takeover_s is not None
        assert (
            takeover_s < LEASE_S + 1.5
        )  # the lease, a retry period (with jitter), the fresh list; 2.5 s here
    load = gpu_load(api)
    assert len(load) == len(NODES) * GPUS_PER_NODE
    assert all(cores <= 100 and mib <= 81920 for cores, mib in load.values()), load
