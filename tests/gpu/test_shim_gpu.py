"""The shim on a real GPU (marked ``gpu``; skipped without one): the memory limit through cudart.

The full figures (compute accuracy, co-location, overheads, PyTorch, nvidia-smi) come from
``tests/gpu/run_gpu_tests.sh``; this test is the quick functional check that runs inside pytest.
"""

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vcuda.model import GpuUuid
from vcuda.shimfile import GpuLimit, ShimConfig, encode_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu


def _build(tmp: Path) -> tuple[Path, Path]:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.skip("needs nvcc")
    include = Path(nvcc).resolve().parent.parent / "include"
    lib, app = tmp / "libvcuda.so", tmp / "shim_gpu"
    sources = sorted(glob.glob(str(ROOT / "vcuda" / "shim" / "*.c")))
    subprocess.run(
        ["gcc", "-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-pthread", f"-I{include}",
         f"-I{ROOT / 'vcuda' / 'shim'}", "-shared", "-Wl,-Bsymbolic", "-o", str(lib), *sources, "-ldl"],
        check=True, timeout=300,
    )  # fmt: skip
    subprocess.run(
        [nvcc, "-O2", "-o", str(app), str(ROOT / "tests" / "gpu" / "shim_gpu.cu")], check=True, timeout=300
    )
    return lib, app


def test_cuda_runtime_allocations_stop_at_the_limit_and_meminfo_shows_it(tmp_path):
    lib, app = _build(tmp_path)
    uuid = subprocess.run(
        ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader", "-i", "0"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    config = tmp_path / "vcuda.config"
    limit = GpuLimit(GpuUuid(uuid), 1024 << 20, 100, 100)
    config.write_bytes(encode_config(ShimConfig("uid", "ns", "pod", "main", (limit,))))
    env = os.environ | {
        "CUDA_VISIBLE_DEVICES": "0",
        "LD_PRELOAD": str(lib),
        "VCUDA_CONFIG_PATH": str(config),
        "VCUDA_USAGE_PATH": str(tmp_path / "usage.bin"),
    }
    out = subprocess.run(
        [str(app), "mem", "128"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    words = out.stdout.split()
    fields = dict(zip(words[::2], words[1::2], strict=False))
    assert fields["allocated_mib"] == "1024"
    assert fields["total_mib"] == "1024"
