"""Drives the shim's GPU-less test programs (built by ``mk/shim.mk``) over the FAKE ``libcuda.so.1``.

The fake driver's device 0 has the UUID :data:`FAKE_GPU_UUID`; a test writes a real contract config for it
with :func:`write_config`, then runs one of the three test programs (:data:`APPS`) under ``LD_PRELOAD`` with
:func:`run_app` or :func:`start_app`. They preload the TEST build (:data:`SHIM`, ``libvcuda-test.so``), which
takes its config and usage paths from the env; the shipped :data:`SHIPPED_SHIM` reads only the fixed container
paths, which :func:`run_app_at_fixed_paths` provides in a private mount namespace. Every wait here is bounded.
"""

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from vcuda.model import GpuUuid
from vcuda.shimfile import GpuLimit, ProcessSlot, ShimConfig, decode_usage, encode_config

ROOT = Path(__file__).resolve().parents[2]
# KUBE_VGPU_SHIM_BUILD: run the tests against another build directory (a developer's private build).
BUILD = Path(os.environ.get("KUBE_VGPU_SHIM_BUILD") or ROOT / "build" / "shim")
# The TEST build: it takes its config, usage and node paths from VCUDA_* env (the shipped one never does).
SHIM = BUILD / "libvcuda-test.so"
SHIPPED_SHIM = BUILD / "libvcuda.so"
FAKE_DIR = BUILD / "fake"
APPS = ("app_direct", "app_runtime", "app_legacy")
FAKE_GPU_UUID = GpuUuid("GPU-10111213-1415-1617-1819-1a1b1c1d1e1f")
MIB = 1 << 20
CUDA_SUCCESS = 0
CUDA_ERROR_NOT_INITIALIZED = 3
CUDA_ERROR_OUT_OF_MEMORY = 2
TIMEOUT_S = 30


def require_build() -> None:
    if not SHIM.exists() or not (FAKE_DIR / "libcuda.so.1").exists():
        pytest.fail("build/shim is missing: run `make build` (mk/shim.mk) first")


def write_config(path: Path, *, memory_mib: int, core: int = 100, soft: int | None = None) -> Path:
    limit = GpuLimit(FAKE_GPU_UUID, memory_mib * MIB, core, soft if soft is not None else core)
    path.write_bytes(encode_config(ShimConfig("uid-1", "ns", "pod", "main", (limit,))))
    return path


@dataclass(frozen=True)
class ShimEnv:
    """Paths and env for one simulated container (its config and usage file)."""

    config: Path
    usage: Path
    extra: Mapping[str, str]

    def environ(self, preload: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "VCUDA_", "LD_"))}
        env.update(
            LD_PRELOAD=preload if preload is not None else str(SHIM),
            LD_LIBRARY_PATH=str(FAKE_DIR),
            VCUDA_CONFIG_PATH=str(self.config),
            VCUDA_USAGE_PATH=str(self.usage),
            # hermetic: no node file unless a test passes VCUDA_NODE_DIR (the shim then runs as a lone tenant)
            VCUDA_NODE_DIR=str(self.config.parent / "no-node-dir"),
        )
        env.update(self.extra)
        return env

    def processes(self) -> tuple[ProcessSlot, ...]:
        return decode_usage(self.usage.read_bytes()) if self.usage.exists() else ()


def shim_env(
    tmp_path: Path, *, memory_mib: int, core: int = 100, soft: int | None = None, **extra: str
) -> ShimEnv:
    require_build()
    config = write_config(tmp_path / "vcuda.config", memory_mib=memory_mib, core=core, soft=soft)
    return ShimEnv(config, tmp_path / "usage.bin", extra)


def results(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.strip()]


def codes(stdout: str, command: str) -> list[int]:
    """The CUDA result codes printed for every run of `command`."""
    return [int(words[1]) for words in results(stdout) if words[0] == command]


def run_app(
    env: ShimEnv, args: Sequence[str], *, app: str = "app_runtime", preload: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUILD / app), *args],
        env=env.environ(preload),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


# Runs "$@" as inside a GPU container: $1 copied to the shim's fixed config path, directory $2 bound at its fixed
# usage directory, in a private user + mount namespace over overlays (this machine's /etc and /run untouched).
_CONTAINER_SCRIPT = r"""
set -e
cfg=$1; usage=$2; work=$3; shift 3
mkdir -p "$work/up" "$work/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$work/up,workdir=$work/work" /etc
mkdir -p /etc/kube-vgpu && cp "$cfg" /etc/kube-vgpu/vcuda.config
run=$(readlink -f /var/run)
mount -t tmpfs none "$run" && mkdir -p "$run/kube-vgpu" && mount --bind "$usage" "$run/kube-vgpu"
exec "$@"
"""


def fixed_paths_supported() -> bool:
    """Whether this machine lets an unprivileged user + mount namespace overlay /etc (Linux >= 5.11)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True, timeout=TIMEOUT_S
    )
    return probe.returncode == 0


def run_app_at_fixed_paths(
    env: ShimEnv, args: Sequence[str], *, work: Path, app: str = "app_runtime", preload: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Like :func:`run_app`, but the config is at the shim's FIXED path and the usage file lands in
    ``env.usage.parent`` through the fixed usage directory: how the shipped library, which ignores every
    path in the environment, finds them in a container."""
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-c", _CONTAINER_SCRIPT, "sh", str(env.config), str(env.usage.parent),
         str(work), str(BUILD / app), *args],
        env=env.environ(preload),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )  # fmt: skip


@contextmanager
def start_app(
    env: ShimEnv, args: Sequence[str], *, app: str = "app_runtime"
) -> Iterator[subprocess.Popen[str]]:
    """A program left running (typically at a ``pause`` command); killed on exit from the block."""
    proc = subprocess.Popen(
        [str(BUILD / app), *args],
        env=env.environ(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=TIMEOUT_S)


def read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """Lines the program prints up to and including `marker` (bounded by the process's own progress)."""
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.strip() == marker:
            return lines
    raise AssertionError(f"program never printed {marker!r}; got {lines}")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
