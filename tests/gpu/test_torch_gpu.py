"""PyTorch under the shim on a real GPU: CUDA graphs under a limit, one budget per container, overhead.

Needs a Python with torch and CUDA (``GPU_PYTHON``, else this one, else python3); skipped otherwise.
"""

import subprocess
import time

import pytest

from tests.gpu import rig
from tests.gpu.rig import BURN_S, WINDOW_S, WINDOWS, Metric
from tests.gpu.shares import Verdict, failures, mean_ci95, parse_burn, window_shares

pytestmark = pytest.mark.gpu

# A model captured into one CUDA graph (as torch.compile's reduce-overhead mode and vLLM do), replayed.
GRAPH_MODEL = """
import sys, time, torch
torch.manual_seed(0)
layers = [torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.GELU()) for _ in range(12)]
m = torch.nn.Sequential(*layers).cuda().eval()
x, x2 = torch.randn(64, 1024, device="cuda"), torch.randn(64, 1024, device="cuda")
with torch.no_grad():
    expected = m(x2).clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            m(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = m(x)
x.copy_(x2)
graph.replay()
torch.cuda.synchronize()
error = (out - expected).abs().max().item()
n, t0 = 0, time.perf_counter()
while time.perf_counter() < t0 + float(sys.argv[1]):
    for _ in range(10):
        graph.replay()
    n += 10
torch.cuda.synchronize()
print("replays", n, "elapsed", time.perf_counter() - t0, "max_abs_error", error)
"""

# Fixed-work matrix products; the same "start/end/bin" output as `shim_gpu burn`, from CUDA event times.
TORCH_BURN = """
import math, sys, time, torch
a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
b = torch.randn_like(a)
for _ in range(5):
    a @ b
start = torch.cuda.Event(enable_timing=True)
start.record()
start.synchronize()
t0, events = time.monotonic(), []
while time.monotonic() < t0 + float(sys.argv[1]):
    for _ in range(8):
        a @ b
    events.append(torch.cuda.Event(enable_timing=True))
    events[-1].record()
torch.cuda.synchronize()
bins = {}
for e in events:
    i = math.floor((t0 + start.elapsed_time(e) / 1000) * 10)
    bins[i] = bins.get(i, 0) + 8
print(f"start {t0:.6f} end {t0 + float(sys.argv[1]):.6f}")
for i, n in sorted(bins.items()):
    print("bin", i, n)
"""

# A launch-bound training step (32 small layers, per-parameter optimizer kernels); times blocks on request.
LAUNCH_HEAVY_STEP = """
import sys, time, torch
torch.manual_seed(0)
m = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(32)]).cuda()
opt = torch.optim.SGD(m.parameters(), lr=1e-4, foreach=False)
x = torch.randn(64, 256, device="cuda")
def step():
    opt.zero_grad(set_to_none=True)
    m(x).square().mean().backward()
    opt.step()
for _ in range(200):
    step()
torch.cuda.synchronize()
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    for _ in range(int(line)):
        step()
    torch.cuda.synchronize()
    print(time.perf_counter() - t, flush=True)
"""
OVERHEAD_GOAL_PCT = 2.0  # upper end of the 95 % interval
INTERVAL_GOAL_PCT = 0.5  # half-width of the 95 % interval
STEPS_PER_BLOCK = 20


@pytest.fixture(scope="module")
def python() -> str:
    found = rig.torch_python()
    if found is None:
        pytest.skip("needs a Python with torch and CUDA (GPU_PYTHON)")
    return found


def replay_rate(command: tuple[list[str], dict[str, str]], seconds: float) -> tuple[float, float]:
    out = rig.fields(rig.run(*command, timeout=seconds + 300))
    return int(out["replays"]) / float(out["elapsed"]), float(out["max_abs_error"])


