"""Pure arithmetic of the GPU acceptance tests: compute shares per window, verdicts, confidence intervals.

`shim_gpu burn` prints, per 0.1 s bin of CLOCK_MONOTONIC, how many kernels finished on the GPU (from CUDA
event timestamps, so a deep launch queue does not blur the windows). A tenant's share in a window is its
work there relative to the same kernels alone on the GPU without the shim, in percent.
"""

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

BIN_S = 0.1
WINDOW_TOLERANCE = 5.0  # points: every window of every case
MEAN_TOLERANCE = 2.0  # points: mean absolute error of a group of cases


@dataclass(frozen=True, slots=True)
class Burn:
    """One `shim_gpu burn` run: launching from `start` to `end` (CLOCK_MONOTONIC s); kernels done per bin."""

    start: float
    end: float
    bins: Mapping[int, int]

    def rate(self) -> float:
        """Kernels per second over the whole bins inside [start, end] (the solo reference)."""
        first, last = math.ceil(self.start / BIN_S), math.floor(self.end / BIN_S)
        done = sum(n for i, n in self.bins.items() if first <= i < last)
        return done / ((last - first) * BIN_S)


def parse_burn(stdout: str) -> Burn:
    start = end = math.nan
    bins: dict[int, int] = {}
    for line in stdout.splitlines():
        words = line.split()
        if words[:1] == ["start"]:
            fields = dict(zip(words[::2], words[1::2], strict=False))
            start, end = float(fields["start"]), float(fields["end"])
        elif words[:1] == ["bin"]:
            bins[int(words[1])] = bins.get(int(words[1]), 0) + int(words[2])
    if math.isnan(start):
        raise ValueError(f"no start line in burn output: {stdout[:200]!r}")
    return Burn(start, end, bins)


def window_work(burns: Sequence[Burn], *, window_s: float) -> list[int]:
    """Kernels finished by all `burns` together in each whole window while every one of them was launching."""
    per_window = round(window_s / BIN_S)
    first = math.ceil(max(b.start for b in burns) / BIN_S)
    count = (math.floor(min(b.end for b in burns) / BIN_S) - first) // per_window
    return [
        sum(
            b.bins.get(i, 0)
            for b in burns
            for i in range(first + w * per_window, first + (w + 1) * per_window)
        )
        for w in range(count)
    ]


def window_shares(burns: Sequence[Burn], *, solo_rate: float, window_s: float) -> list[float]:
    return [100.0 * work / (solo_rate * window_s) for work in window_work(burns, window_s=window_s)]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One tenant (or one container's processes together) in one case: its target and its window shares."""

    case: str
    target: float
    windows: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.windows) if self.windows else math.nan

    @property
    def error(self) -> float:
        return abs(self.mean - self.target)

    @property
    def worst(self) -> float:
        return max((abs(w - self.target) for w in self.windows), default=math.inf)


def failures(verdicts: Iterable[Verdict], *, min_windows: int) -> list[str]:
    """Why a group of cases misses the goal: a window off by more than 5 points, a mean error of 2 or more."""
    verdicts = list(verdicts)
    problems = [
        f"{v.case}: target {v.target:g}, windows {[round(w, 1) for w in v.windows]}"
        for v in verdicts
        if len(v.windows) < min_windows or v.worst > WINDOW_TOLERANCE
    ]
    mae = mean_error(verdicts)
    if not mae < MEAN_TOLERANCE:
        problems.append(f"mean absolute error {mae:.2f} points (goal < {MEAN_TOLERANCE})")
    return problems


def mean_error(verdicts: Sequence[Verdict]) -> float:
    return statistics.fmean(v.error for v in verdicts) if verdicts else math.nan


# Two-sided 95 % quantiles of Student's t by degrees of freedom; the normal quantile past the table.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
_T975 |= {10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("needs at least two samples")
    return _T975[max(k for k in _T975 if k <= df)] if df <= 120 else 1.960


def mean_ci95(samples: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (Student's t, rounded up between table rows)."""
    half = t975(len(samples) - 1) * statistics.stdev(samples) / math.sqrt(len(samples))
    return statistics.fmean(samples), half
