"""Usage slots and the usage-file lock survive what real processes do: fork, exec, zombies, SIGSTOP, kill -9.

A slot is alive while its process holds an open-file-description lock on it (dropped by the kernel at exit,
kill -9, even as an unreaped zombie, and at exec); the lock word is taken over from a dead, zombie or stopped
owner after a bounded wait. The old shim kept the slots (and charges) of exec'd and zombie processes, and spun
forever behind a stopped or zombie lock holder.
"""

import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.shim.harness import (
    BUILD,
    CUDA_ERROR_NOT_INITIALIZED,
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    ShimEnv,
    codes,
    read_until,
    run_app,
    shim_env,
    start_app,
    wait_for,
)
from vcuda.shimfile import USAGE_FILE, USAGE_LOCK_BYTES

MAX_PROCS = 64
APP = "app_direct"  # linked to the driver: no lookup path involved, only slots and locks
OK, OOM = CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _hold_lock_as(env: ShimEnv, pid: int) -> None:
    """Writes the usage file's lock word as if `pid` held the lock (what a process stopped or killed inside
    the few-instruction critical section leaves behind)."""
    with env.usage.open("r+b") as f:
        f.seek(USAGE_FILE.size - USAGE_LOCK_BYTES)
        f.write(struct.pack("<Q", pid << 8))


def test_an_execd_process_does_not_keep_the_charge_of_its_old_image(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    out = run_app(
        env, ["init", "ctx", "0", "alloc", "1024", "exec", "init", "ctx", "0", "alloc", "1024"], app=APP
    )
    assert codes(out.stdout, "alloc") == [OK, OK], out.stderr


def test_a_forked_child_has_its_own_slot_and_its_exit_keeps_the_parents_charge(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    words = ["init", "ctx", "0", "alloc", "1024", "forkalloc", "256", "alloc", "512", "alloc", "1"]
    out = run_app(env, words, app=APP)
    assert codes(out.stdout, "child") == [OK]
    assert codes(out.stdout, "alloc") == [OK, OK, OOM], out.stderr


def test_a_zombie_child_does_not_keep_its_charge(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1024", "forkzombie", "512", "alloc", "512"], app=APP)
    assert codes(out.stdout, "child") == [OK]
    assert codes(out.stdout, "alloc") == [OK, OK], out.stderr


def test_a_child_forked_while_other_threads_allocate_and_launch_never_hangs_on_a_shim_lock(tmp_path):
    # Three threads allocate, free and launch (30 % limit: checkpoints take the device mutex) while the main
    # thread forks 60 times; each child frees, allocates and launches under a 3 s alarm. A lock another thread
    # held at the fork is never released in the child (only the forking thread exists there): the shim without
    # fork handlers left about 15 % of the children hanging on its allocation-table lock.
    env = shim_env(tmp_path, memory_mib=1024, core=30)
    out = run_app(env, ["init", "ctx", "0", "forkbusy", "60"], app=APP)
    assert codes(out.stdout, "forkbusy") == [0], out.stderr


@pytest.mark.parametrize("holder_fate", ["stopped", "zombie", "killed"])
def test_an_allocation_never_waits_long_behind_a_lock_holder_that_cannot_let_go(tmp_path, holder_fate):
    env = shim_env(tmp_path, memory_mib=1536)
    with start_app(env, ["init", "ctx", "0", "alloc", "512", "pause"], app=APP) as holder:
        read_until(holder, "paused")
        if holder_fate == "stopped":
            holder.send_signal(signal.SIGSTOP)
            wait_for(lambda: _state(holder.pid) == "T", "the holder to stop")
        else:
            holder.send_signal(signal.SIGKILL)
            if holder_fate == "zombie":  # not reaped: the pid stays, as a zombie
                wait_for(lambda: _state(holder.pid) == "Z", "the holder to become a zombie")
            else:
                holder.wait(timeout=30)
        _hold_lock_as(env, holder.pid)
        started = time.monotonic()
        out = run_app(env, ["init", "ctx", "0", "alloc", "1024", "alloc", "1"], app=APP)
        assert time.monotonic() - started < 5
        # A stopped holder is alive and keeps its 512 MiB; a dead one (zombie or reaped) gives them back.
        assert codes(out.stdout, "alloc") == [OK, OOM if holder_fate == "stopped" else OK], out.stderr
        if holder_fate == "stopped":
            holder.send_signal(signal.SIGCONT)


def test_processes_killed_at_random_points_of_threaded_allocations_leave_nothing_charged(tmp_path):
    env = shim_env(tmp_path, memory_mib=64)
    for delay_ms in (3, 11, 23, 37, 51):  # lands inside lock, reserve, driver call, table update, free...
        with start_app(env, ["init", "ctx", "0", "threads", "4", "10000000", "16"], app=APP) as victim:
            time.sleep(delay_ms / 1000)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
    out = run_app(env, ["init", "ctx", "0", "alloc", "64", "info"], app=APP)
    assert codes(out.stdout, "alloc") == [OK], out.stderr


def test_the_65th_process_fails_clearly_while_64_live_and_starts_once_they_are_zombies(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    procs = [
        subprocess.Popen(
            [str(BUILD / APP), "init", "ctx", "0", "alloc", "1", "pause"],
            env=env.environ(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(MAX_PROCS)
    ]
    try:
        for proc in procs:
            read_until(proc, "paused")
        full = run_app(env, ["init"], app=APP)
        assert codes(full.stdout, "init") == [CUDA_ERROR_NOT_INITIALIZED]
        assert f"{MAX_PROCS} live CUDA processes in the container already" in full.stderr
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)  # not reaped: 64 zombies
        wait_for(lambda: all(_state(p.pid) == "Z" for p in procs), "64 zombies")
        out = run_app(env, ["init", "ctx", "0", "alloc", "1536"], app=APP)
        assert codes(out.stdout, "init") == [OK], out.stderr
        assert codes(out.stdout, "alloc") == [OK]
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate(timeout=30)
