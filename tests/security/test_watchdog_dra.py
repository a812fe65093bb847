# mypy: disable-error-code="no-untyped-call"
"""The watchdog on a DRA node: a claim's processes are its pods', whoever the claim's directory names.

A DRA claim's state directory is ``<owner>_dra-<claim-uid>``: the owner is the pod the claim was made for
(its ``resourceClaimTemplate``), else the claim itself (``plugin.core.dra._owner``). The kernel names a
process's pod by UID in its cgroup, and no cgroup ever names a claim's UID; a pod may also use a claim another
pod was made for (``resourceClaimName`` of that claim: the scheduler checks ownership only for templates). The
watchdog learns which pod uses which claim from the pods' specs and the driver's checkpoint (``claims``), so
such a process is counted against the claim's limit and its violation goes to its own pod: an event on it,
eviction of it, never an event or eviction aimed at a pod named like the claim, and never ``unmanaged``.

Real parts as in ``test_watchdog.py``: ``plugin.nvml.Nvml`` over the fake ``libnvidia-ml.so.1``, state files
and ``/proc`` under a temporary root, the real ``kubernetes`` client against kmock (events, Eviction API).
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from plugin.core.watchdog import Reason, Violation
from plugin.kube import ApiCluster
from plugin.metrics.exporter import NodeCollector
from plugin.metrics.nvml_telemetry import NvmlTelemetry
from plugin.metrics.sources import ContainerName, ViolationTally
from plugin.nvml import Nvml
from plugin.watchdog import ApiEvictor, Watchdog, WatchdogOptions
from tests.fakes.kmock import KmockCluster
from tests.fakes.node import GIB, FakeContainer, FakeNodeFs, FakePodResources, FakeSlot, cid, uid, v2_systemd
from tests.fakes.nvml.harness import FakeNvml, FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)
from tests.security.test_watchdog import MIB, NODE, NS, Node

CLAIM_UID = "c1a10000-1111-2222-3333-444444444444"
CLAIM_DIR = f"{CLAIM_UID}_dra-{CLAIM_UID}"
TEMPLATE_UID = "c2a20000-1111-2222-3333-444444444444"


@pytest.fixture
def cluster() -> Iterator[KmockCluster]:
    with KmockCluster() as c:
        yield c


class DraNodeView(Node):
    """Pods a (uid 11) and b (uid 12) share claim ``shared`` (claim identity, 2 GiB on GPU 0); pod ``tpl``
    (uid 13) was made claim ``tpl-gpu`` (its own identity, 2 GiB on GPU 1), which pod ``c`` (uid 14) names
    too. Eviction is answered for every pod name and for the claims' names (none must be asked)."""

    def __init__(self, nvml: FakeNvml, fs: FakeNodeFs, cluster: KmockCluster) -> None:
        super().__init__(nvml, fs, cluster)
        g0, g1 = self.g[0], self.g[1]
        self.fs.add_container(
            FakeContainer(
                CLAIM_UID,
                NS,
                "shared",
                f"dra-{CLAIM_UID}",
                [(g0, 2 * GIB, 50, 50)],
                [FakeSlot(7, [(GIB, 0, 0, 0)], host_pid=2001), FakeSlot(8, [(GIB, 0, 0, 0)], host_pid=2002)],
            )
        )
        self.fs.add_container(
            FakeContainer(
                uid(13),
                NS,
                "tpl",
                f"dra-{TEMPLATE_UID}",
                [(g1, 2 * GIB, 50, 50)],
                [FakeSlot(7, [(GIB, 0, 0, 0)], host_pid=2003), FakeSlot(8, [(GIB, 0, 0, 0)], host_pid=2004)],
            )
        )
        for n, name, claim in [
            (11, "a", "shared"),
            (12, "b", "shared"),
            (13, "tpl", "tpl-gpu"),
            (14, "c", "tpl-gpu"),
        ]:
            self.claim_pod(n, name, claim)
        for name in ("shared", "tpl-gpu"):  # a pod named like a claim would be the wrong target
            assert self.cluster.emulator is not None
            self.cluster.emulator[f"post /api/v1/namespaces/{NS}/pods/{name}/eviction"] << self._evict(name)
        for pid, n in [(2001, 11), (2002, 12), (2003, 13), (2004, 14)]:
            self.fs.add_process(pid, v2_systemd(uid(n), cid(n)), ns_pid=pid % 100)

    def claim_pod(self, n: int, name: str, claim: str) -> None:
        """A pod whose container "main" uses ``claim`` by name (``resourceClaimName``; the status names a
        template's claim the same way)."""
        self.pod(n, name)
        pod = json.loads(self.cluster.core().read_namespaced_pod(name, NS, _preload_content=False).data)
        pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim}]
        self.cluster.core().replace_namespaced_pod(name, NS, pod, _preload_content=False)

    def dog(self, evict: bool = False) -> Watchdog:
        """The watchdog as wiring builds it on a DRA node: ``claims`` from the driver's checkpoint."""
        nvml = Nvml()
        nvml.open()
        dirs = {(NS, "shared"): CLAIM_DIR, (NS, "tpl-gpu"): f"{uid(13)}_dra-{TEMPLATE_UID}"}
        return Watchdog(
            node=NODE,
            state_dir=self.fs.state_dir,
            nvml=nvml,
            gpus=lambda: self.g,
            cluster=ApiCluster(self.cluster.api_client()),
            tally=ViolationTally(),
            options=WatchdogOptions(interval_s=0.01, overhead_bytes=512 * MIB, evict=evict),
            evictor=ApiEvictor(self.cluster.api_client()),
            root=self.fs.root,
            claims=lambda: dirs,
        )


