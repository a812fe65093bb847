"""The GPU test rig: builds the shim and `shim_gpu`, writes containers' files, runs programs under the shim.

The shim under test is the shipped build for this machine (`build/shim/<arch>-glibc2.17/libvcuda.so`, from
`make build`, mk/shim-cross.mk) when it is newer than every shim source and this process may give programs
the container paths that build reads (tests/shim/container.py: a mount namespace, needs root). Otherwise the
TEST flavour (-DVCUDA_TEST_BUILD, which takes those paths from VCUDA_* variables) is built here with gcc.
Every case gets a fresh node directory, as the plugin mounts it. Every wait is bounded.
"""

import itertools
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.gpu.shares import Burn, parse_burn
from tests.shim import container
from vcuda import names
from vcuda.model import GpuUuid
from vcuda.shimfile import (
    NODE_PLACED_DIR,
    NODE_TENANTS_DIR,
    GpuLimit,
    ShimConfig,
    decode_placement,
    encode_config,
    encode_placement,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "vcuda" / "shim").glob("*.[ch]"))
MIB = 1 << 20
_SCRATCH = itertools.count()
WINDOW_S = float(os.environ.get("GPU_WINDOW_S", "5"))
WINDOWS = int(os.environ.get("GPU_WINDOWS", "3"))
# Launching runs this long: the windows, plus slack for processes that start a moment apart.
BURN_S = WINDOWS * WINDOW_S + 2.0


@dataclass(frozen=True, slots=True)
class Gpu:
    uuid: GpuUuid
    total_mib: int


@dataclass(frozen=True, slots=True)
class Tools:
    shim: Path
    app: Path
    contained: bool  # the shipped build in container paths, else the TEST build with VCUDA_* variables

    @property
    def flavour(self) -> str:
        return "shipped_zig_glibc2.17" if self.contained else "test_gcc"


def query_gpu() -> Gpu:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=uuid,memory.total", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    uuid, total = (w.strip() for w in out.splitlines()[0].split(","))
    return Gpu(GpuUuid(uuid), int(total))


def _nvcc() -> Path | None:
    found = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    return Path(found) if Path(found).exists() else None


def build(work: Path) -> Tools | None:
    """The shim and the test program, or None without nvcc."""
    nvcc = _nvcc()
    if nvcc is None:
        return None
    app = work / "shim_gpu"
    subprocess.run(
        [str(nvcc), "-O2", "-o", str(app), str(ROOT / "tests" / "gpu" / "shim_gpu.cu")],
        check=True,
        timeout=600,
    )
    shipped = ROOT / "build" / "shim" / f"{platform.machine()}-glibc2.17" / "libvcuda.so"
    current = shipped.exists() and shipped.stat().st_mtime >= max(s.stat().st_mtime for s in SOURCES)
    if current and container.available():
        return Tools(shipped, app, contained=True)
    shim = work / "libvcuda-test.so"
    include = nvcc.resolve().parent.parent / "include"
    subprocess.run(
        ["gcc", "-std=gnu11", "-O2", "-DVCUDA_TEST_BUILD", "-fPIC", "-fvisibility=hidden", "-pthread",
         f"-I{include}", f"-I{ROOT / 'vcuda' / 'shim'}", "-shared", "-Wl,-soname,libvcuda.so", "-Wl,-Bsymbolic",
         "-o", str(shim), *(str(s) for s in SOURCES if s.suffix == ".c"), "-ldl"],
        check=True, timeout=600,
    )  # fmt: skip
    return Tools(shim, app, contained=False)


