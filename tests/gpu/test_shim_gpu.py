"""The memory limit on a real GPU: CUDA runtime allocations, `cudaMemGetInfo`, nvidia-smi and PyTorch."""

import pytest

from tests.gpu import rig
from tests.gpu.rig import Metric

pytestmark = pytest.mark.gpu

LIMIT_MIB = 4096

TORCH_FILL = """
import torch
held, mib = [], 0
free, total = torch.cuda.mem_get_info()
try:
    while mib < 1 << 20:
        held.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
        mib += 256
except torch.OutOfMemoryError:
    pass
print("allocated_mib", mib, "total_mib", total >> 20, "free_mib", free >> 20)
"""


def test_cuda_allocations_stop_at_the_limit_and_meminfo_and_nvidia_smi_show_it(tools, gpu, metric, tmp_path):
    box = rig.make_container(tmp_path, "mem", gpu, memory_mib=LIMIT_MIB)
    out = rig.fields(rig.run(*box.launch(tools, [str(tools.app), "mem", "256"]), timeout=120))
    smi_args = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"]
    smi = rig.run(*box.launch(tools, smi_args), timeout=60)
    metric("gpu_mem_limit_mib", LIMIT_MIB, "MiB")
    metric("gpu_mem_cuda_allocated_mib", out["allocated_mib"], "MiB")
    metric("gpu_mem_cuda_meminfo_total_mib", out["total_mib"], "MiB")
    metric("gpu_nvidia_smi_total_mib_in_container", smi.strip(), "MiB")
    metric("gpu_nvidia_smi_total_mib_physical", gpu.total_mib, "MiB")
    assert (int(out["allocated_mib"]), int(out["total_mib"]), int(smi)) == (LIMIT_MIB, LIMIT_MIB, LIMIT_MIB)
    assert int(out["free_mib"]) <= LIMIT_MIB


def test_pytorch_allocations_stop_at_the_limit_and_mem_get_info_shows_it(
    tools, gpu, metric: Metric, tmp_path
):
    python = rig.torch_python()
    if python is None:
        pytest.skip("needs a Python with torch and CUDA (GPU_PYTHON)")
    box = rig.make_container(tmp_path, "torch", gpu, memory_mib=LIMIT_MIB)
    out = rig.fields(rig.run(*box.launch(tools, [python, "-c", TORCH_FILL]), timeout=300))
    metric("gpu_mem_torch_allocated_mib", out["allocated_mib"], "MiB")
    metric("gpu_mem_torch_meminfo_total_mib", out["total_mib"], "MiB")
    assert LIMIT_MIB - 256 <= int(out["allocated_mib"]) <= LIMIT_MIB
    assert int(out["total_mib"]) == LIMIT_MIB
