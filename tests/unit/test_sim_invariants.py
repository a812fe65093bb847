"""The simulated cluster's rules follow the kubelet's: init containers' devices are reused within their pod.

Case matrix: per-GPU use of a pod (init + app is the larger, not the sum; a sidecar adds to both; an app
exclusive GPU); over-commit across pods, and an exclusive GPU shared by two pods; device IDs held twice
(init then app of one pod: allowed; two pods, or two running containers of one pod: a double sale); the
simulated scheduler's effective requests with sidecars.
"""

from typing import Any

import pytest

from tests.sim.fit import extended_requests
from tests.sim.invariants import container_kinds, double_sales, mode_violations, overcommit, pod_gpu_use
from vcuda.model import (
    ContainerAssignment,
    ContainerKind,
    GpuInfo,
    GpuMode,
    GpuShare,
    GpuUuid,
    NodeInventory,
    NodeName,
    OtherModeGpu,
    PodAssignment,
)

G0, G1 = GpuUuid("GPU-0"), GpuUuid("GPU-1")
INIT, SIDECAR, APP = ContainerKind.INIT, ContainerKind.SIDECAR, ContainerKind.APP
INVENTORY = {"n": NodeInventory((GpuInfo(G0, 0, "A10", 1000), GpuInfo(G1, 1, "A10", 1000)))}


def pod(*containers: tuple[str, str, int]) -> dict[str, Any]:
    """(name, kind, vcuda-core) in kubelet order; kind init, sidecar or app."""
    spec: dict[str, list[dict[str, Any]]] = {"initContainers": [], "containers": []}
    for name, kind, cores in containers:
        body: dict[str, Any] = {"name": name, "resources": {"limits": {"nvidia.com/vcuda-core": cores}}}
        if kind == "sidecar":
            body["restartPolicy"] = "Always"
        spec["containers" if kind == "app" else "initContainers"].append(body)
    return {"metadata": {"name": "p"}, "spec": spec}


def use(body: dict[str, Any], shares: dict[str, list[tuple[str, int, int]]]) -> dict[str, tuple[int, int]]:
    containers = tuple(
        ContainerAssignment(name, tuple(GpuShare(GpuUuid(u), c, m) for u, c, m in held), 0)
        for name, held in shares.items()
    )
    return pod_gpu_use(container_kinds(body), PodAssignment(NodeName("n"), containers))


@pytest.mark.parametrize(
    ("body", "shares", "expected"),
    [
        pytest.param(
            pod(("i", "init", 50), ("c", "app", 50)),
            {"c": [(G0, 50, 500)], "i": [(G0, 50, 500)]},
            {G0: (50, 500)},
            id="init then app on one GPU: the larger, not the sum",
        ),
        pytest.param(
            pod(("s", "sidecar", 20), ("i", "init", 50), ("c", "app", 50)),
            {"s": [(G0, 20, 100)], "i": [(G0, 50, 300)], "c": [(G0, 50, 200)]},
            {G0: (70, 400)},
            id="a sidecar runs beside both",
        ),
        pytest.param(
            pod(("i", "init", 100), ("c", "app", 30)),
            {"i": [(G0, 100, 1000)], "c": [(G1, 30, 300)]},
            {G0: (100, 1000), G1: (30, 300)},
            id="different GPUs each count",
        ),
    ],
)
def test_a_pod_holds_on_each_gpu_what_the_kubelet_reserves(body, shares, expected):
    assert use(body, shares) == expected


def test_init_reuse_is_no_overcommit_but_two_pods_beyond_a_gpu_are():
    reused = use(pod(("i", "init", 60), ("c", "app", 60)), {"i": [(G0, 60, 600)], "c": [(G0, 60, 600)]})
    other = use(pod(("c", "app", 40)), {"c": [(G0, 40, 400)]})
    assert overcommit(INVENTORY, [reused, other]) == []
    third = use(pod(("c", "app", 10)), {"c": [(G0, 10, 10)]})
    assert overcommit(INVENTORY, [reused, other, third]) == [
        "GPU GPU-0 over-committed: 110 % cores, 1010 MiB of 1000 MiB"
    ]


def test_an_exclusive_gpu_reused_by_its_own_app_is_fine_and_shared_with_another_pod_is_not():
    mine = use(pod(("i", "init", 100), ("c", "app", 100)), {"i": [(G1, 100, 0)], "c": [(G1, 100, 0)]})
    assert overcommit(INVENTORY, [mine]) == []
    problems = overcommit(INVENTORY, [mine, {G1: (0, 0)}])
    assert "GPU GPU-1 is held exclusively and shared (2 pods)" in problems


@pytest.mark.parametrize(
    ("holders", "sold_twice"),
    [
        pytest.param([("a", INIT), ("a", APP)], False, id="init then app of one pod: reused"),
        pytest.param([("a", INIT), ("a", INIT), ("a", APP)], False, id="two inits then app: reused"),
        pytest.param([("a", INIT), ("b", APP)], True, id="init of one pod, app of another"),
        pytest.param([("a", APP), ("b", APP)], True, id="two pods"),
        pytest.param([("a", APP), ("a", APP)], True, id="two app containers of one pod"),
        pytest.param([("a", SIDECAR), ("a", APP)], True, id="a sidecar keeps its devices"),
    ],
)
def test_a_device_id_held_twice_follows_the_kubelets_reuse_rule(holders, sold_twice):
    assert bool(double_sales({"GPU-0::0": holders})) is sold_twice


