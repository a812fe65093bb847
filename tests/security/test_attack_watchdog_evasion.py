# mypy: disable-error-code="no-untyped-call"
"""Attack: hide a GPU process that bypasses the shim from the watchdog by forging its shim slot.

Threat: a tenant (docs/security.md). The watchdog tells a shim-managed process from one outside the shim by the
container's usage file, which the tenant writes: a process that knows its own PID and start time (both in its
``/proc/self/stat``) can write a live slot for itself, and a static binary or raw-ioctl process then looked
like one under the shim (no ``outside_shim`` violation, no eviction). Now a slot counts only for a process whose
memory map (``/proc/<pid>/maps``, kernel truth the tenant cannot write) holds the shim library at its fixed
path in the container; a process whose map cannot be read keeps the slot's word. Left open: a dynamically
linked process that maps the shim (``/etc/ld.so.preload``) yet calls a private copy of ``libcuda`` and forges
its slot; its memory is still caught by ``over_limit`` (NVML's figures), its compute is not.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from plugin.core.watchdog import Reason
from plugin.metrics.sources import ViolationTally
from tests.fakes.kmock import KmockCluster
from tests.fakes.node import GIB, FakeNodeFs, FakeSlot
from tests.fakes.nvml.harness import FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)
from tests.security.test_watchdog import Node, container
from vcuda.names import CONTAINER_SHIM_PATH

LIBC = "7f00 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
SHIM = f"7f10 r-xp 00000000 08:01 43 {CONTAINER_SHIM_PATH}\n"


@pytest.fixture
def cluster() -> Iterator[KmockCluster]:
    with KmockCluster() as c:
        yield c


def write_maps(n: Node, pid: int, text: str) -> None:
    (n.fs.root / "proc" / str(pid) / "maps").write_text(text)


async def test_a_forged_slot_does_not_hide_a_process_that_never_loaded_the_shim(
    fake_nvml: Any, cluster: KmockCluster, tmp_path: Any
) -> None:
    n = Node(fake_nvml("a10x4"), FakeNodeFs(tmp_path / "node"), cluster)
    g1 = n.g[1]
    honest = FakeSlot(7, [(GIB, 0, 0, 0)], host_pid=1003)
    forged = FakeSlot(4, [(0, 0, 0, 0)], host_pid=1004)  # written by the tenant for its static binary
    n.fs.add_container(container(3, "sneaky", g1, 4 * GIB, [honest, forged]))
    n.pod(3, "sneaky")
    n.process(1003, 3)
    n.process(1004, 3)
    write_maps(n, 1003, LIBC + SHIM.replace("\n", " (deleted)\n"))  # mapped before a plugin upgrade
    write_maps(n, 1004, LIBC)  # a static or raw-ioctl process: no shim in its memory map
    n.nvml.set_processes(g1, [FakeProcess(1003, 1024), FakeProcess(1004, 2 * 1024)])
    dog = n.watchdog(ViolationTally())
    await dog.check_once()
    found = await dog.check_once()
    assert [(v.reason, v.pids) for v in found] == [(Reason.OUTSIDE_SHIM, (1004,))]
