"""XidTally: XID counts per (GPU, code) and health from the monitor's map or from set_healthy."""

from plugin.core.gpu import XidEvent
from plugin.metrics.sources import XidTally
from vcuda.model import GpuUuid

A, B = GpuUuid("GPU-a"), GpuUuid("GPU-b")


def test_xids_are_counted_per_gpu_and_code():
    tally = XidTally()
    for uuid, xid in ((A, 79), (A, 79), (A, 13), (B, 79)):
        tally.record(XidEvent(uuid, xid))
    assert tally.xid_counts() == {(A, 79): 2, (A, 13): 1, (B, 79): 1}


def test_health_follows_the_monitor_map_when_given():
    monitor = {A: True, B: False}
    tally = XidTally(healthy=lambda: monitor)
    assert tally.healthy() == {A: True, B: False}
    monitor[B] = True
    assert tally.healthy() == {A: True, B: True}


def test_health_can_be_set_directly():
    tally = XidTally()
    tally.set_healthy(A, False)
    assert tally.healthy() == {A: False}
