"""Fail closed: a missing, corrupt or unknown-version config makes cuInit fail with a clear message.

Cases: file missing; wrong magic; layout version 2; one flipped byte (checksum); truncated; and a visible
device that the config does not list (its allocations are refused, never unlimited).
"""

import struct

import pytest

from tests.shim.harness import (
    CUDA_ERROR_NOT_INITIALIZED,
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    codes,
    run_app,
    shim_env,
)


def _missing(data: bytes) -> bytes | None:
    return None


def _bad_magic(data: bytes) -> bytes:
    return b"NOTVCUDA" + data[8:]


def _version_2(data: bytes) -> bytes:
    return data[:8] + struct.pack("<I", 2) + data[12:]


def _flipped_byte(data: bytes) -> bytes:
    return data[:200] + bytes([data[200] ^ 0xFF]) + data[201:]


def _truncated(data: bytes) -> bytes:
    return data[:100]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(_missing, "cannot open", id="missing file"),
        pytest.param(_bad_magic, "bad magic", id="wrong magic"),
        pytest.param(_version_2, "layout version 2", id="unknown layout version"),
        pytest.param(_flipped_byte, "checksum", id="one corrupt byte"),
        pytest.param(_truncated, "expected", id="truncated file"),
    ],
)
def test_a_bad_config_fails_cuda_initialisation_with_a_clear_message(tmp_path, damage, reason):
    env = shim_env(tmp_path, memory_mib=64)
    damaged = damage(env.config.read_bytes())
    if damaged is None:
        env.config.unlink()
    else:
        env.config.write_bytes(damaged)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1"])
    assert codes(out.stdout, "init") == [CUDA_ERROR_NOT_INITIALIZED]
    assert codes(out.stdout, "alloc") == [CUDA_ERROR_NOT_INITIALIZED]
    assert "refusing to initialise CUDA" in out.stderr
    assert reason in out.stderr


def test_a_device_missing_from_the_config_gets_no_memory_at_all(tmp_path):
    env = shim_env(tmp_path, memory_mib=64, FAKE_CUDA_DEVICES="2")
    out = run_app(env, ["init", "ctx", "1", "alloc", "1", "ctx", "0", "alloc", "1"])
    assert codes(out.stdout, "alloc") == [CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS]
    assert "is not in the container's config" in out.stderr