@pytest.mark.parametrize(
    ("body", "cores"),
    [
        pytest.param(pod(("i", "init", 50), ("c", "app", 10), ("d", "app", 20)), 50, id="largest init"),
        pytest.param(pod(("i", "init", 20), ("c", "app", 10), ("d", "app", 20)), 30, id="app sum"),
        pytest.param(pod(("s", "sidecar", 20), ("i", "init", 50), ("c", "app", 50)), 70, id="sidecar adds"),
        pytest.param(pod(("i", "init", 50), ("s", "sidecar", 20), ("c", "app", 10)), 50, id="sidecar after"),
    ],
)
def test_the_simulated_scheduler_counts_requests_as_effective_totals(body, cores):
    assert extended_requests(body) == {"nvidia.com/vcuda-core": cores}


# --- one GPU, one mode (invariant 4) ------------------------------------------------------------------------

CORE, WHOLE, SHARED = "nvidia.com/vcuda-core", "nvidia.com/gpu", "nvidia.com/gpu.shared"
G2, G3 = GpuUuid("GPU-2"), GpuUuid("GPU-3")
MIXED = NodeInventory(
    (GpuInfo(G0, 0, "A10", 1000), GpuInfo(G1, 1, "A10", 1000)),
    other=(
        OtherModeGpu(G2, 2, "A10", 1000, GpuMode.WHOLE, WHOLE),
        OtherModeGpu(G3, 3, "A10", 1000, GpuMode.TIME_SLICING, SHARED, replicas=2),
    ),
)
ADVERTISED = {
    CORE: [f"{g}::{n}" for g in (G0, G1) for n in range(100)],
    WHOLE: [G2],
    SHARED: [f"{G3}::0", f"{G3}::1"],
}


def held(*rows: tuple[str, str, list[str]]) -> list[tuple[str, str, str, list[str]]]:
    """(pod uid, resource, IDs), one container each."""
    return [(uid, "c", resource, ids) for uid, resource, ids in rows]


@pytest.mark.parametrize(
    ("inventory", "advertised", "holders", "assigned", "expected"),
    [
        pytest.param(
            MIXED,
            ADVERTISED,
            held(
                ("a", CORE, [f"{G0}::0"]),
                ("b", WHOLE, [G2]),
                ("c", SHARED, [f"{G3}::0"]),
                ("d", SHARED, [f"{G3}::1"]),
            ),
            [G0],
            [],
            id="a mixed node in use, each GPU in its mode",
        ),
        pytest.param(
            MIXED,
            {**ADVERTISED, WHOLE: [G2, G0]},
            [],
            [],
            [
                f"GPU {G0} advertised as {WHOLE}, which the inventory does not sell it as",
                f"GPU {G0} advertised as both {WHOLE} and {CORE}",
            ],
            id="one GPU under two resources",
        ),
        pytest.param(
            MIXED,
            {**ADVERTISED, CORE: [f"{G2}::0"], WHOLE: []},
            [],
            [],
            [f"GPU {G2} advertised as {CORE} but not sold as vcuda shares"],
            id="shares of a whole GPU",
        ),
        pytest.param(
            MIXED,
            {**ADVERTISED, WHOLE: [G3], SHARED: []},
            [],
            [],
            [f"GPU {G3} advertised as {WHOLE}, which the inventory does not sell it as"],
            id="a replicated GPU sold whole",
        ),
        pytest.param(
            MIXED,
            ADVERTISED,
            held(("a", CORE, [f"{G2}::0"]), ("b", WHOLE, [G2])),
            [],
            [f"GPU {G2} held through {WHOLE}, {CORE}"],
            id="one GPU held through two resources",
        ),
        pytest.param(
            MIXED,
            ADVERTISED,
            held(("a", WHOLE, [G2]), ("b", WHOLE, [G2])),
            [],
            [f"GPU {G2} held by 2 containers, sold to at most 1"],
            id="a whole GPU given twice",
        ),
        pytest.param(
            MIXED,
            ADVERTISED,
            held(*[(u, SHARED, [f"{G3}::0"]) for u in "abc"]),
            [],
            [f"GPU {G3} held by 3 containers, sold to at most 2"],
            id="more pods than replicas",
        ),
        pytest.param(
            MIXED,
            ADVERTISED,
            [],
            [G2],
            [f"an assignment names GPU {G2}, which is not sold as vcuda shares"],
            id="shares placed on a whole GPU",
        ),
        pytest.param(
            NodeInventory(MIXED.gpus, other=(OtherModeGpu(G0, 0, "A10", 1000, GpuMode.WHOLE, WHOLE),)),
            {},
            [],
            [],
            [f"GPU {G0} listed as vcuda shares and in mode whole"],
            id="an inventory listing a GPU twice",
        ),
    ],
)
def test_no_gpu_is_sold_in_two_modes(inventory, advertised, holders, assigned, expected):
    assert mode_violations(inventory, CORE, advertised, holders, assigned) == expected
