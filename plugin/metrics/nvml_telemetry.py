"""A :class:`~plugin.metrics.sources.GpuTelemetry` over :class:`plugin.nvml.Nvml` (the only pynvml user).

GPU identity (index, model) comes from the plugin's discovery, passed in or discovered once here. One GPU
that fails (fallen off the bus) is left out of the scrape; NVML failing for every GPU is a
:class:`~plugin.metrics.sources.SourceError`. Utilisation samples older than ``window_s`` are ignored, so a
process that launched nothing recently reads 0.
"""

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from plugin.core.gpu import Gpu, NodeGpus
from plugin.metrics.sources import GpuSample, ProcessSample, SourceError
from plugin.nvml import GpuUsage, NvmlError, ProcessUsage
from vcuda.model import GpuUuid

__all__ = ["NvmlReadings", "NvmlTelemetry"]


class NvmlReadings(Protocol):
    """The part of :class:`plugin.nvml.Nvml` the exporter uses."""

    def discover(self) -> NodeGpus: ...

    def gpu_usage(self, uuid: GpuUuid) -> GpuUsage: ...

    def process_usage(self, uuid: GpuUuid, *, since_us: int = 0) -> tuple[ProcessUsage, ...]: ...


def _ratio(pct: int | None) -> float | None:
    return None if pct is None else min(max(pct, 0), 100) / 100


class NvmlTelemetry:
    def __init__(
        self,
        nvml: NvmlReadings,
        *,
        gpus: Sequence[Gpu] | None = None,
        window_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nvml = nvml
        self._gpus = None if gpus is None else tuple(gpus)
        self._window_s = window_s
        self._clock = clock

    def _known(self) -> tuple[Gpu, ...]:
        if self._gpus is None:
            try:
                self._gpus = self._nvml.discover().gpus
            except NvmlError as err:
                raise SourceError(f"NVML discovery failed: {err}") from err
        return self._gpus

    def gpu_samples(self) -> Sequence[GpuSample]:
        gpus, out = self._known(), []
        for g in gpus:
            try:
                u = self._nvml.gpu_usage(g.uuid)
            except NvmlError:
                continue
            util = _ratio(u.utilization_pct)
            out.append(GpuSample(g.uuid, g.index, g.model, u.memory_used_bytes, u.memory_total_bytes, util))
        if gpus and not out:
            raise SourceError("NVML answered for no GPU")
        return out

    def process_samples(self) -> Sequence[ProcessSample]:
        since_us = int((self._clock() - self._window_s) * 1_000_000)
        out = []
        for g in self._known():
            try:
                processes = self._nvml.process_usage(g.uuid, since_us=since_us)
            except NvmlError:
                continue
            out += [
                ProcessSample(p.uuid, p.host_pid, p.used_bytes or 0, _ratio(p.sm_pct) or 0.0)
                for p in processes
            ]
        return out
