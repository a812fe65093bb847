"""The arithmetic behind the GPU pass/fail thresholds (runs without a GPU, in `make test`)."""

import math

import pytest

from tests.gpu.shares import Burn, Verdict, failures, mean_ci95, parse_burn, t975, window_shares, window_work


def burn(start: float, end: float, per_bin: int) -> Burn:
    return Burn(start, end, {i: per_bin for i in range(math.floor(start * 10), math.floor(end * 10) + 30)})


def test_burn_output_parses_into_bins_of_kernels_by_monotonic_time():
    out = "start 100.05 end 110.05 kernels 60 iters 7\nbin 1000 20\nbin 1001 40\n"
    assert parse_burn(out) == Burn(100.05, 110.05, {1000: 20, 1001: 40})


def test_output_without_a_start_line_is_an_error_not_an_empty_run():
    with pytest.raises(ValueError, match="no start line"):
        parse_burn("CUDA error\n")


def test_the_solo_rate_counts_only_whole_bins_while_launching():
    assert burn(10.05, 20.0, 50).rate() == pytest.approx(500.0)


def test_windows_cover_only_the_time_every_process_was_launching_and_add_their_work():
    a, b = burn(10.0, 21.0, 5), burn(10.35, 21.5, 3)
    assert window_work([a, b], window_s=5.0) == [400, 400]  # [10.4, 15.4) and [15.4, 20.4)


def test_a_window_share_is_work_relative_to_the_solo_rate():
    shares = window_shares([burn(0.0, 10.0, 15)], solo_rate=500.0, window_s=5.0)
    assert shares == pytest.approx([30.0, 30.0])


def test_a_group_fails_on_one_window_more_than_5_points_off():
    good = Verdict("a", 30, (29.0, 31.0, 30.5))
    bad = Verdict("b", 30, (30.0, 35.5, 30.0))
    assert failures([good], min_windows=3) == []
    assert [p.split(":")[0] for p in failures([good, bad], min_windows=3)] == ["b"]


def test_a_group_fails_on_a_mean_error_of_2_points_even_with_every_window_inside_5():
    steady = [Verdict(f"c{i}", 50, (47.5, 47.5)) for i in range(3)]
    assert failures(steady, min_windows=2) == ["mean absolute error 2.50 points (goal < 2.0)"]


def test_a_case_with_too_few_windows_fails_rather_than_passing_on_nothing():
    assert failures([Verdict("short", 50, (50.0,))], min_windows=2)
    assert failures([Verdict("none", 50, ())], min_windows=1)


def test_the_confidence_interval_uses_students_t_rounded_to_the_safe_side():
    assert (t975(1), t975(11), t975(500)) == (12.706, 2.228, 1.96)
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(3.182 * 1.2909944 / 2)
