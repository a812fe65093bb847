"""FAKE GPU hardware for simulated nodes: the fake NVML's shipped node descriptions, one copy per node.

Every node gets its own description file with its own GPU UUIDs (derived from the node name, so runs are
repeatable), and its own control file for injections (XIDs, lost GPUs) through
:class:`tests.fakes.nvml.harness.FakeNvml`.
"""

import uuid
from pathlib import Path
from typing import Any

from tests.fakes.nvml.harness import FakeNvml, node_description

__all__ = ["write_node_hardware"]

_NAMESPACE = uuid.UUID("6f1c1d2e-6a8e-4f59-9d1b-6b7a0c0de123")


def _gpu_uuid(node: str, index: int) -> str:
    return f"GPU-{uuid.uuid5(_NAMESPACE, f'{node}/{index}')}"


def write_node_hardware(directory: Path, node: str, template: str) -> FakeNvml:
    """Write ``template`` (e.g. ``h100x8``) with per-node UUIDs into ``directory``; the FAKE node handle."""
    description: dict[str, Any] = node_description(template)
    description["description"] = f"FAKE simulated node {node}: {description.get('description', template)}"
    for index, gpu in enumerate(description["gpus"]):
        gpu["uuid"] = _gpu_uuid(node, index)
    return FakeNvml.write(directory, description)
