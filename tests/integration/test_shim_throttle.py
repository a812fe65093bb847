"""Compute limit: the controller's decisions against a simulated clock, then end to end over the FAKE driver.

Simulated (deterministic; tests/shim/throttle_sim.c runs the shipped vcuda/shim/throttle.c, the bucket AND the
checkpoint ring compute.c drives, against a simulated time-sliced GPU): 10..90 % alone with 50 us..50 ms
kernels, one 200 ms kernel + synchronize, two and four co-located tenants, 2..4 processes in one container and
a mixed case; every container within 5 points of its target in each 5 s window (the first one includes the
start-up burst), mean error under 2 points; idle spells buy a bounded burst, and pauses are not charged.
End to end (wall clock, loose bounds: these check behaviour, not timing): the fake driver's virtual GPU is
kept busy about 30 % at a 30 % hard limit and fully without a limit; a soft limit uses the ceiling only when
NVML shows no other process on the GPU; launches and throttled time reach the usage file; the container's
record file holds its budget and its processes' spans.
"""

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.shim.harness import BUILD, FAKE_GPU_UUID, read_until, results, run_app, shim_env, start_app
from vcuda.shimfile import NODE_FILE, NODE_MAGIC, NODE_TENANTS_DIR, NODE_VERSION

KERNEL_NS = 200_000
SCENARIOS = 36 + 3 + 4 + 20 + 8 + 6 + 2  # lines printed by throttle_sim (one per container and scenario)


@functools.cache
def _simulator_output() -> str:
    out = subprocess.run(
        [str(BUILD / "throttle_sim")], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def _simulated() -> list[tuple[str, int, list[float]]]:
    return [(w[1], int(w[3]), [float(w[4]), float(w[5])]) for w in results(_simulator_output())]


def test_the_simulation_covers_every_case_of_the_goal():
    names = {name for name, _, _ in _simulated()}
    assert len(_simulated()) == SCENARIOS
    assert {"alone_50us", "alone_50000us", "two_tenants_50us", "four_tenants_mixed"} <= names
    assert {f"one_container_{n}_procs_20ms" for n in (2, 3, 4)} <= names


def _steady() -> list[tuple[str, int, list[float]]]:
    return [case for case in _simulated() if not case[0].startswith("half_idle_")]


def test_every_container_is_within_5_points_in_every_5_s_window_in_simulation():
    misses = [(n, t, w) for n, t, w in _steady() if any(abs(x - t) > 5 for x in w)]
    assert misses == []


def test_the_mean_error_is_under_2_points_in_simulation():
    errors = [abs(x - t) for _, t, w in _steady() for x in w]
    assert sum(errors) / len(errors) < 2


def test_an_idle_spell_buys_at_most_the_savings_cap_and_one_kernel():
    """Busy (then synchronizing) half of every second at a 20 % limit: half the limit is used in the busy
    halves, plus at most 20 ms of savings and one kernel per spell, never a pause charged as work."""
    for name, limit, windows in _simulated():
        if name.startswith("half_idle_"):
            kernel_ms = int(name.removeprefix("half_idle_").removesuffix("us")) / 1000
            ceiling = limit / 2 + (20 + kernel_ms) / 10  # per 1 s period, in percent
            assert all(limit / 2 - 1 <= x <= ceiling + 0.5 for x in windows), (name, windows)


def test_large_kernels_at_a_small_share_hold_it_from_the_first_window():
    """The start-up and post-idle bursts are bounded whatever the kernel size (16.8 % was measured at 10 %
    with 20 ms kernels on an H100 with the previous controller)."""
    first = {n: w[0] for n, t, w in _simulated() if t == 10 and n.startswith("alone_")}
    assert all(abs(x - 10) <= 2.5 for x in first.values()), first


def _busy_share(tmp_path, *, core: int, soft: int | None = None, neighbours: int = 0, **extra: str) -> float:
    env = shim_env(
        tmp_path,
        memory_mib=64,
        core=core,
        soft=soft,
        FAKE_CUDA_KERNEL_NS=str(KERNEL_NS),
        FAKE_NVML_PROCS=str(neighbours),
        **extra,
    )
    out = run_app(env, ["init", "ctx", "0", "run", "1.0"])
    (run,) = (w for w in results(out.stdout) if w[0] == "run")
    return 100.0 * int(run[1]) * KERNEL_NS / 1e9 / float(run[2])


@pytest.mark.parametrize(
    ("core", "soft", "neighbours", "low", "high"),
    [
        pytest.param(30, None, 0, 15, 45, id="hard 30 % -> about 30 %"),
        pytest.param(100, None, 0, 80, 101, id="no limit -> the whole virtual GPU"),
        pytest.param(20, 60, 0, 40, 75, id="soft 20..60 % alone on the GPU -> about 60 %"),
        pytest.param(20, 60, 3, 8, 32, id="soft 20..60 % with neighbours -> about 20 %"),
    ],
)
def test_the_fake_gpu_is_kept_busy_about_the_allowed_share(tmp_path, core, soft, neighbours, low, high):
    assert low <= _busy_share(tmp_path, core=core, soft=soft, neighbours=neighbours) <= high


def test_launches_and_throttled_time_reach_the_usage_file(tmp_path):
    env = shim_env(tmp_path, memory_mib=64, core=10, FAKE_CUDA_KERNEL_NS=str(KERNEL_NS))
    with start_app(env, ["init", "ctx", "0", "run", "0.3", "launch", "100", "pause"]) as proc:
        read_until(proc, "paused")
        (me,) = env.processes()
    assert me.gpus[0].launches > 0
    assert me.gpus[0].throttled_ns > 100_000_000
    assert me.gpus[0].busy_ns > 0


def _record(node_dir: Path, name: str = "uid-1_main") -> dict[str, Any]:
    return NODE_FILE.unpack((node_dir / NODE_TENANTS_DIR / name / f"{FAKE_GPU_UUID}.bin").read_bytes())


def test_a_lone_tenant_publishes_its_spans_in_its_own_record_and_keeps_its_share(tmp_path):
    node_dir = tmp_path / "node"
    (node_dir / NODE_TENANTS_DIR / "uid-1_main").mkdir(parents=True)
    assert 15 <= _busy_share(tmp_path, core=30, VCUDA_NODE_DIR=str(node_dir)) <= 45
    node = _record(node_dir)
    assert (node["magic"], node["version"], node["size"]) == (NODE_MAGIC, NODE_VERSION, NODE_FILE.size)
    claimed = [s for s in node["slots"] if s["owner"] != 0]
    assert len(claimed) == 1
    assert claimed[0]["span_count"] > 0


def test_two_processes_of_a_container_claim_distinct_slots_of_its_record(tmp_path):
    node_dir = tmp_path / "node"
    (node_dir / NODE_TENANTS_DIR / "uid-1_main").mkdir(parents=True)
    env = shim_env(
        tmp_path, memory_mib=64, core=30, FAKE_CUDA_KERNEL_NS=str(KERNEL_NS), VCUDA_NODE_DIR=str(node_dir)
    )
    argv = [str(BUILD / "app_direct"), "init", "ctx", "0", "run", "0.5"]
    procs = [subprocess.Popen(argv, env=env.environ(), stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    claimed = [s for s in _record(node_dir)["slots"] if s["owner"] != 0]
    assert len({s["owner"] for s in claimed}) == len(claimed) == 2
    assert len({s["pid"] for s in claimed}) == 2
    assert all(s["span_count"] > 0 for s in claimed)
