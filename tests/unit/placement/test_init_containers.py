"""place_pod for pods with init containers and sidecars, as the kubelet admits them.

The kubelet hands a container the slices its init containers used before any free one, and keeps a sidecar's
slices to itself; the pod holds the larger of its phases, not the sum. Cases:

| pod (cores/MiB)                         | expectation                                                   |
| --------------------------------------- | ------------------------------------------------------------- |
| init 50 + app 50, 40 % taken            | fits: reserves 50 on one GPU (the sum, 100, would not)        |
| init 50 + app 50, spread over 4 GPUs    | the app on the init container's GPU                           |
| init 70 + apps 30 + 30                  | both apps on the init GPU, 70 cores reserved                  |
| init 30 + app 50                        | app on the init GPU, 50 reserved                              |
| init 50 + app 80, binpack, one GPU 40 % | both on the other GPU (the init GPU must hold the app too)    |
| sidecar 20, init 50, app 50             | 70 reserved: the sidecar keeps its slices                     |
| init 100 + app 100 on a 1-GPU node      | fits, the same GPU                                            |
| init 200 + app 100                      | refused: the kubelet would pick 100 of 200 slices at random   |
| init 200 + app 300                      | app on both init GPUs plus the best-connected third           |
| app containers only                     | reserved is the containers themselves (unchanged behaviour)   |

Property: for random pods and loads, every placement is what a kubelet that reuses init slices first (in a
random order) gives each container, the reservation equals the slices it allocates, and no GPU overflows.
"""

import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.core.initreuse import net_charges
from extender.core.ledger import Holding, NodeLedger, PodKey
from extender.core.load import GpuLoad, NodeLoad, reserve
from extender.core.placement import Placement, Rejection, RejectReason, place_pod
from tests.builders.vcuda import nvswitch_node, pcie_node, uuid
from tests.fakes.extender import NAMES, gpu_node, make_deps, pod_obj
from tests.signing_keys import SIGNER
from vcuda.annotations import encode_assignment
from vcuda.model import (
    ContainerAssignment,
    ContainerKind,
    ContainerRequest,
    GpuShare,
    GpuUuid,
    NodeInventory,
    NodeName,
    PodAssignment,
    PodRequest,
    Policy,
)
from vcuda.signing import pod_binding
from vcuda.units import CORE_PER_GPU

INIT, SIDECAR, APP = ContainerKind.INIT, ContainerKind.SIDECAR, ContainerKind.APP


def pod(*containers: tuple[str, ContainerKind, int, int]) -> PodRequest:
    return PodRequest(tuple(ContainerRequest(n, c, m, k) for n, k, c, m in containers))


def place(inv: NodeInventory, load: NodeLoad, req: PodRequest, policy: Policy = Policy.BINPACK) -> Placement:
    result = place_pod(inv, load, req, gpu_policy=policy, node_policy=policy)
    assert isinstance(result, Placement), result
    return result


def gpus_of(result: Placement, name: str) -> dict[GpuUuid, int]:
    found = next(c for c in result.containers if c.name == name)
    return {s.uuid: s.cores for s in found.shares}


def reserved_load(result: Placement) -> dict[GpuUuid, GpuLoad]:
    return reserve({}, result.reserved)


G0, G1, G2 = uuid("n", 0), uuid("n", 1), uuid("n", 2)


def test_init_and_app_reserve_the_larger_not_the_sum() -> None:
    node = nvswitch_node(1)
    req = pod(("setup", INIT, 50, 4096), ("main", APP, 50, 4096))
    result = place(node, {G0: GpuLoad(40, 1000)}, req)  # 60 % free: the sum (100) would not fit
    assert gpus_of(result, "setup") == gpus_of(result, "main") == {G0: 50}
    assert reserved_load(result) == {G0: GpuLoad(50, 4096)}


def test_app_container_lands_on_its_init_containers_gpu_even_under_spread() -> None:
    req = pod(("setup", INIT, 50, 4096), ("main", APP, 50, 8192))
    result = place(nvswitch_node(4), {}, req, Policy.SPREAD)
    assert gpus_of(result, "main") == gpus_of(result, "setup")
    assert reserved_load(result) == {next(iter(gpus_of(result, "main"))): GpuLoad(50, 8192)}


def test_an_init_container_goes_where_its_larger_app_container_fits_too() -> None:
    req = pod(("setup", INIT, 50, 1000), ("main", APP, 80, 1000))
    result = place(nvswitch_node(2), {G0: GpuLoad(40, 1000)}, req)  # binpack's first choice G0 is too small
    assert gpus_of(result, "setup") == {G1: 50}
    assert gpus_of(result, "main") == {G1: 80}


