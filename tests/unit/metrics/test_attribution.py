"""attribute(): NVML samples to containers. Cases: one GPU container per pod; several per pod resolved by
container ID, by shim host PID, by namespaced PID + start time, by a container ID placed through another PID;
ambiguous and foreign PIDs stay unattributed; duplicate samples never count twice.
"""

from typing import Any

import pytest

from plugin.metrics.attribution import Evidence, attribute, container_ids_from_pods, dedupe_samples
from plugin.metrics.cgroups import CgroupRef
from plugin.metrics.procfs import NamespacedPid
from plugin.metrics.sources import ContainerName, ProcessSample
from plugin.metrics.usage import ContainerState
from tests.fakes.node import GIB, cid, uid
from vcuda.model import GpuUuid
from vcuda.shimfile import GpuCounters, GpuLimit, ProcessSlot, ShimConfig

G = GpuUuid("GPU-a")
ZERO = GpuCounters(0, 0, 0, 0, 0)


def state(pod: int, name: str, *slots: tuple[int, int, int]) -> ContainerState:
    """slots: (namespaced pid, host pid, start time)."""
    config = ShimConfig(uid(pod), "ns", f"pod-{pod}", name, (GpuLimit(G, GIB, 10, 10),))
    procs = tuple(ProcessSlot(pid=p, host_pid=h, start_time=t, gpus=(ZERO,)) for p, h, t in slots)
    return ContainerState(f"{uid(pod)}_{name}", config, procs)


def owners(samples: Any, containers: Any, cgroups: Any, container_ids: Any = None, nspids: Any = None) -> Any:
    result = attribute(
        samples,
        containers,
        Evidence(
            cgroups=cgroups,
            container_ids=container_ids or {},
            namespaced_pid=lambda pid: (nspids or {}).get(pid),
        ),
    )
    return {k[0]: sorted(v.pids) for k, v in result.by_container.items()}, dict(result.unattributed)


def sample(pid: int, mem: int = GIB) -> ProcessSample:
    return ProcessSample(G, pid, mem, 0.1)


TWO = [state(1, "a", (1, 0, 100)), state(1, "b", (1, 0, 200), (9, 77, 300))]


@pytest.mark.parametrize(
    ("cgroups", "container_ids", "nspids", "expected"),
    [
        pytest.param(
            {5: CgroupRef(uid(1), cid(1))},
            {cid(1): "b"},
            {},
            {f"{uid(1)}_b": [5]},
            id="container ID from pod status",
        ),
        pytest.param(
            {77: CgroupRef(uid(1), cid(2))}, {}, {}, {f"{uid(1)}_b": [77]}, id="host PID in a shim slot"
        ),
        pytest.param(
            {5: CgroupRef(uid(1), cid(3))},
            {},
            {5: NamespacedPid(1, 200)},
            {f"{uid(1)}_b": [5]},
            id="namespaced PID and start time",
        ),
        pytest.param(
            {5: CgroupRef(uid(1), cid(3))},
            {},
            {5: NamespacedPid(1, 999)},
            {},
            id="pid 1 in both, start time matches neither",
        ),
        pytest.param(
            {5: CgroupRef(uid(1), cid(9))}, {cid(9): "init"}, {}, {}, id="container ID of a non-GPU container"
        ),
    ],
)
def test_pid_in_a_pod_with_two_gpu_containers(cgroups, container_ids, nspids, expected):
    pid = next(iter(cgroups))
    found, lost = owners([sample(pid)], TWO, cgroups, container_ids, nspids)
    assert found == expected
    assert lost == ({} if expected else {G: 1})


def test_single_gpu_container_pod_needs_only_the_pod_uid():
    found, lost = owners([sample(5)], [state(1, "a")], {5: CgroupRef(uid(1), None)})
    assert (found, lost) == ({f"{uid(1)}_a": [5]}, {})


def test_container_id_placed_by_one_pid_places_its_siblings():
    cgroups = {77: CgroupRef(uid(1), cid(2)), 78: CgroupRef(uid(1), cid(2))}
    found, lost = owners([sample(77), sample(78)], TWO, cgroups)
    assert (found, lost) == ({f"{uid(1)}_b": [77, 78]}, {})


def test_foreign_and_vanished_pids_are_unattributed():
    cgroups = {5: CgroupRef(uid(2), cid(1)), 6: None}
    found, lost = owners([sample(5), sample(6), sample(7)], [state(1, "a")], cgroups)
    assert (found, lost) == ({}, {G: 3})


def test_duplicate_samples_of_one_pid_count_once():
    samples = [
        ProcessSample(G, 5, GIB, 0.2),
        ProcessSample(G, 5, 2 * GIB, 0.1),
        ProcessSample(G, 6, GIB, 0.3),
    ]
    result = attribute(
        samples,
        [state(1, "a")],
        Evidence(
            cgroups={5: CgroupRef(uid(1), None), 6: CgroupRef(uid(1), None)},
            container_ids={},
            namespaced_pid=lambda pid: None,
        ),
    )
    totals = result.by_container[(f"{uid(1)}_a", G)]
    assert (totals.memory_used_bytes, round(totals.utilization, 6), totals.pids) == (3 * GIB, 0.5, {5, 6})
    assert len(dedupe_samples(samples)) == 2


