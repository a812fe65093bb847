"""The shim is clean under AddressSanitizer and valgrind memcheck on a mixed workload (kept short)."""

import shutil
import subprocess

import pytest

from tests.shim.harness import BUILD, SHIM, codes, run_app, shim_env

WORKLOAD = [
    "init", "ctx", "0", "alloc", "8", "async", "8", "create", "8", "array", "256", "256", "mipmap", "256", "256", "3",
    "alloc", "4096", "info", "total", "0", "launch", "3000", "launch_ptsz", "10", "graph", "10", "bench_alloc",
    "2000", "2000", "freeall",
]  # fmt: skip


def test_the_shim_is_clean_under_address_sanitizer(tmp_path):
    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    env = shim_env(tmp_path, memory_mib=1024, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=66")
    out = run_app(
        env, WORKLOAD, app="asan/app_runtime", preload=f"{libasan} {BUILD / 'asan' / 'libvcuda.so'}"
    )
    assert "AddressSanitizer" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr
    assert codes(out.stdout, "alloc") == [0, 2]


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
