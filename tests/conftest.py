"""Shared pytest set-up: a derandomised hypothesis profile, the GPU marker's skip rule and the shared fixtures."""

import shutil

import pytest
from hypothesis import HealthCheck, settings

# Shared fixtures live in modules registered here, never in a conftest that other modules import.
pytest_plugins = ["tests.fixtures.plugin_env", "tests.fixtures.chart"]

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci")


def _has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_nvidia_gpu():
        return
    skip = pytest.mark.skip(reason="needs a real NVIDIA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `in keywords`: that matches tests/gpu/ itself
            item.add_marker(skip)
