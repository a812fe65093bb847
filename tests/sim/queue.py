"""kube-scheduler's scheduling queue, reduced: an active queue, a backoff queue and unschedulable pods.

As upstream (``pkg/scheduler/backend/queue``): pods are popped by priority then by the time they were
(re)queued; a pod that failed with an error waits out its backoff (1 s doubling to 10 s per attempt); a pod
found unschedulable waits for a cluster event (``move_all``) or for ``unschedulable_flush_s``, then goes back
through backoff. A move that happens while a pod is being scheduled sends that pod to backoff instead of
parking it, so no event is lost. Part of the SIMULATED scheduler.
"""

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["QueueSettings", "SchedulingQueue"]


@dataclass(frozen=True, slots=True)
class QueueSettings:
    initial_backoff_s: float = 1.0  # podInitialBackoffSeconds
    max_backoff_s: float = 10.0  # podMaxBackoffSeconds
    unschedulable_flush_s: float = 300.0  # podMaxInUnschedulablePodsDuration


@dataclass(slots=True)
class _Entry:
    priority: int
    attempts: int = 0
    last_failure: float = 0.0
    cycle: int = -1
    state: str = "active"  # active | backoff | unschedulable | in-flight
    parked_at: float = field(default=0.0)


class SchedulingQueue:
    def __init__(
        self, settings: QueueSettings = QueueSettings(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._active: list[tuple[int, int, str]] = []
        self._seq = 0
        self._cycle = 0
        self._move_cycle = -1
        self._wake = asyncio.Event()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def pending(self) -> dict[str, str]:
        """Every queued pod and where it waits (for reports and tests)."""
        return {key: entry.state for key, entry in self._entries.items()}

    def attempts(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry.attempts if entry else 0

    def add(self, key: str, priority: int = 0) -> None:
        if key not in self._entries:
            self._entries[key] = _Entry(priority)
            self._activate(key)

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    def _activate(self, key: str) -> None:
        entry = self._entries[key]
        entry.state = "active"
        self._seq += 1
        heapq.heappush(self._active, (-entry.priority, self._seq, key))
        self._wake.set()

    def _backoff_s(self, entry: _Entry) -> float:
        s = self._settings
        return float(min(s.max_backoff_s, s.initial_backoff_s * 2 ** max(0, entry.attempts - 1)))

    def requeue_error(self, key: str) -> None:
        """A scheduling error or a failed bind: retry after the pod's backoff."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.state, entry.last_failure = "backoff", self._clock()
            self._wake.set()

    def requeue_unschedulable(self, key: str) -> None:
        """No node fits: wait for a cluster event, unless one already came during this attempt."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.last_failure = self._clock()
        if self._move_cycle >= entry.cycle:
            entry.state = "backoff"
        else:
            entry.state, entry.parked_at = "unschedulable", self._clock()
        self._wake.set()

    def move_all(self) -> None:
        """A cluster event that may make parked pods schedulable (node added or changed, pod gone)."""
        self._move_cycle = self._cycle
        for entry in self._entries.values():
            if entry.state == "unschedulable":
                entry.state = "backoff"
        self._wake.set()

    def _promote(self) -> float:
        """Move due pods to the active queue; return seconds until the next one is due."""
        now, next_due = self._clock(), self._settings.unschedulable_flush_s
        for key, entry in self._entries.items():
            if (
                entry.state == "unschedulable"
                and now - entry.parked_at >= self._settings.unschedulable_flush_s
            ):
                entry.state = "backoff"
            if entry.state == "backoff":
                due = entry.last_failure + self._backoff_s(entry) - now
                if due <= 0:
                    self._activate(key)
                else:
                    next_due = min(next_due, due)
        return next_due

    async def pop(self) -> str:
        """The next pod to schedule (marked in flight until requeued or deleted)."""
        while True:
            self._wake.clear()
            next_due = self._promote()
            while self._active:
                _, _, key = heapq.heappop(self._active)
                entry = self._entries.get(key)
                if entry is not None and entry.state == "active":
                    self._cycle += 1
                    entry.state, entry.cycle = "in-flight", self._cycle
                    entry.attempts += 1
                    return key
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, next_due)):  # not wait_for: see plugin/node.py
                    await self._wake.wait()
