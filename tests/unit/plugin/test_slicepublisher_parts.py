"""The publisher's small parts: PCIe roots read from a FAKE sysfs tree, and the PoolKeeper's loop.

Cases: a GPU's PCIe root is the ``pci<domain>:<bus>`` directory its ``/sys/bus/pci/devices/<bdf>`` link points
under (NVML's 8-digit domain accepted), a GPU without a readable link gets none; the keeper publishes at
start, again on each wake, and a failed sync neither stops it nor counts.
"""

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plugin.slicepublisher import PoolKeeper, SliceError, read_pcie_roots


def test_pcie_roots_come_from_the_sysfs_links(tmp_path: Path) -> None:
    devices = tmp_path / "bus" / "pci" / "devices"
    devices.mkdir(parents=True)
    os.symlink("../../../devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0", devices / "0000:17:00.0")
    os.symlink("../../../devices/pci0001:a0/0001:a0:02.0/0001:a1:00.0", devices / "0001:a1:00.0")
    roots = read_pcie_roots(
        {"GPU-a": "00000000:17:00.0", "GPU-b": "0001:A1:00.0", "GPU-c": "0000:99:00.0"}, sys_root=tmp_path
    )
    assert roots == {"GPU-a": "pci0000:15", "GPU-b": "pci0001:a0"}


class FlakyPublisher:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[Sequence[Any]] = []

    async def sync(self, wanted: Sequence[Any]) -> bool:
        self.seen.append(wanted)
        if self.failures:
            self.failures -= 1
            raise SliceError("the API server said no")
        return True


async def test_the_keeper_publishes_at_start_on_wake_and_survives_failures() -> None:
    publisher = FlakyPublisher(failures=1)
    builds = iter(range(100))
    keeper = PoolKeeper(publisher, lambda: [{"n": next(builds)}], resync_s=3600)  # type: ignore[arg-type]
    task = asyncio.create_task(keeper.run())

    async def until(done: Any) -> None:
        async with asyncio.timeout(5):
            while not done():
                await asyncio.sleep(0)

    try:
        await until(lambda: len(publisher.seen) == 1)  # at start; it failed, and is not counted
        assert keeper.syncs == 0
        keeper.wake()  # a health change: the next build is published
        await until(lambda: keeper.syncs == 1)
        keeper.wake()
        await until(lambda: keeper.syncs == 2)
        assert [w[0]["n"] for w in publisher.seen] == [0, 1, 2]
    finally:
        task.cancel()
