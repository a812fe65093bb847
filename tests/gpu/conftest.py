"""Fixtures of the GPU acceptance tests (all marked ``gpu``; the root conftest skips them without a GPU).

Figures go to the terminal summary as ``name: value unit`` lines, and to ``$GPU_METRICS_FILE`` when set
(``tests/gpu/run_gpu_tests.sh`` prints that file). Window length and count: ``GPU_WINDOW_S`` (default 5)
and ``GPU_WINDOWS`` (default 3) seconds and windows per case.
"""

import os
import subprocess
from pathlib import Path

import pytest

from tests.gpu import rig
from tests.gpu.rig import WINDOW_S, Metric, Solo

FIGURES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # Long cases carry their own timeout; registered here too so that a run without pytest-timeout still works.
    config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("GPU figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def metric() -> Metric:
    target = os.environ.get("GPU_METRICS_FILE")

    def record(name: str, value: float | str, unit: str) -> None:
        text = f"{value:.2f}" if isinstance(value, float) else value
        line = f"{name}: {text} {unit}".rstrip()
        FIGURES.append(line)
        if target:
            with Path(target).open("a") as out:
                out.write(line + "\n")

    return record


@pytest.fixture(scope="session")
def gpu() -> rig.Gpu:
    try:
        return rig.query_gpu()
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"nvidia-smi found no GPU: {err}")


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory, gpu: rig.Gpu, metric: Metric) -> rig.Tools:
    built = rig.build(tmp_path_factory.mktemp("tools"))
    if built is None:
        pytest.skip("needs nvcc (CUDA toolkit) to build tests/gpu/shim_gpu.cu")
    metric("gpu_shim_build", built.flavour, "")
    return built


@pytest.fixture(scope="session")
def solo(tools: rig.Tools) -> Solo:
    """(iterations per kernel, kernels per second alone on the GPU without the shim) for a workload."""
    iters: dict[int, int] = {}
    rates: dict[rig.Kernels, tuple[int, float]] = {}

    def measure(kernels: rig.Kernels) -> tuple[int, float]:
        if kernels.kernel_us not in iters:
            out = rig.run(
                [str(tools.app), "calibrate", str(kernels.kernel_us)], rig.bare_environ(), timeout=120
            )
            iters[kernels.kernel_us] = int(rig.fields(out)["iters"])
        if kernels not in rates:
            args = rig.burn_args(tools, kernels, iters[kernels.kernel_us], WINDOW_S + 1)
            (alone,) = rig.burn_together([(args, rig.bare_environ())], seconds=WINDOW_S + 1)
            rates[kernels] = (iters[kernels.kernel_us], alone.rate())
        return rates[kernels]

    return measure
