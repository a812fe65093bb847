"""FakeGpuSource: the plugin's GPU source without NVML, for any tier (no socket, no process, no library).

Reproduces: a fixed inventory as discovery reports it; a GPU that stops answering (put its UUID in
``unreachable``: ``is_reachable`` says False, as for a GPU lost from the bus); XID events injected at any time
arrive on the endless event stream, as NVML's event set delivers them.

Not reproduced (the C fake NVML in ``tests/fakes/nvml`` has them, through real pynvml): NVML's error codes,
MIG, processes and utilisation, the event set's timeouts.
"""

import asyncio
from collections.abc import AsyncIterator

from plugin.core.gpu import NodeGpus, XidEvent
from vcuda.model import GpuUuid


class FakeGpuSource:
    """A FAKE :class:`plugin.core.gpu.GpuSource` (no NVML): fixed GPUs, injectable XIDs and lost GPUs."""

    def __init__(self, node: NodeGpus) -> None:
        self.node = node
        self.unreachable: set[str] = set()
        self._xids: asyncio.Queue[XidEvent] = asyncio.Queue()

    def discover(self) -> NodeGpus:
        return self.node

    def is_reachable(self, uuid: GpuUuid) -> bool:
        return uuid not in self.unreachable

    def inject_xid(self, uuid: str, xid: int) -> None:
        self._xids.put_nowait(XidEvent(GpuUuid(uuid), xid))

    async def xid_events(self) -> AsyncIterator[XidEvent]:
        while True:
            yield await self._xids.get()
