# mypy: disable-error-code="no-untyped-call"
"""plugin.health.HealthMonitor over a FAKE GpuSource: changes go out at once, and only changes.

Case matrix: an XID marks a GPU unhealthy at once; a lost GPU is found by the probe thread and comes back;
with ``recovery_s`` an XID mark clears by its timer alone (no probe result changes); a reachability probe
that finds nothing new never calls ``on_change``; ``next_recovery`` picks the earliest mark of a reachable GPU.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import pytest

from plugin.core.health import HealthPolicy, apply_probe, apply_xid, initial_book, next_recovery
from plugin.health import HealthMonitor
from tests.builders.plugin import a10x4
from tests.fakes.gpu_source import FakeGpuSource
from vcuda.model import GpuUuid

NODE = a10x4()
U0, U1 = NODE.gpus[0].uuid, NODE.gpus[1].uuid
WAIT_S = 2.0


class Changes:
    def __init__(self) -> None:
        self.seen: asyncio.Queue[dict[GpuUuid, bool]] = asyncio.Queue()

    async def __call__(self, healthy: Mapping[GpuUuid, bool]) -> None:
        self.seen.put_nowait(dict(healthy))

    async def next_unhealthy(self) -> set[GpuUuid]:
        healthy = await asyncio.wait_for(self.seen.get(), WAIT_S)
        return {u for u, ok in healthy.items() if not ok}


@contextlib.asynccontextmanager
async def monitoring(policy: HealthPolicy) -> AsyncIterator[tuple[FakeGpuSource, Changes]]:
    source, changes = FakeGpuSource(NODE), Changes()
    monitor = HealthMonitor(source, [g.uuid for g in NODE.gpus], policy, changes, probe_s=0.02)
    task = asyncio.get_running_loop().create_task(monitor.run())
    try:
        yield source, changes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_xid_and_a_lost_gpu_go_out_at_once_and_a_recovered_gpu_comes_back():
    async with monitoring(HealthPolicy()) as (source, changes):
        source.inject_xid(U0, 79)
        assert await changes.next_unhealthy() == {U0}
        source.unreachable.add(U1)
        assert await changes.next_unhealthy() == {U0, U1}
        source.unreachable.discard(U1)
        assert await changes.next_unhealthy() == {U0}  # recovery_s 0: the XID mark stays


async def test_an_xid_mark_clears_by_its_timer_when_nothing_else_changes():
    async with monitoring(HealthPolicy(recovery_s=0.2)) as (source, changes):
        source.inject_xid(U1, 48)
        assert await changes.next_unhealthy() == {U1}
        assert await changes.next_unhealthy() == set()


async def test_probes_that_find_nothing_new_call_nobody():
    async with monitoring(HealthPolicy()) as (_, changes):
        await asyncio.sleep(0.2)  # about ten probes
        assert changes.seen.empty()


@pytest.mark.parametrize(
    ("marks", "reachable", "due"),
    [
        pytest.param({}, {}, None, id="no mark"),
        pytest.param({U0: 100.0, U1: 50.0}, {}, 60.0, id="the earliest mark"),
        pytest.param({U0: 100.0, U1: 50.0}, {U1: False}, 110.0, id="an unreachable GPU waits for its probe"),
    ],
)
def test_next_recovery(marks, reachable, due):
    policy = HealthPolicy(recovery_s=10)
    book = initial_book([U0, U1])
    for uuid, at in marks.items():
        book = apply_xid(book, uuid, 79, at, policy)
    book = apply_probe(book, {U0: True, U1: True, **reachable}, 0.0, policy)
    assert next_recovery(book, policy) == due
    assert next_recovery(book, HealthPolicy()) is None  # recovery_s 0: marks never expire
