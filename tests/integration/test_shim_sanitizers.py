"""The shim is clean under AddressSanitizer, ThreadSanitizer and valgrind memcheck (workloads kept short).

The mixed workload covers every allocation kind, VMM map/release/unmap, a primary-context reset and four
threads of alloc/free; ThreadSanitizer runs the threads over the LIFO fake driver.
"""

import shutil
import subprocess

import pytest

from tests.shim.harness import BUILD, SHIM, codes, run_app, shim_env

WORKLOAD = [
    "init", "ctx", "0", "alloc", "8", "async", "8", "create", "8", "array", "256", "256", "mipmap", "256", "256", "3",
    "alloc", "4096", "info", "total", "0", "launch", "3000", "launch_ptsz", "10", "graph", "10", "bench_alloc",
    "2000", "2000", "freeall", "vmm", "8", "vrelease", "vunmap", "reset", "0", "ctx", "0", "threads", "4", "500", "1",
]  # fmt: skip
THREADED = [
    "init",
    "ctx",
    "0",
    "threads",
    "4",
    "3000",
    "16",
    "ctxcreate",
    "0",
    "threads",
    "2",
    "1000",
    "16",
    "info",
]


def _runtime(name: str) -> str:
    return subprocess.run(
        ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def test_the_shim_is_clean_under_address_sanitizer(tmp_path):
    libasan = _runtime("libasan.so")
    env = shim_env(tmp_path, memory_mib=1024, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=66")
    out = run_app(
        env, WORKLOAD, app="asan/app_runtime", preload=f"{libasan} {BUILD / 'asan' / 'libvcuda.so'}"
    )
    assert "AddressSanitizer" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr
    assert codes(out.stdout, "alloc") == [0, 2]


def test_threads_allocating_and_freeing_are_clean_under_thread_sanitizer(tmp_path):
    # libtsan first: the shim's dlsym resolves RTLD_NEXT relative to itself (docs/shim.md, Not covered).
    env = shim_env(tmp_path, memory_mib=64, FAKE_CUDA_FREE_YIELD="1", TSAN_OPTIONS="exitcode=66")
    out = run_app(
        env,
        THREADED,
        app="tsan/app_runtime",
        preload=f"{_runtime('libtsan.so')} {BUILD / 'tsan' / 'libvcuda.so'}",
    )
    assert "ThreadSanitizer" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr
    assert codes(out.stdout, "threads") == [0, 0]
    assert codes(out.stdout, "info") == [0]


def test_forks_while_threads_allocate_and_launch_are_clean_under_thread_sanitizer(tmp_path):
    # The fork handlers take and release every shim lock around fork (init.c); under a 30 % limit the
    # threads also hold the device mutexes. No race report, and no child hangs.
    env = shim_env(tmp_path, memory_mib=64, core=30, TSAN_OPTIONS="exitcode=66")
    out = run_app(
        env,
        ["init", "ctx", "0", "forkbusy", "10"],
        app="tsan/app_runtime",
        preload=f"{_runtime('libtsan.so')} {BUILD / 'tsan' / 'libvcuda.so'}",
    )
    assert "ThreadSanitizer" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr
    assert codes(out.stdout, "forkbusy") == [0]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_the_shim_is_clean_under_valgrind_memcheck(tmp_path):
    env = shim_env(tmp_path, memory_mib=1024)
    environ = env.environ()
    out = subprocess.run(
        ["valgrind", "--error-exitcode=99", "--quiet", f"--log-file={tmp_path / 'vg.log'}", str(BUILD / "app_runtime"),
         *WORKLOAD],
        env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, (tmp_path / "vg.log").read_text()
    assert SHIM.exists()
    assert codes(out.stdout, "alloc") == [0, 2]
