# mypy: disable-error-code="no-untyped-call"
"""Attribution decisions: which candidate a kubelet call is for, and the PreStart verdict.

Cases: ranking (in-progress pod, pod known to the kubelet, oldest), preferred IDs (lowest slice numbers,
must-include honoured, fallback), exact GPU-split matching, ambiguity, verification outcomes.
"""

import pytest

from plugin.core.attribution import (
    ContainerKey,
    attribute,
    candidates,
    interchangeable,
    prefer,
)
from plugin.core.errors import AllocationError, AttributionMismatchError
from plugin.core.verify import Outcome, verify
from tests.builders.attribution import A, B, ids, pod
from vcuda.model import (
    Constraints,
)


def test_oldest_pod_ranks_first():
    ranked = candidates(
        [pod("new", "2", [("c", 30, 1, [(A, 30)])]), pod("old", "1", [("c", 30, 1, [(A, 30)])])]
    )
    assert [c.key.pod.name for c in ranked] == ["old", "new"]


def test_a_pod_part_way_through_admission_ranks_before_older_pods():
    ranked = candidates(
        [
            pod("old", "1", [("c", 30, 1, [(A, 30)])]),
            pod("half", "2", [("x", 10, 1, [(A, 10)]), ("y", 30, 1, [(B, 30)])], allocated={"x"}),
        ]
    )
    assert [(c.key.pod.name, c.key.container) for c in ranked] == [("half", "y"), ("old", "c")]


def test_a_pod_the_kubelet_is_admitting_ranks_before_older_pods():
    old, new = pod("old", "1", [("c", 30, 1, [(A, 30)])]), pod("new", "2", [("c", 30, 1, [(A, 30)])])
    ranked = candidates([old, new], admitting=frozenset({new.key}))
    assert ranked[0].key.pod.name == "new"


@pytest.mark.parametrize(
    ("available", "must", "size", "want"),
    [
        pytest.param(
            ids(A, 5, 1, 2, 0) + ids(B, 0, 1), [], 2, ids(B, 0, 1), id="the candidate's GPU, lowest numbers"
        ),
        pytest.param(
            ids(A, 0, 1) + ids(B, 3, 4, 5), ids(B, 5), 2, [*ids(B, 5), *ids(B, 3)], id="must-include kept"
        ),
        pytest.param(ids(A, 0, 1, 2), [], 2, ids(A, 0, 1), id="no candidate fits: a plain pick"),
    ],
)
def test_preferred_ids(available, must, size, want):
    ranked = candidates([pod("p", "1", [("c", 2, 1, [(B, 2)])])])
    assert prefer(ranked, available, must, size) == want


def test_attribute_needs_the_exact_gpu_split():
    ranked = candidates([pod("p", "1", [("c", 200, 0, [(A, 100), (B, 100)])])])
    found, ambiguous = attribute(ranked, ids(A, *range(100)) + ids(B, *range(100)))
    assert found.key.pod.name == "p"
    assert not ambiguous
    with pytest.raises(AllocationError):
        attribute(ranked, ids(A, *range(100)) + ids(A, *range(100, 100)))


def test_attribute_reports_ambiguity_between_non_interchangeable_matches():
    ranked = candidates([pod("a", "1", [("c", 2, 100, [(A, 2)])]), pod("b", "2", [("c", 2, 999, [(A, 2)])])])
    found, ambiguous = attribute(ranked, ids(A, 7, 8))
    assert found.key.pod.name == "a"
    assert ambiguous


def test_interchangeable_needs_identical_request_constraints_and_limit():
    base = candidates([pod("a", "1", [("c", 30, 100, [(A, 30)])])])[0]
    same = candidates([pod("b", "1", [("c", 30, 100, [(B, 30)])])])[0]
    other_mem = candidates([pod("b", "1", [("c", 30, 101, [(B, 30)])])])[0]
    other_sel = candidates(
        [
            pod(
                "b",
                "1",
                [("c", 30, 100, [(B, 30)])],
                constraints=Constraints(include_models=frozenset({"h100"})),
            )
        ]
    )[0]
    assert interchangeable(base, same)
    assert not interchangeable(base, other_mem)
    assert not interchangeable(base, other_sel)


def test_verify_outcomes():
    a = candidates([pod("a", "1", [("c", 30, 100, [(A, 30)])])])[0]
    b = candidates([pod("b", "1", [("c", 30, 100, [(B, 30)])])])[0]
    c = candidates([pod("c", "1", [("c", 30, 555, [(B, 30)])])])[0]
    held = ids(A, *range(30))
    assert verify(a, a.key, a, held).outcome is Outcome.CONFIRMED
    assert verify(a, b.key, b, held).outcome is Outcome.SWAPPED
    with pytest.raises(AttributionMismatchError, match=r"^kube-vgpu attribution mismatch:"):
        verify(a, c.key, c, held)
    with pytest.raises(AttributionMismatchError):
        verify(a, None, None, held)
    assert verify(a, ContainerKey(a.key.pod, "c"), a, held).owner == a.key
