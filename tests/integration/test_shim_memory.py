"""Memory limit over the FAKE driver: every allocation path counted, refusals, mem-info, shared limits.

Cases: each allocation path (plain, pitch, managed, async, pool, VMM create, 2D/3D array, mipmap) is
refused past the limit and counted back on free; refusals reach the usage file; free memory is the smaller
of the limit's room and the physical free memory; two processes of a container share one limit; a
process killed while holding memory, or in the middle of an allocation, gives its usage back; 10,000 live
allocations; NVML (as pynvml and nvidia-smi use it) reports the limit.
"""

import os
import signal
import subprocess
import sys

import pytest

from tests.shim.harness import (
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    FAKE_DIR,
    MIB,
    SHIM,
    codes,
    read_until,
    results,
    run_app,
    shim_env,
    start_app,
    wait_for,
)

# (command words for one allocation, its size in MiB as the shim counts it)
PATHS = [
    pytest.param(["alloc", "48"], 48, id="cuMemAlloc"),
    pytest.param(["pitch", "16384", "3072"], 48, id="cuMemAllocPitch"),
    pytest.param(["managed", "48"], 48, id="cuMemAllocManaged"),
    pytest.param(["async", "48"], 48, id="cuMemAllocAsync"),
    pytest.param(["pool", "48"], 48, id="cuMemAllocFromPoolAsync per-thread stream"),
    pytest.param(["create", "48"], 48, id="cuMemCreate"),
    pytest.param(["array", "4096", "3072"], 48, id="cuArrayCreate"),
    pytest.param(["array3d", "1024", "1024", "12"], 48, id="cuArray3DCreate"),
    pytest.param(["mipmap", "4096", "3072", "1"], 48, id="cuMipmappedArrayCreate"),
]


@pytest.mark.parametrize(("words", "size_mib"), PATHS)
def test_every_allocation_path_is_refused_past_the_limit_and_counted_back_on_free(tmp_path, words, size_mib):
    env = shim_env(tmp_path, memory_mib=size_mib * 3 // 2)
    out = run_app(env, ["init", "ctx", "0", *words, *words, "free", *words, "info"])
    assert codes(out.stdout, words[0]) == [CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS], out.stderr
    info = next(w for w in results(out.stdout) if w[0] == "info")
    assert int(info[2]) == (size_mib * 3 // 2 - size_mib) * MIB


def test_a_refused_allocation_is_counted_in_the_usage_file(tmp_path):
    env = shim_env(tmp_path, memory_mib=100)
    with start_app(env, ["init", "ctx", "0", "alloc", "64", "alloc", "64", "alloc", "64", "pause"]) as proc:
        read_until(proc, "paused")
        (me,) = env.processes()
        assert me.pid == proc.pid
        assert (me.gpus[0].memory_used, me.gpus[0].refused_allocs) == (64 * MIB, 2)


def test_free_memory_is_the_smaller_of_the_limits_room_and_physical_free_memory(tmp_path):
    env = shim_env(tmp_path, memory_mib=1024, FAKE_CUDA_MEM_BYTES=str(256 * MIB))
    out = run_app(env, ["init", "ctx", "0", "info", "alloc", "64", "info"])
    infos = [w for w in results(out.stdout) if w[0] == "info"]
    assert infos == [
        ["info", "0", str(256 * MIB), str(1024 * MIB)],
        ["info", "0", str(192 * MIB), str(1024 * MIB)],
    ]


def test_two_processes_of_a_container_share_one_limit(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    with start_app(env, ["init", "ctx", "0", "alloc", "1024", "pause"]) as first:
        read_until(first, "paused")
        out = run_app(env, ["init", "ctx", "0", "alloc", "1024", "alloc", "512", "info"])
        assert codes(out.stdout, "alloc") == [CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS]
        assert first.stdin is not None
        first.stdin.write("\n")
        first.stdin.flush()
        first.wait(timeout=30)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1536"])
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS]
    assert env.processes() == ()


def test_the_memory_of_a_killed_process_is_reclaimed(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    with start_app(env, ["init", "ctx", "0", "alloc", "1024", "pause"]) as victim:
        read_until(victim, "paused")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1536"])
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS]


def test_a_process_killed_in_the_middle_of_an_allocation_gives_its_reservation_back(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    slow = shim_env(tmp_path, memory_mib=1536, FAKE_CUDA_ALLOC_SLEEP_MS="30000")
    with start_app(slow, ["init", "ctx", "0", "alloc", "1024"]) as victim:
        wait_for(
            lambda: any(p.gpus[0].memory_used for p in env.processes()), "the reservation in the usage file"
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1536", "pause"])
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS]


def test_ten_thousand_live_allocations_are_tracked_and_all_freed(tmp_path):
    env = shim_env(tmp_path, memory_mib=1024)
    out = run_app(env, ["init", "ctx", "0", "bench_alloc", "1000", "10000", "freeall", "info"])
    assert codes(out.stdout, "freeall") == [0]
    info = next(w for w in results(out.stdout) if w[0] == "info")
    assert int(info[2]) == 1024 * MIB


def test_nvml_memory_info_reports_the_limit_as_nvidia_smi_and_pynvml_see_it(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    script = (
        "import pynvml as n; n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0); m = n.nvmlDeviceGetMemoryInfo(h);"
        "v = n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2); print(m.total, m.free, m.used, v.total, v.free)"
    )
    with start_app(env, ["init", "ctx", "0", "alloc", "512", "pause"]) as holder:
        read_until(holder, "paused")
        environ = env.environ() | {"LD_LIBRARY_PATH": str(FAKE_DIR), "LD_PRELOAD": str(SHIM)}
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    total, free, used, total2, free2 = (int(x) for x in out.stdout.split())
    assert (total, free, used) == (1536 * MIB, 1024 * MIB, 512 * MIB), out.stderr
    assert (total2, free2) == (1536 * MIB, 1024 * MIB)
    assert os.path.exists(env.usage)
