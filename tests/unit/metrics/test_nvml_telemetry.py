"""NvmlTelemetry over a fake plugin.nvml (FakeNvmlReadings): GPU identity from discovery, one lost GPU left
out, every GPU failing as SourceError, missing figures, and the utilisation window."""

from dataclasses import dataclass, field

import pytest

from plugin.core.gpu import Gpu, NodeGpus
from plugin.metrics.nvml_telemetry import NvmlTelemetry
from plugin.metrics.sources import GpuSample, ProcessSample, SourceError
from plugin.nvml import GpuUsage, NvmlError, ProcessUsage
from vcuda.model import GpuUuid

A, B = GpuUuid("GPU-a"), GpuUuid("GPU-b")
GPUS = (Gpu(A, 0, 0, "NVIDIA A10", 24576, "00:01"), Gpu(B, 1, 1, "NVIDIA A10", 24576, "00:02"))


@dataclass
class FakeNvmlReadings:
    """A fake plugin.nvml.Nvml: fixed readings, GPUs in ``lost`` raise NvmlError, records since_us."""

    lost: set[str] = field(default_factory=set)
    discoveries: int = 0
    since: list[int] = field(default_factory=list)

    def discover(self) -> NodeGpus:
        self.discoveries += 1
        return NodeGpus(GPUS, (), "580", "13.0")

    def gpu_usage(self, uuid: GpuUuid) -> GpuUsage:
        if uuid in self.lost:
            raise NvmlError("fake: GPU is lost", code=15, uuid=uuid)
        return GpuUsage(uuid, 100, 1000, None if uuid == B else 40, 5)

    def process_usage(self, uuid: GpuUuid, *, since_us: int = 0) -> tuple[ProcessUsage, ...]:
        if uuid in self.lost:
            raise NvmlError("fake: GPU is lost", code=15, uuid=uuid)
        self.since.append(since_us)
        return (ProcessUsage(uuid, 7, 50, 25), ProcessUsage(uuid, 8, None, None))


def test_gpu_samples_carry_discovered_index_and_model_and_discover_once():
    nvml = FakeNvmlReadings()
    telemetry = NvmlTelemetry(nvml)
    expected = [GpuSample(A, 0, "NVIDIA A10", 100, 1000, 0.4), GpuSample(B, 1, "NVIDIA A10", 100, 1000, None)]
    assert telemetry.gpu_samples() == expected
    assert telemetry.gpu_samples() == expected
    assert nvml.discoveries == 1


def test_process_samples_read_missing_figures_as_zero_within_the_window():
    nvml = FakeNvmlReadings()
    samples = NvmlTelemetry(nvml, gpus=GPUS, window_s=30, clock=lambda: 1000.0).process_samples()
    assert samples == [
        ProcessSample(A, 7, 50, 0.25),
        ProcessSample(A, 8, 0, 0.0),
        ProcessSample(B, 7, 50, 0.25),
        ProcessSample(B, 8, 0, 0.0),
    ]
    assert nvml.since == [970_000_000, 970_000_000]
    assert nvml.discoveries == 0


def test_a_lost_gpu_is_left_out_and_all_lost_is_a_source_error():
    nvml = FakeNvmlReadings(lost={A})
    telemetry = NvmlTelemetry(nvml)
    assert [s.uuid for s in telemetry.gpu_samples()] == [B]
    assert {s.gpu_uuid for s in telemetry.process_samples()} == {B}
    nvml.lost.add(B)
    with pytest.raises(SourceError):
        telemetry.gpu_samples()
