"""Shim overhead over the FAKE driver (``make bench``): time and callgrind instructions added per call.

Each figure is the shim run minus a run without the shim, same program and fake driver: the best of several
timed runs (``*_ns``) and, repeatable where timings are noisy, valgrind callgrind instruction counts
(``*_instr``: the slope between two run lengths, so start-up costs cancel).
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.shim.harness import BUILD, results, shim_env

REPEATS = 5
LAUNCHES = 2_000_000
PAIRS = 200_000
THREADS = 4


def _timed(env, args: list[str], key: str, preload: str | None) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        out = subprocess.run(
            [str(BUILD / "app_direct"), *args],
            env=env.environ(preload),
            capture_output=True,
            text=True,
            timeout=120,
        )
        rows = [w for w in results(out.stdout) if w[0] == key]
        if out.returncode != 0 or not rows:
            raise RuntimeError(f"bench program failed: {out.stdout} {out.stderr}")
        best = min(best, float(rows[-1][1]))
    return best


def _instructions(env, args: list[str], preload: str | None, tmp: Path) -> int:
    out_file = tmp / "callgrind.out"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out_file}",
            str(BUILD / "app_direct"),
            *args,
        ],
        env=env.environ(preload),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    match = re.search(r"^(?:summary|totals): (\d+)", out_file.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("no callgrind summary")
    return int(match.group(1))


def _added_instructions(env, make_args, n1: int, n2: int, tmp: Path) -> float:
    slopes = []
    for preload in (None, ""):
        low = _instructions(env, make_args(n1), preload, tmp)
        high = _instructions(env, make_args(n2), preload, tmp)
        slopes.append((high - low) / (n2 - n1))
    return slopes[0] - slopes[1]


def _launch_args(n: int) -> list[str]:
    return ["init", "ctx", "0", "bench_launch", str(n)]


def _alloc_args(live: int):
    return lambda n: ["init", "ctx", "0", "bench_alloc", str(n), str(live)]


def run() -> list[tuple[str, float, str]]:
    figures: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = shim_env(tmp, memory_mib=1 << 20)
        (tmp / "throttled").mkdir()
        throttled = shim_env(tmp / "throttled", memory_mib=1 << 20, core=50)
        base = _timed(env, _launch_args(LAUNCHES), "bench_launch", "")
        figures.append(
            (
                "shim_launch_overhead_ns",
                _timed(env, _launch_args(LAUNCHES), "bench_launch", None) - base,
                "ns",
            )
        )
        for live, name in (
            (0, "shim_alloc_free_overhead_ns"),
            (10_000, "shim_alloc_free_overhead_ns_10k_live"),
        ):
            args = ["init", "ctx", "0", "bench_alloc", str(PAIRS), str(live)]
            figures.append(
                (name, _timed(env, args, "bench_alloc", None) - _timed(env, args, "bench_alloc", ""), "ns")
            )
        # 4 threads of alloc/free over the LIFO fake (addresses reused at once): thread CPU time per pair.
        args = ["init", "ctx", "0", "bench_threads", str(THREADS), str(PAIRS // THREADS)]
        figures.append(
            (
                "shim_alloc_free_overhead_ns_4_threads",
                _timed(env, args, "bench_threads", None) - _timed(env, args, "bench_threads", ""),
                "ns",
            )
        )
        if shutil.which("valgrind"):
            # With a limit the fake's zero-length kernels are throttled by design (time is slept, not
            # spent), so the throttled hot path is reported in instructions only.
            figures.append(
                (
                    "shim_launch_overhead_instr_limit_50",
                    _added_instructions(throttled, _launch_args, 100_000, 200_000, tmp),
                    "instructions",
                )
            )
            figures.append(
                (
                    "shim_launch_overhead_instr",
                    _added_instructions(env, _launch_args, 100_000, 200_000, tmp),
                    "instructions",
                )
            )
            figures.append(
                (
                    "shim_alloc_free_overhead_instr",
                    _added_instructions(env, _alloc_args(0), 10_000, 20_000, tmp),
                    "instructions",
                )
            )
            figures.append(
                (
                    "shim_alloc_free_overhead_instr_10k_live",
                    _added_instructions(env, _alloc_args(10_000), 10_000, 20_000, tmp),
                    "instructions",
                )
            )
    return figures
