"""SIMULATED cluster: the serving extender is killed in the middle of a burst of binds and a standby replica,
which has been listing and watching the cluster all along, takes over.

Cases (a burst of GPU pods, the kill once some are bound, then every pod must settle; the invariants hold:
no GPU over-committed, what each kubelet handed out matches the signed assignments):

- second-scheduler mode, two replicas with leader election: the serving pod dies (its kube-scheduler and its
  extender sidecar together, SIGKILL); after the Lease's duration the standby's kube-scheduler leads, with
  its own extender: every pod runs, none is lost or stuck;
- default-scheduler mode, a second extender replica behind the Service: the serving extender dies; the
  scheduler's calls to it fail (those pods are retried) until the Service's endpoints move to the other
  replica: the same. This case shows what a replacement that was already watching inherits;
- default-scheduler mode as the chart runs it: two extender replicas with ``--leader-elect`` (a real Lease on
  the simulated API server), the Service's endpoints following ``/readyz``. Only the leader is ready; when it
  is SIGKILLed mid-burst, the standby takes the Lease after its duration, lists the cluster again and becomes
  ready, and the endpoints move to it: the same, and never two replicas ready at once.

What is simulated: kube-scheduler's leader election (the standby's scheduler starts after ``LEASE_S``, scaled
down from kube-scheduler's 15 s ``leaseDuration``), the Service's endpoint switch (by hand after
``ENDPOINTS_S``, or by :class:`Service` from readiness). The extenders and their leader election are real.
"""

import asyncio
import dataclasses
import re
from typing import Any

import pytest

from tests.builders.pods import gpu_pod
from tests.sim.cluster import SimCluster
from tests.sim.extenders import ExtenderClient
from tests.sim.node import free_port
from tests.sim.processes import Child
from tests.sim.scenario import settle_and_check, submit_all, wait_bound
from tests.sim.schedconfig import load_scheduler_config
from tests.sim.scheduler import SimScheduler
from tests.sim.waiting import wait_until

LEASE_S = 0.5
ENDPOINTS_S = 0.3
H100_ONLY = {"nvidia.com/vgpu-include-models": "H100"}


def _burst(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        gpu_pod(f"{prefix}-{i:02d}", (10 + 5 * (i % 3), 2048 * (1 + i % 2)), annotations=H100_ONLY)
        for i in range(count)
    ]


ELECTION_S = (2.0, 1.5, 0.25)
"""The extenders' lease duration, renew deadline and retry period, scaled down from kube's 15/10/2 s."""
ELECT = [
    "--leader-elect=true",
    "--leader-elect-resource-namespace=kube-system",
    f"--leader-elect-lease-duration-seconds={ELECTION_S[0]}",
    f"--leader-elect-renew-deadline-seconds={ELECTION_S[1]}",
    f"--leader-elect-retry-period-seconds={ELECTION_S[2]}",
]


class Standby:
    """A second ``kube-vgpu-extender`` on ports of its own, started beside the cluster's (same API server)."""

    def __init__(self, cluster: SimCluster) -> None:
        assert cluster.extender is not None
        self.port, self.metrics_port = free_port(), free_port()
        ports = {"port": self.port, "metrics-port": self.metrics_port, "webhook-port": free_port()}
        argv = [_with_port(arg, ports) for arg in cluster.extender.argv]
        self.child = Child("extender-b", argv, cluster.extender.env, cluster.workdir / "extender-b.log")
        self.cluster = cluster

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    async def start(self, *, standing_by: bool = False) -> None:
        """Start and wait until it has listed the cluster: ready, or (``standing_by``) not ready as a standby."""
        await self.child.start()

        async def listed() -> bool:
            assert self.child.alive, self.child.log_tail()
            status, text = await self.cluster.http("GET", f"{self.metrics_url}/readyz")
            return text.startswith("standby") if standing_by else status == 200

        await wait_until(listed, timeout_s=30, what="the standby extender to list the cluster")


def _with_port(arg: str, ports: dict[str, int]) -> str:
    match = re.fullmatch(r"--(port|metrics-port|webhook-port|leader-elect-identity)=.+", arg)
    if match is None:
        return arg
    key = match.group(1)
    return f"--{key}=extender-b" if key == "leader-elect-identity" else f"--{key}={ports[key]}"


