"""The per-GPU node files: no tenant can crash, slow down or speed up another through them (issue 11).

Layout (docs/shim.md): ``<node>/tenants/<pod-uid>_<container>/<gpu uuid>.bin`` is one container's record (its
compute budget and its processes' busy spans); a container sees ``<node>`` read-only and only its own
``tenants/<name>`` writable; ``<node>/placed/<gpu uuid>`` is written by the plugin alone and lists the
throttled containers on that GPU. Attacks, with real files, the built shim over the FAKE driver, and a hostile
writer running as its own process:
- truncate, regrow, replace with a symlink to /dev/zero or a FIFO, fill with garbage: the files a tenant can
  write (its own record, and the old shared ``<node>/<uuid>.bin``): a neighbour's shim never maps another
  tenant's file (bounded pread of a regular file only), so it neither crashes (SIGBUS) nor stalls;
- invent neighbours: busy records for containers the plugin never placed count for nothing;
- forge one's own record (busy sibling slots, a huge balance): each process still holds its private bucket
  at the container's share;
- a placed neighbour that lies moves the others by a bounded amount (1.25 x its share + 5 points at most).
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from plugin.core.allocate import container_dir_name
from plugin.core.attribution import ContainerKey, PodRef
from plugin.statedir import AllocationRecord, StateDir
from tests.shim.harness import BUILD, FAKE_GPU_UUID, MIB, TIMEOUT_S, ShimEnv, require_build, results
from vcuda.errors import ContractError
from vcuda.model import GpuUuid
from vcuda.shimfile import (
    NODE_FILE,
    NODE_MAGIC,
    NODE_PLACED_DIR,
    NODE_SLOTS,
    NODE_TENANTS_DIR,
    NODE_VERSION,
    GpuLimit,
    ShimConfig,
    decode_placement,
    encode_config,
    encode_placement,
)

KERNEL_NS = 200_000
FAR = 1 << 62


def _container(tmp_path: Path, node: Path, uid: str, core: int) -> ShimEnv:
    """A container's config and usage paths, and its record directory in the node dir, as the plugin makes."""
    require_build()
    home = tmp_path / uid
    home.mkdir()
    limit = GpuLimit(FAKE_GPU_UUID, 64 * MIB, core, core)
    (home / "vcuda.config").write_bytes(encode_config(ShimConfig(uid, "ns", "pod", "main", (limit,))))
    (node / NODE_TENANTS_DIR / f"{uid}_main").mkdir(parents=True, exist_ok=True)
    extra = {"FAKE_CUDA_KERNEL_NS": str(KERNEL_NS), "VCUDA_NODE_DIR": str(node)}
    return ShimEnv(home / "vcuda.config", home / "usage.bin", extra)


def _place(node: Path, *tenants: tuple[str, int]) -> None:
    (node / NODE_PLACED_DIR).mkdir(parents=True, exist_ok=True)
    (node / NODE_PLACED_DIR / FAKE_GPU_UUID).write_bytes(encode_placement(list(tenants)))


def _busy_record(pid: int = 1, tokens: int = 0) -> bytes:
    """A record claiming every slot busy for ever (what a liar writes)."""
    slot: dict[str, object] = {
        "owner": 7,
        "pid": pid,
        "heartbeat_ns": FAR,
        "open_since": 1,
        "open_until": FAR,
    }
    slot["span_count"] = 1
    slot |= {"span_start": [1] * 16, "span_end": [FAR] * 16}
    header = {"magic": NODE_MAGIC, "version": NODE_VERSION, "size": NODE_FILE.size, "slot_count": NODE_SLOTS}
    return NODE_FILE.pack(header | {"tokens_ns": tokens, "refill_ns": FAR, "slots": [slot] * NODE_SLOTS})


HOSTILE_WRITER = r"""
import os, sys, time
paths, record = sys.argv[1:-1], bytes.fromhex(sys.argv[-1])
i = 0
while True:
    i += 1
    for p in paths:
        try:
            if os.path.isfile(p) and not os.path.islink(p):
                os.truncate(p, 0)  # under anyone who mapped it
            else:
                os.unlink(p) if os.path.lexists(p) else None
            time.sleep(0.001)
            mode = i % 5
            if mode == 0:  # zeros: a file a shim would adopt and map
                with open(p, "ab") as f:
                    f.truncate(65536)
            elif mode == 1:
                with open(p, "wb") as f:
                    f.write(os.urandom(4096))
            elif mode == 2:
                os.symlink("/dev/zero", p + ".x"); os.replace(p + ".x", p)
            elif mode == 3:
                os.mkfifo(p + ".x"); os.replace(p + ".x", p)
            else:
                with open(p, "wb") as f:
                    f.write(record); f.truncate(1 << 30)
        except OSError:
            pass
    time.sleep(0.02)
"""


@contextmanager
def _hostile_writer(paths: list[Path], record: bytes) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-c", HOSTILE_WRITER, *map(str, paths), record.hex()])
    try:
        yield
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT_S)


