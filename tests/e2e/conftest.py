"""Fixtures of the SIMULATED-cluster e2e tier: a fresh cluster per test (see ``tests/sim`` and
``docs/simulation.md`` for what is real and what is simulated). Pods: tests/builders/pods.py; waiting for a
cluster to settle and checking its invariants: tests/sim/scenario.py."""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.nvml.harness import LIBRARY
from tests.sim.cluster import ClusterSpec, SimCluster
from tests.sim.node import NodeSpec

SMALL_NODES = (NodeSpec("sim-h100", "h100x8"), NodeSpec("sim-a10", "a10x4"))


@pytest.fixture
def sim_cluster() -> Iterator[Callable[..., SimCluster]]:
    """``async with sim_cluster(nodes=...) as cluster``: a started simulated cluster, stopped afterwards.

    Its work directory is a short path under the system temp dir: Unix socket paths stop at 107 bytes."""
    if not LIBRARY.exists():
        pytest.skip("the fake NVML is not built (run `make build`)")
    workdir = Path(tempfile.mkdtemp(prefix="kvsim-"))

    def make(nodes: tuple[NodeSpec, ...] = SMALL_NODES, **spec: Any) -> SimCluster:
        return SimCluster(ClusterSpec(nodes=nodes, **spec), workdir)

    yield make
    if os.environ.get("KVSIM_KEEP"):
        print(f"simulated cluster files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