def test_two_app_containers_share_the_init_containers_slices() -> None:
    req = pod(("setup", INIT, 70, 1000), ("a", APP, 30, 2000), ("b", APP, 30, 2000))
    result = place(nvswitch_node(2), {}, req, Policy.SPREAD)
    assert gpus_of(result, "a") == gpus_of(result, "b") == {G0: 30}
    assert reserved_load(result) == {G0: GpuLoad(70, 4000)}


def test_a_larger_app_container_takes_the_init_slices_and_more_on_that_gpu() -> None:
    result = place(
        nvswitch_node(2), {}, pod(("setup", INIT, 30, 1000), ("main", APP, 50, 1000)), Policy.SPREAD
    )
    assert gpus_of(result, "main") == {G0: 50}
    assert reserved_load(result) == {G0: GpuLoad(50, 1000)}


def test_a_sidecar_keeps_its_slices_and_is_counted_with_the_app() -> None:
    req = pod(("proxy", SIDECAR, 20, 1000), ("setup", INIT, 50, 4000), ("main", APP, 50, 2000))
    result = place(nvswitch_node(1), {}, req)
    assert reserved_load(result) == {G0: GpuLoad(70, 5000)}  # memory: init 4000 + sidecar 1000 at its peak


def test_a_sidecar_after_an_init_container_reuses_its_slices_then_keeps_them() -> None:
    req = pod(("setup", INIT, 50, 4000), ("proxy", SIDECAR, 20, 1000), ("main", APP, 50, 2000))
    result = place(nvswitch_node(2), {}, req, Policy.SPREAD)
    assert gpus_of(result, "proxy") == {G0: 20}
    assert gpus_of(result, "main") == {G0: 50}  # 30 of the init slices left by the sidecar, 20 fresh
    assert reserved_load(result) == {G0: GpuLoad(70, 4000)}


def test_whole_gpu_init_and_app_fit_one_gpu() -> None:
    result = place(nvswitch_node(1), {}, pod(("setup", INIT, 100, 0), ("main", APP, 100, 0)))
    assert gpus_of(result, "main") == {G0: 100}
    assert reserved_load(result) == {G0: GpuLoad(100, 81920)}


def test_a_container_smaller_than_init_slices_on_several_gpus_is_refused() -> None:
    req = pod(("setup", INIT, 200, 0), ("main", APP, 100, 0))
    result = place_pod(nvswitch_node(4), {}, req, gpu_policy=Policy.BINPACK, node_policy=Policy.BINPACK)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.INIT_REUSE
    assert not result.resolvable
    assert "'main'" in result.detail
    assert "at random" in result.detail


def test_a_larger_whole_gpu_app_keeps_the_init_gpus_and_adds_the_best_connected() -> None:
    node = pcie_node(4)
    result = place(node, {}, pod(("setup", INIT, 200, 0), ("main", APP, 300, 0)))
    init_gpus = set(gpus_of(result, "setup"))
    assert init_gpus < set(gpus_of(result, "main"))
    assert sum(gpus_of(result, "main").values()) == 300


def test_app_only_pods_reserve_their_containers() -> None:
    req = pod(("a", APP, 30, 1000), ("b", APP, 30, 1000))
    result = place(nvswitch_node(2), {}, req)
    assert result.reserved == result.containers


def test_the_ledger_charges_what_the_pod_holds() -> None:
    req = pod(("setup", INIT, 50, 4096), ("main", APP, 50, 4096))
    result = place(nvswitch_node(1), {}, req)
    ledger = NodeLedger(NodeName("n"), nvswitch_node(1))
    ledger.hold(Holding(PodKey("p"), result.containers, 0.0, reserved=result.reserved))
    assert ledger.load == {G0: GpuLoad(50, 4096)}
    assert net_charges(req.containers, result.containers) == result.reserved


# --- property: the kubelet's reuse gives every container exactly its assignment ---------------------------