class Service:
    """The extender Service as its endpoints controller keeps it: the scheduler's extender address is the
    ready replica's (probed every ``PROBE_S``, as the chart's ``periodSeconds: 1``, scaled down)."""

    PROBE_S = 0.1

    def __init__(self, cluster: SimCluster, replicas: dict[str, str]) -> None:
        self.cluster, self.replicas = cluster, replicas  # verbs URL -> metrics URL
        self.serving = cluster.extender_url
        self.switched_at: float | None = None
        self.both_ready = 0

    async def run(self) -> None:
        while True:
            ready = [url for url, metrics in self.replicas.items() if await self._ready(metrics)]
            self.both_ready += len(ready) > 1
            if len(ready) == 1 and ready[0] != self.serving:
                await self._point_at(ready[0])
            await asyncio.sleep(self.PROBE_S)

    async def _ready(self, metrics_url: str) -> bool:
        status, _ = await self.cluster.http("GET", f"{metrics_url}/readyz")
        return status == 200

    async def _point_at(self, url: str) -> None:
        assert self.cluster.scheduler is not None
        old = self.cluster.scheduler.extenders
        self.cluster.scheduler.extenders = [
            ExtenderClient(dataclasses.replace(c.config, url_prefix=f"{url}/scheduler")) for c in old
        ]
        for client in old:
            await client.aclose()
        self.serving, self.switched_at = url, asyncio.get_running_loop().time()


async def _scheduler_pod_dies_and_standby_leads(cluster: SimCluster, standby: Standby) -> None:
    """The serving pod is killed: its kube-scheduler and its extender sidecar at once."""
    assert cluster.scheduler is not None
    assert cluster.extender is not None
    task = cluster._scheduler_task
    assert task is not None
    task.cancel()
    await asyncio.gather(task, cluster.extender.stop(kill=True), return_exceptions=True)
    await cluster.scheduler.aclose()
    await asyncio.sleep(LEASE_S)  # nobody renews the Lease; the standby's scheduler takes it
    config = load_scheduler_config(url_prefix=f"{standby.url}/scheduler")
    cluster.scheduler = SimScheduler(cluster.kube, config, queue=cluster.spec.queue)
    cluster._scheduler_task = asyncio.create_task(cluster.scheduler.run())


async def _service_switches_to_standby(cluster: SimCluster, standby: Standby) -> None:
    """The serving extender is killed; the scheduler keeps running and reaches the other replica."""
    assert cluster.scheduler is not None
    assert cluster.extender is not None
    await cluster.extender.stop(kill=True)
    await asyncio.sleep(ENDPOINTS_S)  # calls fail meanwhile: kube-scheduler retries those pods
    old = cluster.scheduler.extenders
    cluster.scheduler.extenders = [
        ExtenderClient(dataclasses.replace(c.config, url_prefix=f"{standby.url}/scheduler")) for c in old
    ]
    for client in old:
        await client.aclose()


@pytest.mark.parametrize(
    "failover",
    [
        pytest.param(_scheduler_pod_dies_and_standby_leads, id="second scheduler: serving replica killed"),
        pytest.param(_service_switches_to_standby, id="default scheduler: serving extender replica killed"),
    ],
)
async def test_killing_the_serving_extender_mid_burst_loses_no_pod_and_overcommits_no_gpu(
    sim_cluster, failover
):
    async with sim_cluster() as cluster:
        standby = Standby(cluster)
        try:
            await standby.start()
            burst = await submit_all(cluster, _burst("burst", 16))
            await wait_bound(cluster, burst, 3)
            await failover(cluster, standby)
            later = _burst("later", 4)
            for pod in later:  # the webhook Service now points at the standby too; created directly
                await cluster.submit(pod, webhook=False)
            keys = burst + [f"default/{p['metadata']['name']}" for p in later]
            states = await settle_and_check(cluster, keys, timeout_s=90, settled=("running", "failed"))
            assert {k: s for k, s in states.items() if s.phase != "running"} == {}
        finally:
            await standby.child.stop()


async def test_with_leader_election_the_service_follows_readiness_to_the_new_leader(sim_cluster):
    async with sim_cluster() as cluster:
        assert cluster.extender is not None
        cluster.extender.argv += [*ELECT, "--leader-elect-identity=extender-a"]
        await cluster.restart_extender(kill=False)  # the first replica leads: ready
        standby = Standby(cluster)
        await standby.start(standing_by=True)
        service = Service(
            cluster,
            {cluster.extender_url: cluster.extender_metrics_url, standby.url: standby.metrics_url},
        )
        endpoints = asyncio.create_task(service.run())
        try:
            burst = await submit_all(cluster, _burst("burst", 16))
            await wait_bound(cluster, burst, 3)
            await cluster.extender.stop(kill=True)
            killed_at = asyncio.get_running_loop().time()
            later = _burst("later", 4)
            for pod in later:
                await cluster.submit(pod, webhook=False)
            keys = burst + [f"default/{p['metadata']['name']}" for p in later]
            states = await settle_and_check(cluster, keys, timeout_s=90, settled=("running", "failed"))
            assert {k: s for k, s in states.items() if s.phase != "running"} == {}
            assert service.serving == standby.url
            assert service.switched_at is not None
            assert service.switched_at - killed_at < ELECTION_S[0] + 1.5  # lease, a retry, the fresh list
            assert service.both_ready == 0
        finally:
            endpoints.cancel()
            await asyncio.gather(endpoints, return_exceptions=True)
            await standby.child.stop()
