"""A tenant cannot choose its own limits through the environment: the SHIPPED shim reads fixed paths only.

The tenant sets any env on its own pods. Path overrides (VCUDA_CONFIG_PATH, VCUDA_USAGE_PATH, VCUDA_NODE_DIR)
exist only in the test build (``libvcuda-test.so``, -DVCUDA_TEST_BUILD); these tests attack the shipped
``libvcuda.so`` (and the glibc 2.17 build that the image ships, when built) with hostile env pointing at attacker
files: a config granting 1 TiB, a FIFO that would hang any reader, an attacker-owned usage file.
"""

import os
from pathlib import Path

import pytest

from tests.shim.harness import (
    BUILD,
    CUDA_ERROR_NOT_INITIALIZED,
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    SHIM,
    SHIPPED_SHIM,
    ShimEnv,
    codes,
    fixed_paths_supported,
    run_app,
    run_app_at_fixed_paths,
    shim_env,
    write_config,
)

SHIPPED = [SHIPPED_SHIM, BUILD / "x86_64-glibc2.17" / "libvcuda.so"]
PATH_ENV_NAMES = (b"VCUDA_CONFIG_PATH", b"VCUDA_USAGE_PATH", b"VCUDA_NODE_DIR")


def _hostile_env(tmp_path: Path, real_limit_mib: int) -> ShimEnv:
    """A container whose real config allows `real_limit_mib`, with the env a tenant would set: its own config
    granting 1 TiB and its own usage file."""
    attacker, real = tmp_path / "attacker", tmp_path / "real"
    attacker.mkdir()
    real.mkdir()
    write_config(attacker / "vcuda.config", memory_mib=1 << 20)
    return shim_env(
        real,
        memory_mib=real_limit_mib,
        VCUDA_CONFIG_PATH=str(attacker / "vcuda.config"),
        VCUDA_USAGE_PATH=str(attacker / "usage.bin"),
    )


@pytest.mark.parametrize("library", SHIPPED, ids=["gcc build", "glibc 2.17 build"])
def test_the_shipped_library_does_not_even_contain_the_path_override_names(library):
    if not library.exists():
        pytest.skip(f"{library.name} not built here")
    data = library.read_bytes()
    assert [name for name in PATH_ENV_NAMES if name in data] == []


def test_the_shipped_shim_opens_no_file_named_in_the_environment(tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until the test times out
    env = shim_env(
        tmp_path, memory_mib=64, VCUDA_CONFIG_PATH=str(fifo), VCUDA_USAGE_PATH=str(tmp_path / "u.bin")
    )
    out = run_app(env, ["init", "ctx", "0", "alloc", "1"], preload=str(SHIPPED_SHIM))
    # No config at the fixed path on this machine: fail closed, naming the fixed path, never the env's.
    assert codes(out.stdout, "init") == [CUDA_ERROR_NOT_INITIALIZED]
    assert codes(out.stdout, "alloc") == [CUDA_ERROR_NOT_INITIALIZED]
    assert "/etc/kube-vgpu/vcuda.config" in out.stderr
    assert str(fifo) not in out.stderr
    assert not (tmp_path / "u.bin").exists()


@pytest.mark.skipif(not fixed_paths_supported(), reason="needs unprivileged user + mount namespaces")
def test_the_real_limit_applies_whatever_paths_the_environment_names(tmp_path):
    env = _hostile_env(tmp_path, 1536)
    args = ["init", "ctx", "0", "alloc", "1024", "alloc", "1024", "info"]
    out = run_app_at_fixed_paths(env, args, work=tmp_path / "ns", preload=str(SHIPPED_SHIM))
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY], out.stderr
    assert env.usage.exists()  # the fixed usage directory was used...
    assert not (tmp_path / "attacker" / "usage.bin").exists()  # ...and the tenant's file never created


@pytest.mark.skipif(not fixed_paths_supported(), reason="needs unprivileged user + mount namespaces")
def test_the_same_attack_succeeds_on_the_test_build_so_the_tests_above_mean_something(tmp_path):
    env = _hostile_env(tmp_path, 1536)
    out = run_app_at_fixed_paths(
        env, ["init", "ctx", "0", "alloc", "1024", "alloc", "1024"], work=tmp_path / "ns", preload=str(SHIM)
    )
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS, CUDA_SUCCESS], out.stderr
