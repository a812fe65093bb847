"""Health through real pynvml over the FAKE NVML: XID events and lost GPUs.

Case matrix: XID on a whole GPU, on a MIG device (by its UUID, or by the GPU's UUID with instance ids), several
XIDs in order, only events after the stream was opened, a wait cancelled mid-way keeps its event, close; a
stream's late free never reaches the next session's set;
a lost GPU is unreachable and comes back after recovery; an unknown UUID is unreachable.
Every wait is bounded by ``asyncio.wait_for``.

The fake's ``nvmlEventSetWait_v2`` blocks as the driver's does (no CPU until its timeout; an XID wakes it).
The REAL plugin process (:func:`tests.fixtures.plugin_process.real_plugin`, also used by ``make bench`` for the idle cost) over the fake
NVML and the fake kubelet: an XID or a lost GPU reaches the kubelet's ``ListAndWatch`` within 1 s.
"""

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.core.gpu import XidEvent
from plugin.nvml import Nvml, NvmlError
from tests.builders.plugin import NAMES
from tests.fakes.kmock import KmockCluster
from tests.fakes.nvml.harness import FakeNvml, fake_nvml_fixture  # noqa: F401 (fixture)
from tests.fixtures.plugin_process import real_plugin

WAIT_S = 5.0


@pytest.fixture
def open_nvml():
    """Opens an ``Nvml`` on the active fake node (after ``fake_nvml(...)``); closes it after the test."""
    opened: list[Nvml] = []

    def open_() -> Nvml:
        nvml = Nvml(event_poll_ms=50)
        nvml.open()
        opened.append(nvml)
        return nvml

    yield open_
    for nvml in opened:
        nvml.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes, so not tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="kvh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kmock_cluster() -> Iterator[KmockCluster]:
    with KmockCluster() as cluster:
        yield cluster


async def next_event(stream) -> XidEvent:
    return await asyncio.wait_for(anext(stream), WAIT_S)


async def test_an_injected_xid_reaches_the_stream(fake_nvml, open_nvml):
    node = fake_nvml("h100x8")
    nvml = open_nvml()
    stream = nvml.xid_events()

    node.inject_xid(node.uuid(5), 79)

    assert await next_event(stream) == XidEvent(uuid=node.uuid(5), xid=79)
    await stream.aclose()


@pytest.mark.parametrize("by_mig_uuid", [True, False], ids=["by MIG UUID", "by GPU UUID and instance ids"])
async def test_an_xid_on_a_mig_device_carries_its_instance_ids(fake_nvml, open_nvml, by_mig_uuid):
    node = fake_nvml("a100x4-mig")
    nvml = open_nvml()
    mig = nvml.discover().gpus[1].mig_instances[2]
    stream = nvml.xid_events()

    if by_mig_uuid:
        node.inject_xid(mig.uuid, 43)
    else:
        node.inject_xid(node.uuid(1), 43, gpu_instance_id=3, compute_instance_id=0)

    assert await next_event(stream) == XidEvent(
        uuid=node.uuid(1), xid=43, gpu_instance_id=3, compute_instance_id=0
    )
    await stream.aclose()


async def test_xids_arrive_in_injection_order(fake_nvml, open_nvml):
    node = fake_nvml("a10x4")
    nvml = open_nvml()
    stream = nvml.xid_events()

    for index, xid in [(0, 13), (3, 48), (0, 79)]:
        node.inject_xid(node.uuid(index), xid)

    got = [await next_event(stream) for _ in range(3)]
    assert [(e.uuid, e.xid) for e in got] == [(node.uuid(0), 13), (node.uuid(3), 48), (node.uuid(0), 79)]
    await stream.aclose()


async def test_closing_nvml_waits_for_a_streams_thread_so_its_late_free_spares_the_next_sessions_set(
    fake_nvml,
):
    """A stream closed without ``aclose`` while its thread waits frees its set when the wait returns. The
    driver hands a freed set's address to the next set created: were that free to land after ``nvmlShutdown``
    and the next session's ``nvmlInit``, it would destroy the next session's set. ``Nvml.close`` ends its
    streams' threads first."""
    fake_nvml("a10x4")
    first = Nvml(event_poll_ms=400)
    first.open()
    old = first.xid_events()
    reader = asyncio.create_task(anext(old))  # starts the waiting thread
    for _ in range(500):  # until the thread is inside nvmlEventSetWait_v2 (it holds the set's lock there)
        if old._lock.locked():
            break
        await asyncio.sleep(0.01)
    old.close()  # the wait in flight keeps the set: the thread frees it
    first.close()
    reader.cancel()
    node = fake_nvml("a10x4")  # the next session, on a new node: its set takes the freed address
    second = Nvml(event_poll_ms=50)
    second.open()
    try:
        stream = second.xid_events()
        await asyncio.sleep(0.6)  # past the first thread's wait: a late free would land by now
        node.inject_xid(node.uuid(0), 79)
        assert await next_event(stream) == XidEvent(uuid=node.uuid(0), xid=79)
        await stream.aclose()
    finally:
        second.close()


async def test_xids_from_before_the_stream_was_opened_are_not_seen(fake_nvml, open_nvml):
    node = fake_nvml("a10x4")
    nvml = open_nvml()
    node.inject_xid(node.uuid(0), 31)
    nvml.discover()  # any NVML call applies the pending line
    stream = nvml.xid_events()

    node.inject_xid(node.uuid(1), 94)

    assert await next_event(stream) == XidEvent(uuid=node.uuid(1), xid=94)
    await stream.aclose()


