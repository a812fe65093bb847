"""The extender's ``/metrics`` is bounded: a fixed set of series whatever the cluster's size, cluster aggregates
that always equal a recount of the ledgers, and a scrape that never waits on the scheduling lock.

Cases: 10 and 1,000 nodes give the same series (and under 8 KB of text); no series is per node or per GPU;
after random sequences of node, pod, reservation, bind, rollback and expiry events the published totals equal
a recount from the ledgers; a render completes while another thread holds the state's lock.
"""

import random
import threading
from dataclasses import replace
from typing import Any

import pytest

from extender.clusterstate import ClusterState
from extender.core.ledger import PodKey
from tests.builders.vcuda import nvswitch_node, uuid
from tests.fakes.extender import NAMES, FakeClock, gpu_node, make_deps, node_obj, pod_obj
from tests.signing_keys import sign_for
from vcuda.model import ContainerAssignment, GpuShare, NodeName, PodAssignment
from vcuda.units import mib_to_bytes

P = "kube_vgpu_extender"


def samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def series_names(text: str) -> list[str]:
    return sorted(line.rsplit(" ", 1)[0] for line in samples(text))


def scraped(node_count: int) -> str:
    names = [f"n{i}" for i in range(node_count)]
    deps, _ = make_deps([gpu_node(n) for n in names])
    deps.state.apply_pod(bound_pod("busy", names[0], 0, cores=30, mib=4096, phase="Running"))
    deps.scheduler.filter(pod_obj("p", (30, 4096)), names)
    return deps.metrics.render().decode()


def test_the_series_are_the_same_for_10_and_1000_nodes():
    small, large = scraped(10), scraped(1000)
    assert series_names(small) == series_names(large)
    assert len(large.encode()) < 8192
    assert f"{P}_gpu_nodes 1000.0" in samples(large)


def test_no_series_is_per_node_or_per_gpu():
    text = scraped(10)
    assert all("node=" not in line and "gpu_uuid=" not in line for line in samples(text))
    assert "_gpu_capacity_" not in text
    assert "_node_capacity_" not in text


def bound_pod(name: str, node: str, gpu: int, *, cores: int, mib: int, phase: str) -> dict[str, Any]:
    pod = pod_obj(name, (cores, mib), node=node, phase=phase)
    share = GpuShare(uuid(node, gpu), cores, mib)
    assignment = PodAssignment(NodeName(node), (ContainerAssignment("c0", (share,), cores),))
    pod["metadata"]["annotations"][NAMES.assignment] = sign_for(pod, assignment, NAMES)
    return pod


def half_healthy(name: str) -> dict[str, Any]:
    inventory = nvswitch_node(4, node=name, memory_mib=24576)
    gpus = tuple(replace(g, healthy=g.index % 2 == 0) for g in inventory.gpus)
    return node_obj(name, replace(inventory, gpus=gpus))


def recount(state: ClusterState) -> dict[str, int]:
    """What the aggregates must say, counted the slow way from every ledger."""
    out = dict.fromkeys(
        ["nodes", "gpu_nodes", "gpus", "healthy", "cores", "mib", "used_cores", "used_mib"], 0
    )
    phases = dict.fromkeys(["reserved", "bound", "settled", "unplaced"], 0)
    with state.lock:
        for ledger in state.ledgers():
            out["nodes"] += 1
            gpus = ledger.inventory.gpus if ledger.inventory is not None else ()
            out["gpu_nodes"] += 1 if gpus else 0
            out["gpus"] += len(gpus)
            out["healthy"] += sum(1 for g in gpus if g.healthy)
            out["cores"] += 100 * len(gpus)
            out["mib"] += sum(g.memory_mib for g in gpus)
            out["used_cores"] += sum(ledger.load[g.uuid].cores for g in gpus if g.uuid in ledger.load)
            out["used_mib"] += sum(ledger.load[g.uuid].memory_mib for g in gpus if g.uuid in ledger.load)
            for h in ledger.holdings():
                phase = "reserved" if not h.bound else "bound" if not h.settled else "settled"
                phases["unplaced" if h.settled and h.unplaced else phase] += 1
    return out | {f"pods_{k}": v for k, v in phases.items()}


