"""The MPS supervisor (plugin.mps) against control programs that misbehave the way a broken node's does."""

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from plugin.mps import MpsGpu, MpsShm, MpsSupervisor, default_shm_size

FAKE_SMI = Path(__file__).parents[2] / "fakes" / "nvidia-smi"

# `-d` succeeds (the real one forks and returns 0 before the daemon has done anything), but the daemon dies
# at once (a GPU in the wrong compute mode, a missing library): every command afterwards finds no daemon.
DIES_AT_ONCE = """#!/bin/sh
[ "$1" = "-d" ] && exit 0
cat >/dev/null
echo "Cannot find MPS control daemon process" >&2
exit 1
"""


async def test_a_daemon_that_dies_right_after_each_start_is_restarted_with_a_growing_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = tmp_path / "nvidia-cuda-mps-control"
    control.write_text(DIES_AT_ONCE)
    control.chmod(0o755)
    shutil.copy(FAKE_SMI, tmp_path / "nvidia-smi")  # the compute mode switches: only the daemon dies
    supervisor = MpsSupervisor(
        [MpsGpu("GPU-0", 50, 1024)], control, tmp_path / "mps", check_s=0.0, max_backoff_s=8.0
    )
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def counted_sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 6:
            raise asyncio.CancelledError
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", counted_sleep)
    with pytest.raises(asyncio.CancelledError):
        await supervisor._supervise(supervisor._gpus[0])
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0], "a start that never answers is a failure, not a success"
    assert supervisor.starts["GPU-0"] == 6


async def test_a_gpu_that_cannot_be_made_exclusive_gets_no_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    monkeypatch.setenv("FAKE_NVIDIA_SMI_DENY", "1")
    control = tmp_path / "nvidia-cuda-mps-control"
    shutil.copy(Path(__file__).parents[2] / "fakes" / "mps_control.py", control)
    shutil.copy(FAKE_SMI, tmp_path / "nvidia-smi")
    supervisor = MpsSupervisor([MpsGpu("GPU-0", 50, 1024)], control, tmp_path / "mps")
    assert not await supervisor._start(supervisor._gpus[0])
    assert "-d" not in log.read_text(), (
        "a client of a shared, non-exclusive GPU could leave MPS for the bare GPU"
    )


class FakeMounter:
    """Stands for mount(8)/umount(8): records each call; ``refuse`` fails every mount as an unprivileged
    container's does (EPERM); ``mounted`` starts with what a previous plugin left mounted (real mounts
    stack: one unmount per mount)."""

    def __init__(self, refuse: bool = False, mounted: list[Path] | None = None) -> None:
        self.refuse = refuse
        self.stack = list(mounted or [])
        self.calls: list[tuple[str, Path, tuple[str, ...]]] = []

    def mounted(self, path: Path) -> bool:
        return path in self.stack

    def mount_tmpfs(self, path: Path, options: Sequence[str]) -> None:
        self.calls.append(("mount", path, tuple(options)))
        if self.refuse:
            raise PermissionError(1, "mount: only root can do that")
        self.stack.append(path)

    def unmount(self, path: Path) -> None:
        self.calls.append(("umount", path, ()))
        self.stack.remove(path)


async def run_until_ready_then_stop(supervisor: MpsSupervisor) -> None:
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(supervisor.ready.wait(), timeout=20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def mps_supervisor(tmp_path: Path, mounter: FakeMounter) -> tuple[MpsSupervisor, Path]:
    control = tmp_path / "nvidia-cuda-mps-control"
    shutil.copy(Path(__file__).parents[2] / "fakes" / "mps_control.py", control)
    shutil.copy(FAKE_SMI, tmp_path / "nvidia-smi")
    shm = tmp_path / "mps" / "shm"
    shm.mkdir(parents=True)
    (shm / "left-by-a-tenant").write_bytes(b"\x7fELF setuid")  # a previous run's leftover, or a plant
    (shm / "dir").mkdir()
    supervisor = MpsSupervisor(
        [MpsGpu("GPU-0", 50, 1024)], control, tmp_path / "mps", shm=MpsShm(shm, "8g", mounter)
    )
    return supervisor, shm


async def test_the_mps_shared_memory_is_a_fresh_bounded_noexec_tmpfs_unmounted_when_the_daemons_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_LOG", str(tmp_path / "calls.log"))
    shm = tmp_path / "mps" / "shm"
    mounter = FakeMounter(mounted=[shm])  # a SIGKILLed plugin's tmpfs, still mounted on the host
    supervisor, shm = mps_supervisor(tmp_path, mounter)
    await run_until_ready_then_stop(supervisor)
    options = ("rw", "nosuid", "nodev", "noexec", "relatime", "size=8g")
    assert mounter.calls == [("umount", shm, ()), ("mount", shm, options), ("umount", shm, ())]
    assert mounter.stack == []
    assert list(shm.iterdir()) == []


async def test_a_refused_mount_leaves_the_plain_directory_emptied_before_and_after_the_daemons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAKE_MPS_LOG", str(tmp_path / "calls.log"))
    mounter = FakeMounter(refuse=True)
    supervisor, shm = mps_supervisor(tmp_path, mounter)
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(supervisor.ready.wait(), timeout=20)
    assert list(shm.iterdir()) == []  # nothing a tenant left is there for the next clients
    assert "is not a tmpfs" in caplog.text
    (shm / "segment").write_bytes(b"x")  # what the daemon and its clients wrote
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(shm.iterdir()) == []
    assert [c[0] for c in mounter.calls] == ["mount"]


@pytest.mark.parametrize(
    ("meminfo", "size"),
    [
        ("MemTotal:       131072000 kB\nMemFree: 1 kB\n", "65536000k"),
        ("MemFree: 1 kB\n", "65536k"),
        ("MemTotal: lots kB\n", "65536k"),
        ("", "65536k"),
    ],
)
def test_the_default_size_is_half_the_nodes_memory_as_nvidias(meminfo: str, size: str) -> None:
    assert default_shm_size(meminfo) == size
