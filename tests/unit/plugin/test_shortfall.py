# mypy: disable-error-code="no-untyped-call"
"""``shortfall``: how many slices of the best candidate's GPUs the kubelet's offer lacks (why a preference
cannot steer: e.g. a restarted kubelet still counting a deleted pod's slices)."""

import pytest

from plugin.core.attribution import candidates, shortfall
from tests.builders.attribution import A, B, ids, pod

WHOLE_A = pod("whole", "1", [("c", 100, 1, [(A, 100)])])
SPLIT = pod("split", "2", [("c", 100, 1, [(A, 50), (B, 50)])])


@pytest.mark.parametrize(
    ("available", "must", "size", "want"),
    [
        pytest.param(ids(A, *range(100)), [], 100, {}, id="the whole GPU offered: nothing lacks"),
        pytest.param(ids(A, *range(30, 100)) + ids(B, *range(100)), [], 100, {A: 30}, id="30 withheld"),
        pytest.param(ids(A, *range(30, 100)), ids(A, *range(30)), 100, {}, id="must-include counts"),
        pytest.param(ids(B, *range(100)), [], 100, {A: 100}, id="none of its GPU offered"),
    ],
)
def test_shortfall_of_the_best_candidate(available, must, size, want):
    found = shortfall(candidates([WHOLE_A, SPLIT]), available, must, size)
    assert found is not None
    best, lacking = found
    assert best.key.pod.name == "whole"
    assert lacking == want


def test_no_candidate_of_the_size_is_no_shortfall():
    assert shortfall(candidates([WHOLE_A]), ids(A, *range(100)), [], 30) is None
