"""Health monitoring: XID events and reachability probes feed :mod:`plugin.core.health`; changes go out now.

Two tasks: one drains ``GpuSource.xid_events()``, one probes ``is_reachable`` every period (in a worker
thread, NVML calls block). Each change calls ``on_change(healthy_map)`` immediately, which republishes the
device list (ListAndWatch) and the node, so a health change reaches the kubelet well within 1 s.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from plugin.core.gpu import GpuSource, XidEvent
from plugin.core.health import GpuHealth, HealthPolicy, apply_probe, apply_xid, healthy_map, initial_book
from vcuda.model import GpuUuid

__all__ = ["HealthMonitor"]

log = logging.getLogger(__name__)
OnChange = Callable[[Mapping[GpuUuid, bool]], Awaitable[None]]


class HealthMonitor:
    def __init__(
        self,
        source: GpuSource,
        uuids: list[GpuUuid],
        policy: HealthPolicy,
        on_change: OnChange,
        probe_s: float = 0.5,
        on_xid: Callable[[XidEvent], None] | None = None,
    ) -> None:
        self._source = source
        self._policy = policy
        self._on_change = on_change
        self._probe_s = probe_s
        self._on_xid = on_xid
        self._book: dict[GpuUuid, GpuHealth] = initial_book(uuids)
        self.retry_s = 5.0

    @property
    def healthy(self) -> dict[GpuUuid, bool]:
        return healthy_map(self._book)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._xids())
            tasks.create_task(self._probes())

    async def _update(self, book: dict[GpuUuid, GpuHealth]) -> None:
        before = healthy_map(self._book)
        self._book = book
        after = healthy_map(book)
        if after != before:
            for uuid in sorted(u for u in after if after[u] != before.get(u)):
                state = "healthy" if after[uuid] else f"unhealthy ({book[uuid].reason})"
                log.warning("GPU %s is now %s", uuid, state)
            await self._on_change(after)

    async def _xids(self) -> None:
        """Drain XID events; if the event source fails, log it, keep probing, and subscribe again."""
        while True:
            try:
                async for event in self._source.xid_events():
                    if self._on_xid is not None:
                        self._on_xid(event)
                    log.info("XID %d on GPU %s", event.xid, event.uuid)
                    await self._update(
                        apply_xid(self._book, event.uuid, event.xid, time.monotonic(), self._policy)
                    )
            except Exception as err:  # NVML errors of any kind: health must keep running
                log.error("XID event stream failed, re-subscribing in %.0f s: %s", self.retry_s, err)
            await asyncio.sleep(self.retry_s)

    async def _probes(self) -> None:
        while True:
            reachable = await asyncio.to_thread(self._probe)
            await self._update(apply_probe(self._book, reachable, time.monotonic(), self._policy))
            await asyncio.sleep(self._probe_s)

    def _probe(self) -> dict[GpuUuid, bool]:
        out = {}
        for uuid in self._book:
            try:
                out[uuid] = self._source.is_reachable(uuid)
            except Exception as err:  # any NVML failure on a GPU means we cannot use it
                log.warning("probing GPU %s failed: %s", uuid, err)
                out[uuid] = False
        return out
