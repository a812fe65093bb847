"""The exporter over the real driver: a CUDA process's memory and SM use, as NVML reports them by host PID,
reach the right container series; the same process seen through the real /proc (not in any pod) is counted
as unattributed, never pinned on a container. Needs an NVIDIA GPU and torch (skipped otherwise)."""

import select
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.metrics.exporter import NodeCollector
from plugin.metrics.nvml_telemetry import NvmlTelemetry
from plugin.nvml import Nvml
from tests.fakes.node import GIB, FakeContainer, FakeNodeFs, cid, uid, v2_systemd

pytestmark = pytest.mark.gpu

BURNER = """
import sys, time, torch
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")        # 1 GiB held
a = torch.randn(8192, 8192, device="cuda")
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    a = a @ a; a /= a.norm()
torch.cuda.synchronize()
"""


def samples(collector: NodeCollector, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in collector.collect()
        for s in f.samples
        if s.name == name
    }


def test_a_real_cuda_process_is_attributed_by_host_pid(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    burner = subprocess.Popen([sys.executable, "-c", BURNER, "20"], stdout=subprocess.PIPE, text=True)
    try:
        assert burner.stdout is not None
        readable, _, _ = select.select([burner.stdout], [], [], 120)  # CUDA start-up, bounded
        assert readable, "the CUDA process did not start within 120 s"
        assert burner.stdout.readline().strip() == "ready"
        with Nvml() as nvml:
            telemetry = NvmlTelemetry(nvml, window_s=5)
            gpu = telemetry.gpu_samples()[0]
            fs = FakeNodeFs(tmp_path)
            fs.add_container(FakeContainer(uid(1), "team-a", "burn", "main", [(gpu.uuid, 4 * GIB, 50, 50)]))
            fs.add_process(burner.pid, v2_systemd(uid(1), cid(1)))  # as if the pod ran it
            in_pod = NodeCollector(node="gpu", state_dir=fs.state_dir, root=tmp_path, telemetry=telemetry)
            real_proc = NodeCollector(node="gpu", state_dir=fs.state_dir, root=Path("/"), telemetry=telemetry)
            key = (
                ("container", "main"),
                ("gpu_uuid", gpu.uuid),
                ("namespace", "team-a"),
                ("node", "gpu"),
                ("pod", "burn"),
            )
            for _ in range(50):  # the driver's per-process SM figure ramps up over the first seconds
                used = samples(in_pod, "kube_vgpu_container_memory_used_bytes")[key]
                util = samples(in_pod, "kube_vgpu_container_utilization_ratio")[key]
                if util > 0.5:
                    break
                subprocess.run(["sleep", "0.2"], check=True)
            lost = samples(real_proc, "kube_vgpu_exporter_unattributed_processes")
            real_used = samples(real_proc, "kube_vgpu_container_memory_used_bytes")[key]
            print(f"\nGPU {gpu.uuid} {gpu.model}: container memory {used / GIB:.3f} GiB, SM {util:.2f}, "
                  f"unattributed via real /proc {lost}")  # fmt: skip
        assert used >= GIB
        assert 0.5 < util <= 1  # a matmul loop keeps the SMs busy
        assert lost[(("gpu_uuid", gpu.uuid), ("node", "gpu"))] >= 1
        assert real_used == 0
    finally:
        burner.kill()
        burner.wait(timeout=10)
