"""A tenant points the files the node agent reads (its usage directory is writable in the container) at
something hostile: the agent refuses each one with a clear log line, keeps serving, and its memory stays bounded.

Attacks, each in its own container directory, all at once: ``usage.bin`` as a symlink to ``/dev/zero``, a
symlink to a secret file outside the state directory, a FIFO with no writer, a directory, a Unix socket, a
character device node, a huge (sparse) file with a valid header, a truncated file. The agent never even opens
a FIFO or a device node (some devices act on open: ``/dev/watchdog``); inotify, which reports every open of
a path, shows it. The real exporter (``plugin.metrics.exporter.serve``)
runs in a child process with its address space capped at 1 GiB and is scraped over HTTP, so a reader that
followed ``/dev/zero`` or read the whole huge file would die or hang instead of answering. A well-behaved
neighbour's counters are still exported.
"""

import ctypes
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.node import GIB, FakeContainer, FakeNodeFs, FakeSlot, uid, usage_bytes
from tests.sim.node import free_port
from vcuda.names import USAGE_FILE_NAME
from vcuda.shimfile import USAGE_FILE
from vcuda.tenantfile import TenantFileError, read_tenant_file

GPU = "GPU-0"
GOOD = FakeContainer(
    uid(1), "team-a", "good", "main", [(GPU, 4 * GIB, 50, 50)], [FakeSlot(7, [(GIB, 3, 0, 0)])]
)
SECRET = b"root:$6$secret-hash:19000:0:99999:7:::\n"