@pytest.mark.timeout(600)
def test_a_cuda_graph_captured_pytorch_model_runs_correctly_under_a_30_percent_limit(
    python, tools, gpu, metric: Metric, tmp_path
):
    seconds = WINDOWS * WINDOW_S
    args = [python, "-c", GRAPH_MODEL, str(seconds)]
    solo_rate, solo_error = replay_rate((args, rig.bare_environ()), seconds)
    box = rig.make_container(tmp_path, "graph", gpu, core=30)
    rate, error = replay_rate(box.launch(tools, args), seconds)
    share = 100 * rate / solo_rate
    metric("gpu_torch_graph_share_target_30", share, "%")
    metric("gpu_torch_graph_max_abs_error", error, "")
    assert error <= max(1e-4, 2 * solo_error), "graph replay under the shim computed a different result"
    assert abs(share - 30) <= 5


@pytest.mark.timeout(600)
def test_two_pytorch_processes_in_one_container_share_one_budget(
    python, tools, gpu, metric: Metric, tmp_path
):
    solo_out = rig.run([python, "-c", TORCH_BURN, str(WINDOW_S + 1)], rig.bare_environ(), timeout=300)
    solo_rate = parse_burn(solo_out).rate()
    box = rig.make_container(tmp_path, "pair", gpu, core=40)
    args = [python, "-c", TORCH_BURN, str(BURN_S)]
    burns = rig.burn_together([box.launch(tools, args) for _ in range(2)], seconds=BURN_S + 60)
    verdict = Verdict(
        "torch_two_processes_target_40",
        40,
        tuple(window_shares(burns, solo_rate=solo_rate, window_s=WINDOW_S)),
    )
    metric(f"gpu_share_{verdict.case}", verdict.mean, "%")
    metric(f"gpu_share_{verdict.case}_worst_window_error", verdict.worst, "points")
    assert failures([verdict], min_windows=WINDOWS) == []


def start_worker(command: tuple[list[str], dict[str, str]]) -> subprocess.Popen[str]:
    args, env = command
    proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", "the training worker died while warming up"
    return proc


def timed_block(proc: subprocess.Popen[str]) -> float:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(f"{STEPS_PER_BLOCK}\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def paired_overheads(
    bare: subprocess.Popen[str], shimmed: subprocess.Popen[str], budget_s: float
) -> list[float]:
    """Per pair of adjacent blocks (alternating which runs first), the shim's extra time in percent."""
    samples: list[float] = []
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        if len(samples) % 2:
            with_shim, without = timed_block(shimmed), timed_block(bare)
        else:
            without, with_shim = timed_block(bare), timed_block(shimmed)
        samples.append(100 * (with_shim / without - 1))
        if len(samples) >= 30 and mean_ci95(samples)[1] < INTERVAL_GOAL_PCT * 0.8:
            break
    return samples


@pytest.mark.timeout(600)
def test_a_launch_heavy_pytorch_step_costs_little_more_under_the_shim(
    python, tools, gpu, metric: Metric, tmp_path
):
    box = rig.make_container(tmp_path, "overhead", gpu)
    args = [python, "-c", LAUNCH_HEAVY_STEP]
    bare = start_worker((args, rig.bare_environ()))
    shimmed = start_worker(box.launch(tools, args))
    try:
        samples = paired_overheads(bare, shimmed, budget_s=240)
    finally:
        for proc in (bare, shimmed):
            proc.kill()
            proc.communicate(timeout=30)
    overhead, half = mean_ci95(samples)
    metric("gpu_torch_step_overhead_pct", overhead, "%")
    metric("gpu_torch_step_overhead_ci95_pct", half, "%")
    metric("gpu_torch_step_overhead_pairs", str(len(samples)), "")
    assert box.usage.exists(), "the shim was not loaded in the shimmed worker"
    assert half < INTERVAL_GOAL_PCT, f"95 % interval ±{half:.2f} % after {len(samples)} pairs"
    assert overhead + half < OVERHEAD_GOAL_PCT