@pytest.fixture
def dra_node(fake_nvml: Any, cluster: KmockCluster, tmp_path: Any) -> DraNodeView:
    return DraNodeView(fake_nvml("a10x4"), FakeNodeFs(tmp_path / "node"), cluster)


async def rounds(dog: Watchdog, n: int = 3) -> list[Violation]:
    found: list[Violation] = []
    for _ in range(n):
        found += await dog.check_once()
    return found


async def test_processes_of_pods_sharing_a_claim_within_its_limit_are_no_violation(
    dra_node: DraNodeView,
) -> None:
    g0, g1 = dra_node.g[0], dra_node.g[1]
    dra_node.nvml.set_processes(g0, [FakeProcess(2001, 1024), FakeProcess(2002, 1024)])
    dra_node.nvml.set_processes(g1, [FakeProcess(2003, 1024), FakeProcess(2004, 1024)])
    assert await rounds(dra_node.dog()) == []
    assert dra_node.events() == []


async def test_over_a_shared_claims_limit_each_pod_using_it_is_told_and_evicted_never_the_claims_name(
    dra_node: DraNodeView,
) -> None:
    g0, g1 = dra_node.g[0], dra_node.g[1]
    dra_node.nvml.set_processes(g0, [FakeProcess(2001, 1024), FakeProcess(2002, 3 * 1024)])  # 4 GiB > 3 GiB
    dra_node.nvml.set_processes(g1, [FakeProcess(2003, 1024), FakeProcess(2004, 3 * 1024)])
    found = await rounds(dra_node.dog(evict=True))
    assert {(v.reason, v.pod and v.pod.name, v.pod and v.pod.uid, v.pids) for v in found} == {
        (Reason.OVER_LIMIT, "a", uid(11), (2001, 2002)),
        (Reason.OVER_LIMIT, "b", uid(12), (2001, 2002)),
        (Reason.OVER_LIMIT, "tpl", uid(13), (2003, 2004)),
        (Reason.OVER_LIMIT, "c", uid(14), (2003, 2004)),
    }
    assert sorted(dra_node.evictions) == ["a", "b", "c", "tpl"]
    assert dra_node.events() == [(p, "GpuMemoryOverLimit", "Warning") for p in ("a", "b", "c", "tpl")]


async def test_a_process_outside_the_shim_in_a_pod_sharing_a_claim_is_that_pods_violation(
    dra_node: DraNodeView,
) -> None:
    """Pod b runs a second process the shim does not know: b, and b alone, is evicted."""
    g0 = dra_node.g[0]
    dra_node.fs.add_process(2005, v2_systemd(uid(12), cid(12)), ns_pid=5)
    dra_node.nvml.set_processes(g0, [FakeProcess(2001, 512), FakeProcess(2002, 512), FakeProcess(2005, 512)])
    found = await rounds(dra_node.dog(evict=True))
    assert [(v.reason, v.pod and v.pod.name, v.pids) for v in found] == [(Reason.OUTSIDE_SHIM, "b", (2005,))]
    assert dra_node.evictions == ["b"]


async def test_a_process_on_a_gpu_the_shared_claim_was_not_given_is_its_own_pods_violation(
    dra_node: DraNodeView,
) -> None:
    g0, g2 = dra_node.g[0], dra_node.g[2]
    dra_node.nvml.set_processes(g0, [FakeProcess(2002, 512)])
    dra_node.nvml.set_processes(g2, [FakeProcess(2001, 512)])  # pod a's, the claim has GPU 0 only
    found = await rounds(dra_node.dog(evict=True))
    assert [(v.reason, v.pod and v.pod.name, v.gpu, v.pids) for v in found] == [
        (Reason.WRONG_GPU, "a", g2, (2001,))
    ]
    assert dra_node.evictions == ["a"]
    assert dra_node.events() == [("a", "GpuProcessOnWrongGpu", "Warning")]


async def test_the_exporter_counts_a_shared_claims_processes_for_the_claim_as_the_watchdog_learnt_them(
    dra_node: DraNodeView,
) -> None:
    """No cgroup names a claim's UID: without the pods' claims (the watchdog's listing) the processes of pods
    sharing the claim would be unattributed; with them, the claim's series count both pods' processes."""
    g0 = dra_node.g[0]
    dra_node.nvml.set_processes(g0, [FakeProcess(2001, 1024), FakeProcess(2002, 512)])
    dog = dra_node.dog()
    await rounds(dog)
    in_use = {ContainerName(NS, p, "main"): frozenset({CLAIM_UID}) for p in ("a", "b")}
    nvml = Nvml()
    nvml.open()
    collector = NodeCollector(
        node=NODE,
        state_dir=dra_node.fs.state_dir,
        root=dra_node.fs.root,
        telemetry=NvmlTelemetry(nvml),
        pod_resources=FakePodResources(set(in_use), claims=in_use),
        shared_claims=dog.shared_claims,
    )
    view = collector.read()
    assert view.usage is not None
    totals = view.usage[(CLAIM_DIR, g0)]
    assert (sorted(totals.pids), totals.memory_used_bytes) == ([2001, 2002], 1536 * (1 << 20))
    assert view.unattributed.get(g0, 0) == 0
