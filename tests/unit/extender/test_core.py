"""The extender's own pure core: the summary's fast answer agrees with place_pod, the in-flight rule, and the
ledger's load, summary and expiry.

Cases: quick_fit == place_pod (fit, score, reason, sentence) over random nodes, loads and single fractional
requests under both node policies; quick_fit declines (None) multi-container, exclusive and selective pods;
identical in-flight pods never conflict, differently assigned ones with the same core count do, the GPU UUID
never matters; a ledger's load is the sum of its holdings; expiry settles bound holdings and drops unbound ones;
the summary index shares one object among nodes with equal summaries, lists only nodes with nothing in flight
and healthy GPUs, and forgets a summary no node holds any more.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extender.core.inflight import find_conflict, signature
from extender.core.ledger import Holding, NodeLedger, PodKey, expire
from extender.core.load import GpuLoad
from extender.core.placement import Placement, Rejection, place_pod
from extender.core.summary import QuickFit, SummaryIndex, quick_fit, summarise
from tests.builders.vcuda import gpu, nvswitch_node, request, uuid
from vcuda.model import Constraints, ContainerAssignment, GpuShare, GpuUuid, NodeInventory, NodeName, Policy

gpus = st.builds(
    lambda i, mib, healthy: gpu(i, memory_mib=mib, healthy=healthy),
    st.integers(0, 7),
    st.sampled_from([16384, 24576, 81920]),
    st.booleans(),
)
nodes = st.lists(gpus, min_size=1, max_size=8, unique_by=lambda g: g.uuid).map(
    lambda gs: NodeInventory(tuple(gs))
)


@st.composite
def loaded_nodes(draw: st.DrawFn) -> tuple[NodeInventory, dict[GpuUuid, GpuLoad]]:
    node = draw(nodes)
    load = {}
    for g in node.gpus:
        if draw(st.booleans()):
            load[g.uuid] = GpuLoad(draw(st.integers(0, 100)), draw(st.integers(0, g.memory_mib)))
    return node, load


@given(loaded_nodes(), st.integers(1, 99), st.integers(1, 90000), st.sampled_from(Policy))
def test_quick_fit_gives_exactly_what_place_pod_gives(loaded, cores, mib, policy):
    node, load = loaded
    req = request((cores, mib))
    quick = quick_fit(summarise(node, load), req, policy)
    full = place_pod(node, load, req, gpu_policy=Policy.BINPACK, node_policy=policy)
    if quick is None:
        assert not any(g.healthy for g in node.gpus)
    elif isinstance(quick, QuickFit):
        assert isinstance(full, Placement)
        assert quick.score == full.score
    else:
        assert quick == full


@pytest.mark.parametrize(
    "req",
    [
        pytest.param(request((30, 4096), (30, 4096)), id="two containers -> place_pod"),
        pytest.param(request((100, 0)), id="a whole GPU -> place_pod"),
        pytest.param(
            request((30, 4096), constraints=Constraints(include_models=frozenset({"h100"}))),
            id="a model selection -> place_pod",
        ),
    ],
)
def test_quick_fit_declines_pods_it_cannot_answer_exactly(req):
    assert quick_fit(summarise(nvswitch_node(2), {}), req, Policy.BINPACK) is None


def share(
    name: str, cores: int, mib: int, gpu_index: int = 0, limit: int | None = None
) -> ContainerAssignment:
    return ContainerAssignment(name, (GpuShare(uuid("n", gpu_index), cores, mib),), limit or cores)


@pytest.mark.parametrize(
    ("in_flight", "candidate", "conflicts"),
    [
        pytest.param(
            [share("a", 30, 4096, 0)], [share("b", 30, 4096, 1)], False, id="identical pods bind in parallel"
        ),
        pytest.param(
            [share("a", 30, 4096)], [share("b", 30, 8192)], True, id="same cores, other memory -> wait"
        ),
        pytest.param(
            [share("a", 30, 4096)],
            [share("b", 30, 4096, limit=60)],
            True,
            id="same cores, other limit -> wait",
        ),
        pytest.param(
            [share("a", 30, 4096)], [share("b", 40, 8192)], False, id="other core count -> told apart"
        ),
        pytest.param([], [share("b", 30, 4096)], False, id="nothing in flight"),
    ],
)
def test_the_in_flight_rule(in_flight, candidate, conflicts):
    found = find_conflict([signature(c) for c in in_flight], candidate)
    assert (found is not None) == conflicts
    if found:
        assert "vcuda-core 30" in found.detail


def test_a_ledger_load_is_the_sum_of_its_holdings_and_drop_gives_it_back():
    ledger = NodeLedger(NodeName("n"), nvswitch_node(2))
    ledger.hold(Holding(PodKey("p1"), (share("c", 30, 4096),), since=0))
    ledger.hold(Holding(PodKey("p2"), (share("c", 20, 1024),), since=0))
    assert ledger.load == {uuid("n", 0): GpuLoad(50, 5120)}
    assert ledger.summary.max_free_cores == 100
    assert len(ledger.in_flight) == 2
    ledger.drop(PodKey("p1"))
    ledger.drop(PodKey("p2"))
    assert ledger.load == {}


def test_expiry_settles_bound_holdings_and_drops_reservations_never_bound():
    ledger = NodeLedger(NodeName("n"), nvswitch_node(2))
    ledger.hold(Holding(PodKey("bound"), (share("c", 30, 4096),), since=0, bound=True))
    ledger.hold(Holding(PodKey("stuck"), (share("c", 20, 1024, 1),), since=0))
    ledger.hold(Holding(PodKey("young"), (share("c", 10, 1024, 1),), since=95))
    done = expire(ledger, now=100, grace_s=10)
    assert (done.settled, done.dropped) == (1, 1)
    assert ledger.get(PodKey("stuck")) is None
    bound = ledger.get(PodKey("bound"))
    assert bound is not None
    assert bound.settled
    assert ledger.load[uuid("n", 0)] == GpuLoad(30, 4096)
    assert len(ledger.in_flight) == 1


def test_an_unknown_rejection_type_is_still_a_rejection():
    assert isinstance(
        quick_fit(
            summarise(nvswitch_node(1), {uuid("n", 0): GpuLoad(100, 0)}), request((30, 4096)), Policy.BINPACK
        ),
        Rejection,
    )


def holding_on(node: str, *, settled: bool) -> Holding:
    shares = (GpuShare(uuid(node, 0), 30, 4096),)
    return Holding(PodKey("p"), (ContainerAssignment("c0", shares, 30),), since=0, settled=settled)


def indexed_ledgers(index: SummaryIndex, *names: str, gpus: int = 2) -> list[NodeLedger]:
    return [NodeLedger(NodeName(n), nvswitch_node(gpus, node=n), index=index) for n in names]


def test_nodes_with_equal_summaries_share_one_summary_object_in_the_index():
    index = SummaryIndex()
    a, b, c = indexed_ledgers(index, "a", "b", "c")
    assert a.summary is b.summary is c.summary
    assert index.quick == {"a": a.summary, "b": a.summary, "c": a.summary}
    assert index.shared_count() == 1
    c.hold(holding_on("c", settled=True))
    assert c.summary is not a.summary
    assert index.quick["c"] is c.summary
    assert index.shared_count() == 2


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        pytest.param(lambda ledger: None, True, id="idle"),
        pytest.param(
            lambda ledger: ledger.hold(holding_on("n", settled=False)),
            False,
            id="a pod in flight",
        ),
        pytest.param(lambda ledger: ledger.set_inventory(None), False, id="no inventory"),
        pytest.param(
            lambda ledger: ledger.set_inventory(NodeInventory((gpu(0, node="n", healthy=False),))),
            False,
            id="no healthy GPU",
        ),
    ],
)
def test_the_index_lists_only_nodes_the_summary_answers_for(change, listed):
    index = SummaryIndex()
    (ledger,) = indexed_ledgers(index, "n")
    change(ledger)
    assert ("n" in index.quick) == listed


def test_a_summary_no_node_holds_is_forgotten_and_a_detached_node_leaves_the_index():
    index = SummaryIndex()
    a, b = indexed_ledgers(index, "a", "b")
    a.hold(holding_on("a", settled=True))
    a.drop(PodKey("p"))
    assert index.shared_count() == 1
    a.detach()
    b.detach()
    assert index.quick == {}
    assert index.shared_count() == 0
