"""Which re-discoveries count as a changed MIG layout (the plugin then exits to start again on it).

Cases: the same layout is no change; an instance added or removed, a profile changed, MIG switched on or
pending a reset each is, in words naming the GPU; a GPU appearing or vanishing is left to health.
"""

import pytest

from plugin.core.mig import mig_layout_change
from tests.builders.mig import a100

BEFORE = [a100(0, "3g.20gb", "3g.20gb"), a100(1)]


def test_the_same_layout_is_no_change():
    assert mig_layout_change(BEFORE, [a100(0, "3g.20gb", "3g.20gb"), a100(1)]) is None


@pytest.mark.parametrize(
    ("after", "words"),
    [
        pytest.param(
            [a100(0, "3g.20gb"), a100(1)],
            "GPU GPU-a1000000-0000: MIG instances added none, removed 3g.20gb",
            id="an instance destroyed",
        ),
        pytest.param(
            [a100(0, "3g.20gb", "3g.20gb", "1g.5gb"), a100(1)],
            "GPU GPU-a1000000-0000: MIG instances added 1g.5gb, removed none",
            id="an instance created",
        ),
        pytest.param(
            [a100(0, "3g.20gb", "3g.20gb"), a100(1, mig_enabled=False, pending=True)],
            "GPU GPU-a1000001-0000: MIG mode off (after reset: off) -> off (after reset: on)",
            id="MIG enabled, pending a reset",
        ),
        pytest.param(
            [a100(0, mig_enabled=False, pending=False), a100(1)],
            "GPU GPU-a1000000-0000: MIG mode on (after reset: on) -> off (after reset: off); "
            "GPU GPU-a1000000-0000: MIG instances added none, removed 3g.20gb, 3g.20gb",
            id="MIG switched off",
        ),
    ],
)
def test_a_changed_layout_is_described_per_gpu(after, words):
    assert mig_layout_change(BEFORE, after) == words


def test_a_gpu_that_vanished_or_appeared_is_not_a_layout_change():
    assert mig_layout_change(BEFORE, BEFORE[:1]) is None
    assert mig_layout_change(BEFORE, [*BEFORE, a100(2)]) is None