def test_container_ids_come_from_pod_status_of_every_runtime():
    pods: list[dict[str, Any]] = [
        {"status": {"containerStatuses": [{"name": "a", "containerID": "containerd://" + cid(1)}]}},
        {
            "status": {
                "initContainerStatuses": [{"name": "setup", "containerID": "cri-o://" + cid(2)}],
                "containerStatuses": [
                    {"name": "b", "containerID": "docker://" + cid(3)},
                    {"name": "waiting"},
                ],
            }
        },
        {"metadata": {"name": "pending"}},
    ]
    assert container_ids_from_pods(pods) == {cid(1): "a", cid(2): "setup", cid(3): "b"}


def test_only_gpu_container_does_not_absorb_a_sibling_container_seen_on_the_gpu():
    """A non-GPU sidecar that can see the GPU (NVIDIA_VISIBLE_DEVICES=all images) must not be billed to the
    pod's GPU container once the shim tied that container to another container ID."""
    main = state(1, "main", (1, 50, 100))
    cgroups = {50: CgroupRef(uid(1), cid(1)), 60: CgroupRef(uid(1), cid(2))}
    found, lost = owners([sample(50), sample(60)], [main], cgroups)
    assert (found, lost) == ({f"{uid(1)}_main": [50]}, {G: 1})


def test_a_dra_containers_pids_go_to_the_claim_it_uses():
    """DRA: the claim's directory is ``<pod-uid>_dra-<claim-uid>``; container "cuda" uses claim u1, the
    sidecar "log" uses none: its PID on the GPU stays unattributed even though the pod has one GPU directory."""
    claim = state(1, "dra-u1")
    cgroups = {50: CgroupRef(uid(1), cid(1)), 60: CgroupRef(uid(1), cid(2))}
    claims = {ContainerName("ns", "pod-1", "cuda"): frozenset({"u1"})}
    result = attribute(
        [sample(50), sample(60)],
        [claim],
        Evidence(
            cgroups=cgroups,
            container_ids={cid(1): "cuda", cid(2): "log"},
            namespaced_pid=lambda pid: None,
            claims=claims,
        ),
    )
    assert {k[0]: sorted(v.pids) for k, v in result.by_container.items()} == {f"{uid(1)}_dra-u1": [50]}
    assert dict(result.unattributed) == {G: 1}


def test_a_container_using_two_claims_is_placed_by_the_shims_slots():
    first, second = state(1, "dra-u1"), state(1, "dra-u2", (7, 50, 100))
    claims = {ContainerName("ns", "pod-1", "cuda"): frozenset({"u1", "u2"})}
    result = attribute(
        [sample(50)],
        [first, second],
        Evidence(
            cgroups={50: CgroupRef(uid(1), cid(1))},
            container_ids={cid(1): "cuda"},
            namespaced_pid=lambda pid: None,
            claims=claims,
        ),
    )
    assert {k[0] for k in result.by_container} == {f"{uid(1)}_dra-u2"}


def _shared_claim() -> ContainerState:
    """A claim of its own (identity: the claim's UID, ``uid(9)``) on GPU G, no shim slot."""
    config = ShimConfig(uid(9), "ns", "the-claim", f"dra-{uid(9)}", (GpuLimit(G, GIB, 10, 10),))
    return ContainerState(f"{uid(9)}_dra-{uid(9)}", config, ())


@pytest.mark.parametrize(
    ("shared", "expected"),
    [
        pytest.param(None, ({}, {G: 3}), id="no pod known to use it: nobody's (no cgroup names a claim)"),
        pytest.param(
            {uid(1): [f"{uid(9)}_dra-{uid(9)}"], uid(2): [f"{uid(9)}_dra-{uid(9)}"]},
            ({f"{uid(9)}_dra-{uid(9)}": [10, 20]}, {G: 1}),
            id="the pods using it: theirs; a third pod's process stays unattributed",
        ),
        pytest.param(
            {uid(1): ["no-such-dir", "../x"], uid(3): []},
            ({}, {G: 3}),
            id="names of no directory place nothing",
        ),
    ],
)
def test_a_claims_directory_takes_the_processes_of_the_pods_that_use_it(shared: Any, expected: Any) -> None:
    cgroups = {10: CgroupRef(uid(1), cid(1)), 20: CgroupRef(uid(2), cid(2)), 30: CgroupRef(uid(3), cid(3))}
    result = attribute(
        [sample(10), sample(20), sample(30)],
        [_shared_claim()],
        Evidence(cgroups=cgroups, container_ids={}, namespaced_pid=lambda pid: None, shared=shared),
    )
    assert (
        {k[0]: sorted(v.pids) for k, v in result.by_container.items()},
        dict(result.unattributed),
    ) == expected


def test_a_pod_with_its_own_claim_and_a_shared_one_is_placed_by_the_shims_slots() -> None:
    """Pod 1's own template claim (no slot for PID 10) and the shared claim (a slot for it): the slot decides;
    PID 11, another container's and in neither's slots, is placed nowhere (two candidates, no evidence)."""
    own = state(1, "dra-u1")
    config = ShimConfig(uid(9), "ns", "the-claim", f"dra-{uid(9)}", (GpuLimit(G, GIB, 10, 10),))
    shared = ContainerState(f"{uid(9)}_dra-{uid(9)}", config, (ProcessSlot(3, 10, 100, (ZERO,)),))
    result = attribute(
        [sample(10), sample(11)],
        [own, shared],
        Evidence(
            cgroups={10: CgroupRef(uid(1), cid(1)), 11: CgroupRef(uid(1), cid(2))},
            container_ids={},
            namespaced_pid=lambda pid: None,
            shared={uid(1): [shared.name, own.name]},
        ),
    )
    assert {k[0]: sorted(v.pids) for k, v in result.by_container.items()} == {shared.name: [10]}
    assert dict(result.unattributed) == {G: 1}