@dataclass(frozen=True, slots=True)
class Container:
    """One container's shim files (its config and usage dirs) and its GPU's node dir, all host directories."""

    root: Path
    node: Path

    @property
    def usage(self) -> Path:
        return self.root / "usage" / names.USAGE_FILE_NAME

    def launch(self, tools: Tools, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run `args` as a process of this container."""
        env = bare_environ() | {"LD_PRELOAD": str(tools.shim)}
        config, usage = self.root / "etc", self.root / "usage"
        if tools.contained:
            scratch = self.root / f"ns{next(_SCRATCH)}"
            return container.command(args, config=config, usage=usage, node=self.node, scratch=scratch), env
        return list(args), env | {
            names.ENV_CONFIG_PATH: str(config / container.CONFIG_NAME),
            names.ENV_USAGE_PATH: str(self.usage),
            names.ENV_NODE_DIR: str(self.node),
        }


def make_container(work: Path, name: str, gpu: Gpu, *, memory_mib: int = 16384, core: int = 100) -> Container:
    """A container `name` under `work`, sharing the node dir `work`/node with the others made there."""
    box = Container(work / name, work / "node")
    for d in (box.root / "etc", box.root / "usage", box.node):
        d.mkdir(parents=True, exist_ok=True)
    limit = GpuLimit(gpu.uuid, memory_mib * MIB, core, core)
    config = ShimConfig(f"uid-{name}", "gpu-test", name, "main", (limit,))
    (box.root / "etc" / container.CONFIG_NAME).write_bytes(encode_config(config))
    _place(box.node, gpu.uuid, f"uid-{name}_main", core)
    return box


def _place(node: Path, uuid: str, record_dir: str, core: int) -> None:
    """The container's own record dir and, if throttled, its entry in the GPU's placement list (as the
    plugin writes them: docs/shim.md, "Co-located contexts")."""
    (node / NODE_TENANTS_DIR / record_dir).mkdir(parents=True, exist_ok=True)
    if core >= 100:
        return
    placed = node / NODE_PLACED_DIR / uuid
    placed.parent.mkdir(exist_ok=True)
    entries = list(decode_placement(placed.read_bytes())) if placed.exists() else []
    placed.write_bytes(encode_placement([*entries, (record_dir, core)]))


def bare_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCUDA_", "LD_PRELOAD"))}
    return env | {"CUDA_VISIBLE_DEVICES": "0"}


def run(args: Sequence[str], env: dict[str, str], *, timeout: float) -> str:
    done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{args[0]} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def fields(stdout: str) -> dict[str, str]:
    words = stdout.split()
    return dict(zip(words[::2], words[1::2], strict=False))


@dataclass(frozen=True, slots=True)
class Kernels:
    """A burn workload: kernels of about `kernel_us` each, `streams` streams, `graph` kernels per graph."""

    kernel_us: int
    streams: int = 1
    graph: int = 0

    @property
    def batch(self) -> int:
        return self.graph or max(1, round(1000 / self.kernel_us))

    def label(self) -> str:
        size = f"{self.kernel_us}us" if self.kernel_us < 1000 else f"{self.kernel_us // 1000}ms"
        return (
            size
            + (f"_{self.streams}streams" if self.streams > 1 else "")
            + (f"_graph{self.graph}" if self.graph else "")
        )


def burn_args(tools: Tools, kernels: Kernels, iters: int, seconds: float) -> list[str]:
    return [
        str(tools.app),
        "burn",
        f"{seconds:g}",
        str(iters),
        str(kernels.batch),
        str(kernels.streams),
        str(kernels.graph),
    ]


def burn_together(commands: Sequence[tuple[list[str], dict[str, str]]], *, seconds: float) -> list[Burn]:
    """Start every command at once; their parsed burns, in order."""
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args, env in commands
    ]
    deadline = time.monotonic() + seconds + 120
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                raise AssertionError(f"burn exited {proc.returncode}: {err[-2000:]}")
            outs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
    return [parse_burn(out) for out in outs]


def torch_python() -> str | None:
    """A Python that imports torch with CUDA: GPU_PYTHON, this one, or python3 on PATH."""
    for candidate in (os.environ.get("GPU_PYTHON"), sys.executable, shutil.which("python3")):
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import torch; assert torch.cuda.is_available()"],
            capture_output=True, timeout=120, check=False, env=bare_environ(),
        )  # fmt: skip
        if probe.returncode == 0:
            return candidate
    return None


# The conftest's session fixtures, as the cases see them: record a figure; measure a workload alone.
Metric = Callable[[str, float | str, str], None]
Solo = Callable[[Kernels], tuple[int, float]]
