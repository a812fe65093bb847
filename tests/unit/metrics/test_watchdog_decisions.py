"""plugin.core.watchdog: one table of rounds and the violations each must yield; episodes; the counter's bound."""

import pytest

from plugin.core.watchdog import (
    Episodes,
    ObservedProcess,
    PodRef,
    Reason,
    Violation,
    WatchedContainer,
    advance,
    describe,
    find_violations,
)
from plugin.metrics.sources import ViolationTally
from vcuda.model import GpuUuid

MIB = 1 << 20
GIB = 1 << 30
OVERHEAD = 512 * MIB
G0, G1 = GpuUuid("GPU-0"), GpuUuid("GPU-1")
POD = PodRef("team", "train", "uid-1")
OTHER = PodRef("team", "web", "uid-9")
TRAIN = WatchedContainer("uid-1_main", POD, "main", {G0: 4 * GIB}, {G0: 3 * GIB})


def mine(pid: int, used: int, gpu: GpuUuid = G0, in_shim: bool = True) -> ObservedProcess:
    return ObservedProcess(gpu, pid, used, POD, "uid-1_main", in_shim, "main")


CASES = [
    ("within the limit plus one context overhead", [mine(1, 4 * GIB + OVERHEAD)], []),
    ("past it by one byte", [mine(1, 4 * GIB + OVERHEAD + 1)], [(Reason.OVER_LIMIT, G0, "uid-1", (1,))]),
    ("two processes: two overheads", [mine(1, 3 * GIB), mine(2, GIB + 2 * OVERHEAD)], []),
    (
        "two processes past two overheads",
        [mine(1, 3 * GIB), mine(2, GIB + 2 * OVERHEAD + 1)],
        [(Reason.OVER_LIMIT, G0, "uid-1", (1, 2))],
    ),
    ("a process the shim does not know", [mine(3, MIB, in_shim=False)], [(Reason.OUTSIDE_SHIM, G0, "uid-1", (3,))]),
    ("a GPU the container was not given", [mine(1, MIB, gpu=G1)], [(Reason.WRONG_GPU, G1, "uid-1", (1,))]),
    (
        "a kube-vgpu pod's process no container took",
        [ObservedProcess(G0, 4, MIB, POD)],
        [(Reason.OUTSIDE_SHIM, G0, "uid-1", (4,))],
    ),
    ("another pod", [ObservedProcess(G1, 5, MIB, OTHER, container="c")], [(Reason.UNMANAGED, G1, "uid-9", (5,))]),
    ("host processes, grouped per GPU", [ObservedProcess(G0, 6, 1), ObservedProcess(G0, 7, 1)], [
        (Reason.UNMANAGED, G0, "", (6, 7))
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "processes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_find_violations(
    case: str, processes: list[ObservedProcess], expected: list[tuple[object, ...]]
) -> None:
    found = find_violations([TRAIN], processes, overhead_bytes=OVERHEAD)
    assert [(v.reason, v.gpu, v.pod.uid if v.pod else "", v.pids) for v in found] == expected


def test_over_limit_carries_the_shim_report_and_the_message_says_what_was_seen() -> None:
    (v,) = find_violations([TRAIN], [mine(1, 5 * GIB)], overhead_bytes=OVERHEAD)
    assert (v.nvml_bytes, v.shim_bytes, v.limit_bytes) == (5 * GIB, 3 * GIB, 4 * GIB)
    assert describe(v, OVERHEAD) == (
        "NVML reports 5120 MiB for PID 1 on GPU GPU-0, over the limit of 4096 MiB plus 512 MiB context "
        "overhead per process (4608 MiB); the shim reports 3072 MiB"
    )


def test_a_violation_is_reported_on_its_second_round_once_per_episode() -> None:
    v = Violation(Reason.OVER_LIMIT, G0, POD, "main", (1,), 5 * GIB)
    state, report = advance(Episodes(), [v])
    assert report == []
    state, report = advance(state, [v])
    assert report == [v]
    state, report = advance(state, [v])
    assert report == []
    state, _ = advance(state, [])  # cleared
    state, report = advance(state, [v])
    assert report == []
    _, report = advance(state, [v])
    assert report == [v]


def test_the_counter_keeps_a_bounded_number_of_series() -> None:
    tally = ViolationTally(max_series=2)
    for pod in ("a", "b", "c", "d"):
        tally.record("ns", pod, "main", "over_limit")
    tally.record("ns", "a", "main", "over_limit")
    assert tally.violation_counts() == {
        ("ns", "a", "main", "over_limit"): 2,
        ("ns", "b", "main", "over_limit"): 1,
        ("", "", "", "over_limit"): 2,
    }