def _run(env: ShimEnv, seconds: float = 1.5) -> tuple[int, float]:
    out = subprocess.run(
        [str(BUILD / "compute_app"), "init", "ctx", "0", "run", str(seconds)],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    runs = [w for w in results(out.stdout) if w[0] == "run"]
    share = 100.0 * int(runs[0][1]) * KERNEL_NS / 1e9 / float(runs[0][2]) if runs else -1.0
    return out.returncode, share


def test_a_tenant_that_truncates_and_replaces_the_files_it_can_write_cannot_crash_a_neighbour(tmp_path):
    node = tmp_path / "node"
    victim = _container(tmp_path, node, "victim", 30)
    _container(tmp_path, node, "attacker", 30)
    _place(node, ("victim_main", 30), ("attacker_main", 30))
    own = node / NODE_TENANTS_DIR / "attacker_main" / f"{FAKE_GPU_UUID}.bin"
    old_shared = node / f"{FAKE_GPU_UUID}.bin"  # the single shared file of the previous layout
    with _hostile_writer([own, old_shared], _busy_record()):
        code, share = _run(victim)
    assert code == 0, f"the victim died with {code} (-7 = SIGBUS)"
    assert 15 <= share <= 50


def test_records_of_containers_the_plugin_never_placed_count_for_nothing(tmp_path):
    node = tmp_path / "node"
    victim = _container(tmp_path, node, "victim", 30)
    _place(node, ("victim_main", 30))
    for ghost in range(20):
        folder = node / NODE_TENANTS_DIR / f"ghost{ghost}_main"
        folder.mkdir(parents=True)
        (folder / f"{FAKE_GPU_UUID}.bin").write_bytes(_busy_record())
    code, share = _run(victim)
    assert code == 0
    assert 15 <= share <= 42, f"{share:.1f} % at a 30 % limit with 20 invented neighbours"


def test_a_placed_neighbour_that_lies_moves_its_neighbour_by_a_bounded_amount(tmp_path):
    node = tmp_path / "node"
    victim = _container(tmp_path, node, "victim", 30)
    _container(tmp_path, node, "liar", 10)
    _place(node, ("victim_main", 30), ("liar_main", 10))
    (node / NODE_TENANTS_DIR / "liar_main" / f"{FAKE_GPU_UUID}.bin").write_bytes(_busy_record())
    code, share = _run(victim)
    assert code == 0
    assert 15 <= share <= 30 + 1.25 * 10 + 5 + 5, f"{share:.1f} % at a 30 % limit next to a 10 % liar"


def test_a_tenant_forging_its_own_record_stays_at_its_share(tmp_path):
    """Busy sibling slots (alive pids) and a huge balance written into its own record while it runs."""
    node = tmp_path / "node"
    cheat = _container(tmp_path, node, "cheat", 30)
    _place(node, ("cheat_main", 30))
    record = node / NODE_TENANTS_DIR / "cheat_main" / f"{FAKE_GPU_UUID}.bin"
    forged = _busy_record(pid=os.getpid(), tokens=1 << 60)
    forger = (
        "import sys, time\n"
        "p, data = sys.argv[1], bytes.fromhex(sys.argv[2])\n"
        "while True:\n"
        "    try:\n"
        "        with open(p, 'r+b') as f: f.write(data)\n"
        "    except OSError: pass\n"
        "    time.sleep(0.001)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", forger, str(record), forged.hex()])
    try:
        code, share = _run(cheat)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT_S)
    assert code == 0
    assert share <= 45, f"{share:.1f} % at a 30 % limit by forging its own record"


def test_the_plugin_lists_only_throttled_containers_and_gives_each_its_own_record_dir(tmp_path):
    state = StateDir(tmp_path / "state")
    state.prepare()
    node = tmp_path / "state" / "node"
    assert node.stat().st_mode & 0o7777 == 0o755
    pod = PodRef("ns", "p", "uid-1")
    for container, core in (("a", 30), ("whole", 100)):
        name = container_dir_name(pod.uid, container)
        limit = GpuLimit(GpuUuid(FAKE_GPU_UUID), 64 * MIB, core, core)
        record = AllocationRecord(name, ("d",), ContainerKey(pod, container))
        state.write_container(record, ShimConfig(pod.uid, "ns", "p", container, (limit,)))
        assert (node / NODE_TENANTS_DIR / name).is_dir()
    listed = decode_placement((node / NODE_PLACED_DIR / FAKE_GPU_UUID).read_bytes())
    assert listed == (("uid-1_a", 30),)
    state.remove(["uid-1_a"])
    assert not (node / NODE_TENANTS_DIR / "uid-1_a").exists()
    assert not (node / NODE_PLACED_DIR / FAKE_GPU_UUID).exists()


def test_placement_entries_are_validated_both_ways():
    assert decode_placement(encode_placement([("uid-1_main", 30)])) == (("uid-1_main", 30),)
    for bad in (("../etc", 30), ("a b", 30), ("ok", 0), ("ok", 101)):
        with pytest.raises(ContractError):
            encode_placement([bad])
    for junk in (b"", b"VCUDAPLC 1\nx 30\n", b"VCUDAPLC 2\nno-core\n", b"\xff"):
        with pytest.raises(ContractError):
            decode_placement(junk)