def kubelet_allocations(
    req: PodRequest, placed: tuple[ContainerAssignment, ...], load: NodeLoad, rng: random.Random
) -> tuple[dict[str, Counter[GpuUuid]], Counter[GpuUuid]]:
    """A slice-level kubelet: reusable IDs first in a random order, then the rest steered to the assignment
    (GetPreferredAllocation with the reused IDs as must-include), other pods holding the lowest slices."""
    by_name = {c.name: c for c in placed}
    allocated = {f"{g}::{n}" for g, used in load.items() for n in range(used.cores)}
    pool: set[str] = set()
    got: dict[str, Counter[GpuUuid]] = {}
    for c in req.containers:
        ids = rng.sample(sorted(pool), min(c.cores, len(pool)))
        have = Counter(i.rpartition("::")[0] for i in ids)
        for share in by_name[c.name].shares:
            free = [
                f"{share.uuid}::{n}" for n in range(CORE_PER_GPU) if f"{share.uuid}::{n}" not in allocated
            ]
            ids += free[: share.cores - have[share.uuid]]
        allocated |= set(ids)
        pool = pool | set(ids) if c.kind is INIT else pool - set(ids)
        got[c.name] = Counter(GpuUuid(i.rpartition("::")[0]) for i in ids)
    mine = Counter(GpuUuid(i.rpartition("::")[0]) for i in allocated)
    return got, mine - Counter({g: used.cores for g, used in load.items()})


containers_st = st.lists(
    st.tuples(
        st.sampled_from([INIT, INIT, SIDECAR, APP, APP]),
        st.sampled_from([10, 30, 50, 70, 100, 200]),
        st.sampled_from([1000, 20000]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    containers_st,
    st.dictionaries(st.integers(0, 3), st.sampled_from([10, 40, 100]), max_size=3),
    st.sampled_from(list(Policy)),
    st.integers(0, 2**16),
)
def test_placements_are_what_a_reusing_kubelet_hands_out(
    containers: list[tuple[ContainerKind, int, int]], taken: dict[int, int], policy: Policy, seed: int
) -> None:
    kinds = sorted(containers, key=lambda c: c[0] is APP)  # init containers and sidecars come first
    req = pod(*((f"c{i}", k, c, 0 if c % 100 == 0 else m) for i, (k, c, m) in enumerate(kinds)))
    node = nvswitch_node(4)
    load = {uuid("n", i): GpuLoad(cores, cores * 100) for i, cores in taken.items()}
    result = place_pod(node, load, req, gpu_policy=policy, node_policy=policy)
    if isinstance(result, Rejection):
        return
    got, holds = kubelet_allocations(req, result.containers, load, random.Random(seed))
    for c in result.containers:
        assert got[c.name] == Counter({s.uuid: s.cores for s in c.shares}), c.name
    reserved = reserve({}, result.reserved)
    assert {g: v.cores for g, v in reserved.items()} == {g: n for g, n in holds.items() if n}
    total = reserve(load, result.reserved)
    for g in node.gpus:
        used = total.get(g.uuid, GpuLoad())
        assert used.cores <= CORE_PER_GPU
        assert used.memory_mib <= g.memory_mib


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        pytest.param([("i", INIT, 50, 10)], {G0: GpuLoad(50, 10)}, id="init alone holds its request"),
        pytest.param(
            [("s", SIDECAR, 10, 5), ("i", INIT, 50, 10), ("a", APP, 20, 30)],
            {G0: GpuLoad(60, 35)},
            id="sidecar 10 + init 50 reused by app 20: 60 slices, memory max(5+10, 5+30)",
        ),
    ],
)
def test_held_follows_the_kubelets_phases(
    containers: list[tuple[str, ContainerKind, int, int]], expected: dict[GpuUuid, GpuLoad]
) -> None:
    req = pod(*containers)
    placed = tuple(ContainerAssignment(n, (GpuShare(G0, c, m),), c) for n, _, c, m in containers)
    assert reserve({}, net_charges(req.containers, placed)) == expected


# --- the extender's state: read back from a bound pod's signed assignment -------------------------------


def test_a_bound_pod_with_an_init_container_holds_the_larger_phase() -> None:
    deps, _ = make_deps([gpu_node("n1")])
    body = pod_obj("p", (50, 4096), uid="u1", node="n1")
    init = json.loads(json.dumps(body["spec"]["containers"][0]))
    body["spec"]["initContainers"] = [{**init, "name": "setup"}]
    g = uuid("n1", 0)
    containers = tuple(ContainerAssignment(n, (GpuShare(g, 50, 4096),), 50) for n in ("setup", "c0"))
    body["metadata"]["annotations"][NAMES.assignment] = encode_assignment(
        PodAssignment(NodeName("n1"), containers), pod_binding(body, NAMES), SIGNER
    )
    deps.state.apply_pod(body)
    ledger = deps.state.ledger("n1")
    assert ledger is not None
    assert ledger.load == {g: GpuLoad(50, 4096)}  # the sum would be 100 % and 8192 MiB
