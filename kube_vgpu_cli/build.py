"""The package version and ``kube_vgpu_build_info``, a gauge of 1 whose labels say what is running."""

import platform
from collections.abc import Iterator
from functools import cache
from importlib import metadata

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["BuildInfo", "package_version", "with_build_info"]

DISTRIBUTION = "kube-vgpu"


@cache
def package_version() -> str:
    """The installed distribution's version (pyproject.toml); ``0+unknown`` from a bare source tree."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


class BuildInfo:
    """A Prometheus collector of ``kube_vgpu_build_info{binary, version, python_version} 1``."""

    def __init__(self, binary: str) -> None:
        self._labels = [binary, package_version(), platform.python_version()]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kube_vgpu_build_info",
            "Always 1; the labels name the binary, its version and the Python it runs on.",
            labels=["binary", "version", "python_version"],
        )
        family.add_metric(self._labels, 1.0)
        yield family


class _Both:
    def __init__(self, first: Collector, second: Collector) -> None:
        self._parts = (first, second)

    def collect(self) -> Iterator[Metric]:
        for part in self._parts:
            yield from part.collect()


def with_build_info(binary: str, collector: Collector) -> Collector:
    """``collector``'s metrics, then ``kube_vgpu_build_info`` (for exporters that serve one collector)."""
    return _Both(collector, BuildInfo(binary))