def reported(deps: Any) -> dict[str, float]:
    def value(name: str, **labels: str) -> float:
        found = deps.metrics.registry.get_sample_value(f"{P}_{name}", labels)
        assert found is not None, name
        return float(found)

    out = {
        "nodes": value("nodes"),
        "gpu_nodes": value("gpu_nodes"),
        "gpus": value("gpus", health="healthy") + value("gpus", health="unhealthy"),
        "healthy": value("gpus", health="healthy"),
        "cores": value("capacity_cores"),
        "mib": value("capacity_memory_bytes") / mib_to_bytes(1),
        "used_cores": value("allocated_cores"),
        "used_mib": value("allocated_memory_bytes") / mib_to_bytes(1),
    }
    phases = {f"pods_{p}": value("pods", phase=p) for p in ("reserved", "bound", "settled", "unplaced")}
    assert value("inflight_reservations") == phases["pods_reserved"] + phases["pods_bound"]
    return out | phases


def random_step(deps: Any, clock: FakeClock, rng: random.Random, step: int) -> None:
    state, node = deps.state, f"n{rng.randrange(6)}"
    pod, gpu, cores, mib = (
        f"p{rng.randrange(30)}",
        rng.randrange(4),
        rng.randint(5, 40),
        rng.randint(256, 8192),
    )
    match rng.randrange(11):
        case 0:
            state.apply_node(gpu_node(node, gpus=4, memory_mib=rng.choice([24576, 81920])))
        case 1:
            state.apply_node(half_healthy(node) if rng.random() < 0.5 else node_obj(node))
        case 2:
            state.remove_node(node)
        case 3 | 4:
            phase = rng.choice(["Running", "Pending"])
            state.apply_pod(bound_pod(pod, node, gpu, cores=cores, mib=mib, phase=phase))
        case 5:
            state.apply_pod(pod_obj(pod, (cores, mib), node=node, phase="Running"))  # no assignment: unplaced
        case 6:
            share = GpuShare(uuid(node, gpu), cores, mib)
            state.reserve(PodKey(f"r{step}"), NodeName(node), (ContainerAssignment("c0", (share,), cores),))
        case 7:
            state.mark_bound(PodKey(f"r{rng.randrange(step + 1)}"))
        case 8:
            state.rollback(PodKey(f"r{rng.randrange(step + 1)}"))
        case 9:
            state.remove_pod(pod_obj(pod, (cores, mib)))
        case _:
            clock.now += 40
            state.expire()


@pytest.mark.parametrize("seed", range(4))
def test_the_aggregates_always_equal_a_recount_of_the_ledgers(seed: int):
    clock = FakeClock()
    deps, _ = make_deps([gpu_node(f"n{i}", gpus=4) for i in range(3)], clock=clock, grace_s=100)
    rng = random.Random(seed)
    for step in range(250):
        random_step(deps, clock, rng, step)
        if step % 10 == 0:
            assert reported(deps) == recount(deps.state), step
    assert reported(deps) == recount(deps.state)


def test_a_render_completes_while_another_thread_holds_the_scheduling_lock():
    deps, _ = make_deps([gpu_node("n1"), gpu_node("n2")])
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with deps.state.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    rendered: list[bytes] = []
    scrape = threading.Thread(target=lambda: rendered.append(deps.metrics.render()), daemon=True)
    try:
        scrape.start()
        scrape.join(2)
        assert rendered, "the scrape waited on the scheduling lock"
        assert f"{P}_gpu_nodes 2.0" in rendered[0].decode()
    finally:
        release.set()
        holder.join(5)
        scrape.join(5)
