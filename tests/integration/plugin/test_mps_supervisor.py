"""The MPS supervisor (plugin.mps) against control programs that misbehave the way a broken node's does."""

import asyncio
import shutil
from pathlib import Path

import pytest

from plugin.mps import MpsGpu, MpsSupervisor

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
