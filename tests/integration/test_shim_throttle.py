"""Compute limit: the controller's decisions against a simulated clock, then end to end over the FAKE driver.

Simulated (exact, deterministic; tests/shim/throttle_sim.c drives vcuda/shim/throttle.c): targets 10..90 %
x (many tiny kernels, few large kernels, one large kernel + synchronize, CPU-bound tiny kernels), soft limit
with an idle GPU and with a neighbour; each within 5 points over a 5 s window. Co-located: two tenants with
targets t and 100 - t on one simulated time-sliced GPU, sharing the node file, each within 5 points; without
the node file (the previous controller) they are charged for each other's slices and fall short.
End to end (wall clock, loose bounds: these check behaviour, not timing): the fake driver's virtual GPU is
kept busy about 30 % at a 30 % hard limit and fully without a limit; a soft limit uses the ceiling only when
NVML shows no other process on the GPU; launches and throttled time reach the usage file.
"""

import functools
import subprocess

import pytest

from tests.shim.harness import BUILD, FAKE_GPU_UUID, read_until, results, run_app, shim_env, start_app
from vcuda.shimfile import NODE_FILE, NODE_MAGIC, NODE_VERSION

KERNEL_NS = 200_000


@functools.cache
def _simulator_output() -> str:
    out = subprocess.run(
        [str(BUILD / "throttle_sim")], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def _simulated_shares(kind: str = "share") -> list[tuple[str, int, float]]:
    return [(w[1], int(w[2]), float(w[3])) for w in results(_simulator_output()) if w[0] == kind]


def test_the_controller_holds_every_target_within_5_points_in_simulation():
    shares = _simulated_shares()
    assert len(shares) == 22
    misses = [(name, target, got) for name, target, got in shares if abs(got - target) > 5]
    assert misses == []


def test_two_colocated_tenants_each_hold_their_target_within_5_points_with_the_node_file():
    shares = _simulated_shares("colo")
    assert len(shares) == 20
    misses = [(name, target, got) for name, target, got in shares if abs(got - target) > 5]
    assert misses == []


def test_without_the_node_file_colocated_tenants_are_charged_for_each_others_slices():
    shares = _simulated_shares("colo_nonode")
    assert len(shares) == 20
    assert all(got < target - 2 for _, target, got in shares)


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


def test_a_lone_tenant_with_the_node_file_publishes_its_spans_and_keeps_its_share(tmp_path):
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    assert 15 <= _busy_share(tmp_path, core=30, VCUDA_NODE_DIR=str(node_dir)) <= 45
    node = NODE_FILE.unpack((node_dir / f"{FAKE_GPU_UUID}.bin").read_bytes())
    assert (node["magic"], node["version"], node["size"]) == (NODE_MAGIC, NODE_VERSION, NODE_FILE.size)
    claimed = [s for s in node["slots"] if s["owner"] != 0]
    assert len(claimed) == 1
    assert claimed[0]["span_count"] > 0


def test_two_tenants_started_together_claim_distinct_node_slots_and_publish_spans(tmp_path):
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        env = shim_env(
            tmp_path / name,
            memory_mib=64,
            core=30,
            FAKE_CUDA_KERNEL_NS=str(KERNEL_NS),
            VCUDA_NODE_DIR=str(node_dir),
        )
        argv = [str(BUILD / "app_direct"), "init", "ctx", "0", "run", "0.5"]
        procs.append(subprocess.Popen(argv, env=env.environ(), stdout=subprocess.DEVNULL))
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    node = NODE_FILE.unpack((node_dir / f"{FAKE_GPU_UUID}.bin").read_bytes())
    claimed = [s for s in node["slots"] if s["owner"] != 0]
    assert len({s["owner"] for s in claimed}) == len(claimed) == 2
    assert all(s["span_count"] > 0 for s in claimed)