async def test_a_cancelled_wait_keeps_the_event_for_the_next_read(fake_nvml, open_nvml):
    node = fake_nvml("a10x4")
    nvml = open_nvml()
    stream = nvml.xid_events()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), 0.01)

    node.inject_xid(node.uuid(2), 79)

    assert await next_event(stream) == XidEvent(uuid=node.uuid(2), xid=79)
    await stream.aclose()


async def test_a_closed_stream_ends(fake_nvml, open_nvml):
    fake_nvml("a10x4")
    nvml = open_nvml()
    stream = nvml.xid_events()

    await stream.aclose()

    assert [e async for e in stream] == []


def test_a_lost_gpu_is_unreachable_until_it_recovers(fake_nvml, open_nvml):
    node = fake_nvml("h200x8")
    nvml = open_nvml()
    uuid = node.uuid(4)
    before = nvml.is_reachable(uuid)

    node.lose_gpu(uuid)
    lost = nvml.is_reachable(uuid), nvml.is_reachable(node.uuid(3))
    node.recover_gpu(uuid)

    assert (before, lost, nvml.is_reachable(uuid)) == (True, (False, True), True)


def test_calls_on_a_lost_gpu_raise_nvml_error_with_the_gpu_and_code(fake_nvml, open_nvml):
    node = fake_nvml("h100x8")
    nvml = open_nvml()
    node.lose_gpu(node.uuid(0))

    with pytest.raises(NvmlError, match=node.uuid(0)) as raised:
        nvml.gpu_usage(node.uuid(0))

    assert (raised.value.code, raised.value.uuid) == (15, node.uuid(0))  # NVML_ERROR_GPU_IS_LOST


def test_an_unknown_uuid_is_unreachable(fake_nvml, open_nvml):
    fake_nvml("a10x4")
    nvml = open_nvml()

    assert not nvml.is_reachable("GPU-00000000-0000-0000-0000-000000000000")


def test_asking_before_nvml_is_open_is_an_error(fake_nvml, tmp_path):
    node = fake_nvml("a10x4")
    private = node.private_pynvml(tmp_path / "private")  # its own library: never initialised by other tests

    with pytest.raises(NvmlError, match="not initialised"):
        Nvml(library=private).is_reachable(node.uuid(0))


def gpu_health(devices, uuid: str) -> set[str]:
    return {d.health for d in devices if d.ID.split("::")[0] == uuid}


async def test_the_real_plugin_tells_the_kubelet_of_an_xid_and_a_lost_gpu_within_a_second(
    short_dir: Path, kmock_cluster
) -> None:
    async with real_plugin(short_dir, kmock_cluster, "h200x8") as running:
        node, kubelet = running.node, running.kubelet
        await asyncio.sleep(1.5)  # idle: the health loops are waiting, not just started
        for op, uuid in [("xid 79", node.uuid(2)), ("lost", node.uuid(6))]:
            loop = asyncio.get_running_loop()
            started = loop.time()
            if op == "lost":
                node.lose_gpu(uuid)  # no XID: found by the reachability probe
            else:
                node.inject_xid(uuid, 79)  # wakes the thread blocked in nvmlEventSetWait
            await kubelet.devices_until(NAMES.core, lambda d, u=uuid: gpu_health(d, u) == {"Unhealthy"}, 1.0)
            assert loop.time() - started < 1.0
        devices = kubelet.endpoints[NAMES.core].devices
        assert {u for u in node.uuids if gpu_health(devices, u) != {"Healthy"}} == {
            node.uuid(2),
            node.uuid(6),
        }


def test_the_fakes_event_wait_blocks_without_cpu_and_wakes_on_an_xid(fake_nvml, open_nvml):
    """As the driver's: ``nvmlEventSetWait_v2`` sleeps until its timeout, and an XID line wakes it at once."""
    import threading
    import time

    import pynvml

    node = fake_nvml("a10x4")
    open_nvml()
    event_set = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(
        pynvml.nvmlDeviceGetHandleByIndex(0), pynvml.nvmlEventTypeXidCriticalError, event_set
    )

    status = Path(f"/proc/self/task/{threading.get_native_id()}/status")

    def wakeups() -> int:
        """This thread's voluntary context switches: a count of its sleeps, not a timing that load can skew."""
        line = next(
            line for line in status.read_text().splitlines() if line.startswith("voluntary_ctxt_switches")
        )
        return int(line.split()[1])

    def wait(timeout_ms: int) -> tuple[float, int, int | None]:
        wall, slept = time.monotonic(), wakeups()
        try:
            xid: int | None = int(pynvml.nvmlEventSetWait_v2(event_set, timeout_ms).eventData)
        except pynvml.NVMLError_Timeout:
            xid = None
        return time.monotonic() - wall, wakeups() - slept, xid

    idle_wall, idle_wakeups, idle_xid = wait(600)
    threading.Timer(0.2, node.inject_xid, args=(node.uuid(0), 79)).start()
    woken_wall, _, woken_xid = wait(5000)
    pynvml.nvmlEventSetFree(event_set)

    assert idle_xid is None
    assert 0.55 < idle_wall < 2.0
    assert idle_wakeups < 10  # measured: 1-2; re-reading the control file every 5 ms woke 120 times
    assert woken_xid == 79
    assert woken_wall < 1.0
