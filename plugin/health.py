"""Health monitoring: XID events and reachability probes feed :mod:`plugin.core.health`; changes go out now.

Idle cost matters (every GPU node runs this), so nothing here wakes the event loop while nothing changes:

- XID events: ``GpuSource.xid_events()`` (over NVML, a thread blocked in ``nvmlEventSetWait``) yields an event
  the moment the driver reports it.
- Reachability: a daemon thread probes ``is_reachable`` for every GPU each ``probe_s`` (NVML calls block, and
  can hang on a failing GPU) and hands the result to the loop only when it changed.
- XID recovery (``recovery_s > 0``): one timer, armed for the earliest mark's expiry.

Each change calls ``on_change(healthy_map)`` at once, which republishes the device list (ListAndWatch) and the
node, so a health change reaches the kubelet well within 1 s (``probe_s`` = 0.5 s for a lost GPU).
"""

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping

from plugin.core.gpu import GpuSource, XidEvent
from plugin.core.health import (
    GpuHealth,
    HealthPolicy,
    apply_probe,
    apply_xid,
    healthy_map,
    initial_book,
    next_recovery,
)
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
        self._uuids = tuple(uuids)
        self._policy = policy
        self._on_change = on_change
        self._probe_s = probe_s
        self._on_xid = on_xid
        self._book: dict[GpuUuid, GpuHealth] = initial_book(uuids)
        self._reachable: dict[GpuUuid, bool] = {u: True for u in uuids}
        self._probed: asyncio.Queue[dict[GpuUuid, bool]] = asyncio.Queue()
        self._marked = asyncio.Event()  # a critical XID arrived: (re)arm the recovery timer
        self.retry_s = 5.0

    @property
    def healthy(self) -> dict[GpuUuid, bool]:
        return healthy_map(self._book)

    async def run(self) -> None:
        stop = threading.Event()
        args = (asyncio.get_running_loop(), stop)
        threading.Thread(target=self._probe_thread, args=args, name="gpu-health-probe", daemon=True).start()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._xids())
                tasks.create_task(self._probes())
                if self._policy.recovery_s > 0:
                    tasks.create_task(self._recoveries())
        finally:
            stop.set()

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
                    self._marked.set()
            except Exception as err:  # NVML errors of any kind: health must keep running
                log.error("XID event stream failed, re-subscribing in %.0f s: %s", self.retry_s, err)
            await asyncio.sleep(self.retry_s)

    async def _probes(self) -> None:
        """Apply each reachability change the probe thread hands over."""
        while True:
            self._reachable = await self._probed.get()
            await self._update(apply_probe(self._book, self._reachable, time.monotonic(), self._policy))
            self._marked.set()  # a GPU back with an XID mark: the recovery timer counts it now

    async def _recoveries(self) -> None:
        """Clear XID marks once ``recovery_s`` passed without another critical XID (GPU reachable).

        Sleeps until the earliest due mark; an XID or a reachability change (``_marked``) re-arms it."""
        while True:
            self._marked.clear()
            due = next_recovery(self._book, self._policy)
            timeout = None if due is None else max(0.0, due - time.monotonic()) + 0.001
            try:
                await asyncio.wait_for(self._marked.wait(), timeout)
            except TimeoutError:
                await self._update(apply_probe(self._book, self._reachable, time.monotonic(), self._policy))

    def _probe_thread(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """Probe every ``probe_s`` until ``stop``; wake the loop only when reachability changed."""
        last: dict[GpuUuid, bool] = {}
        while True:
            reachable = self._probe()
            if reachable != last:
                last = reachable
                try:
                    loop.call_soon_threadsafe(self._probed.put_nowait, reachable)
                except RuntimeError:  # the loop is closed
                    return
            if stop.wait(self._probe_s):
                return

    def _probe(self) -> dict[GpuUuid, bool]:
        out = {}
        for uuid in self._uuids:
            try:
                out[uuid] = self._source.is_reachable(uuid)
            except Exception as err:  # any NVML failure on a GPU means we cannot use it
                log.warning("probing GPU %s failed: %s", uuid, err)
                out[uuid] = False
        return out