def _can_mknod() -> bool:
    """Root (or CAP_MKNOD) on this machine, as a container's root keeps it by default."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            os.mknod(Path(tmp, "n"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            return False
    return True


# attack -> the reason its log line must give (plant() below makes each usage.bin)
ATTACKS = {
    "zero": "a symbolic link (not followed)",
    "secret": "a symbolic link (not followed)",
    "fifo": "a FIFO, not a regular file",
    "dir": "a directory, not a regular file",
    "sock": "a socket, not a regular file",
    "huge": f"the layout holds {USAGE_FILE.size}",
    "short": f"expected {USAGE_FILE.size}",
}
if _can_mknod():
    ATTACKS["dev"] = "a character device, not a regular file"

EXPORTER = """
import logging, resource, sys, time
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from plugin.metrics.exporter import NodeCollector, serve
serve(int(sys.argv[2]), NodeCollector(node="n1", state_dir=Path(sys.argv[1])), addr="127.0.0.1")
print("ready", flush=True)
time.sleep(120)
"""


def pod_uid(name: str) -> str:
    return uid(100 + list(ATTACKS).index(name))


def plant(fs: FakeNodeFs, name: str, tmp: Path) -> Path:
    container = FakeContainer(pod_uid(name), "evil", name, "main", [(GPU, GIB, 10, 10)])
    fs.add_container(container)
    usage = fs.state_dir / "containers" / container.dir_name / "usage" / USAGE_FILE_NAME
    if name == "zero":
        usage.symlink_to("/dev/zero")
    elif name == "secret":
        (tmp / "shadow").write_bytes(SECRET)
        usage.symlink_to(tmp / "shadow")
    elif name == "fifo":
        os.mkfifo(usage)
    elif name == "dir":
        usage.mkdir()
    elif name == "sock":
        short = Path(tempfile.mkdtemp(dir="/tmp")) / "s"  # bind() takes at most 107 bytes of path
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(short))  # a socket file; nobody listens
        short.rename(usage)
        short.parent.rmdir()
    elif name == "dev":
        os.mknod(usage, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers; a container may mknod
    elif name == "huge":
        with usage.open("wb") as f:
            f.write(usage_bytes(1, [FakeSlot(1, [(0, 0, 0, 0)])]))  # a valid header, then 4 GiB of hole
            f.truncate(4 * GIB)
    elif name == "short":
        usage.write_bytes(usage_bytes(1, [])[: USAGE_FILE.size // 2])
    return usage


@pytest.fixture
def hostile_node(tmp_path: Path) -> FakeNodeFs:
    fs = FakeNodeFs(tmp_path / "node")
    fs.add_container(GOOD)
    for name in ATTACKS:
        plant(fs, name, tmp_path)
    return fs


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_the_exporter_refuses_every_hostile_usage_file_and_keeps_serving(hostile_node: FakeNodeFs) -> None:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", EXPORTER, str(hostile_node.state_dir), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        first, second = scrape(port), scrape(port)  # twice: still serving, and nothing logged again
        took = time.monotonic() - started
    finally:
        child.kill()
        _, log = child.communicate(timeout=10)
    assert took < 5.0
    for metrics in (first, second):
        assert metrics["kube_vgpu_exporter_unreadable_files"] == [({"node": "n1"}, float(len(ATTACKS)))]
        pods = {labels["pod"] for labels, _ in metrics["kube_vgpu_container_memory_limit_bytes"]}
        assert pods == {"good", *ATTACKS}  # every container's limits are still exported
        shim = {labels["pod"]: v for labels, v in metrics["kube_vgpu_container_shim_memory_used_bytes"]}
        assert shim["good"] == GIB
        assert all(shim[name] == 0 for name in ATTACKS)
    lines = [line for line in log.splitlines() if "usage file unreadable" in line]
    assert len(lines) == len(ATTACKS), log  # one line per file, not one per scrape
    for name, reason in ATTACKS.items():
        assert any(f"/{pod_uid(name)}_main/" in line and reason in line for line in lines), (name, log)
    assert "secret-hash" not in log


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_read_tenant_file_refuses_without_blocking_or_reading_past_the_layout(
    name: str, tmp_path: Path
) -> None:
    fs = FakeNodeFs(tmp_path / "node")
    usage = plant(fs, name, tmp_path)
    started = time.monotonic()
    if name == "short":  # a regular file: read, and the decoder refuses it
        assert len(read_tenant_file(usage, USAGE_FILE.size)) == USAGE_FILE.size // 2
    else:
        with pytest.raises(TenantFileError, match=re.escape(ATTACKS[name])):
            read_tenant_file(usage, USAGE_FILE.size)
    assert time.monotonic() - started < 1.0


def test_read_tenant_file_reads_a_regular_file_and_lets_a_missing_one_pass(tmp_path: Path) -> None:
    good = tmp_path / "usage.bin"
    good.write_bytes(b"x" * 100)
    assert read_tenant_file(good, 100) == b"x" * 100
    good.write_bytes(b"x" * 101)
    with pytest.raises(TenantFileError, match="101 bytes, the layout holds 100"):
        read_tenant_file(good, 100)
    with pytest.raises(FileNotFoundError):
        read_tenant_file(tmp_path / "absent", 100)


def test_allocate_again_never_writes_through_a_name_the_tenant_planted(tmp_path: Path) -> None:
    """The plugin (root) writes the empty usage file into the tenant's usage directory when it is missing
    (an Allocate for a container whose directory exists). The tenant deleted it and planted the temporary
    names a writer might use as symlinks to a file it wants overwritten and made world-writable."""
    from plugin.core.attribution import ContainerKey, PodRef
    from plugin.statedir import AllocationRecord, StateDir
    from vcuda.model import GpuUuid
    from vcuda.shimfile import GpuLimit, ShimConfig, decode_usage

    state = StateDir(tmp_path / "state")
    state.prepare()
    config = ShimConfig(uid(1), "evil", "p", "main", (GpuLimit(GpuUuid(GPU), GIB, 10, 10),))
    record = AllocationRecord(
        f"{uid(1)}_main", ("GPU-0::0",), ContainerKey(PodRef("evil", "p", uid(1)), "main")
    )
    state.write_container(record, config)
    usage_dir = state.containers / record.dir_name / "usage"
    victim = tmp_path / "shadow"
    victim.write_bytes(SECRET)
    victim.chmod(0o600)
    (usage_dir / USAGE_FILE_NAME).unlink()
    for name in (f"{USAGE_FILE_NAME}.tmp", f".{USAGE_FILE_NAME}.tmp"):
        (usage_dir / name).symlink_to(victim)

    state.write_container(record, config)

    assert victim.read_bytes() == SECRET
    assert victim.stat().st_mode & 0o777 == 0o600
    usage = usage_dir / USAGE_FILE_NAME
    assert usage.is_file()
    assert not usage.is_symlink()
    assert decode_usage(read_tenant_file(usage, USAGE_FILE.size)) == ()
    assert usage.stat().st_mode & 0o777 == 0o666


def opened_names(directory: Path, action: Callable[[], object]) -> list[bytes]:
    """Names in ``directory`` that were opened (inotify ``IN_OPEN``) while ``action`` ran."""
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert watch >= 0
    try:
        assert libc.inotify_add_watch(watch, bytes(directory), 0x20) >= 0  # IN_OPEN
        action()
        try:
            data = os.read(watch, 65536)
        except BlockingIOError:
            return []
    finally:
        os.close(watch)
    names, at = [], 0
    while at < len(data):
        _, _, _, size = struct.unpack_from("iIII", data, at)
        names.append(data[at + 16 : at + 16 + size].rstrip(b"\0"))
        at += 16 + size
    return names


@pytest.mark.parametrize("name", sorted({"fifo", "dev", "sock", "dir"} & ATTACKS.keys()))
def test_the_agent_never_opens_a_fifo_or_device_a_tenant_planted(name: str, tmp_path: Path) -> None:
    usage = plant(FakeNodeFs(tmp_path / "node"), name, tmp_path)

    def read() -> None:
        with pytest.raises(TenantFileError):
            read_tenant_file(usage, USAGE_FILE.size)

    assert opened_names(usage.parent, read) == []


def test_a_regular_file_is_opened_and_read(tmp_path: Path) -> None:
    usage = tmp_path / USAGE_FILE_NAME
    usage.write_bytes(usage_bytes(1, []))
    assert opened_names(tmp_path, lambda: read_tenant_file(usage, USAGE_FILE.size)) == [
        USAGE_FILE_NAME.encode()
    ]
