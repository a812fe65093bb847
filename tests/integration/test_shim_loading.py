"""The shim intercepts the driver on all three access paths (docs/shim.md, "Tests and figures"), over a -Bsymbolic FAKE driver.

Cases: linked directly / cudart-style cuGetProcAddress_v2 / legacy cuGetProcAddress, each x (memory limit,
mem-info, device total, every launch entry point incl. per-thread-stream variants); the fake alone does not
limit; runtime-style lookups really went through the driver's resolver; processes that never touch CUDA pay
nothing.
"""

import subprocess
from pathlib import Path

import pytest

from tests.shim.harness import (
    APPS,
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    MIB,
    SHIM,
    codes,
    results,
    run_app,
    shim_env,
)

ALL_PATHS = [pytest.param(app, id=app.removeprefix("app_")) for app in APPS]


@pytest.mark.parametrize("app", ALL_PATHS)
def test_the_second_gibibyte_over_a_1536_mib_limit_is_refused_on_every_access_path(tmp_path, app):
    env = shim_env(tmp_path, memory_mib=1536)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1024", "alloc", "1024"], app=app)
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY], out.stderr


@pytest.mark.parametrize("app", ALL_PATHS)
def test_mem_info_and_device_total_report_the_limit_on_every_access_path(tmp_path, app):
    env = shim_env(tmp_path, memory_mib=1536)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1024", "info", "total", "0"], app=app)
    rows = {words[0]: words[1:] for words in results(out.stdout)}
    assert rows["info"] == ["0", str(512 * MIB), str(1536 * MIB)]
    assert rows["total"] == ["0", str(1536 * MIB)]


@pytest.mark.parametrize("app", ALL_PATHS)
@pytest.mark.parametrize("launch", ["launch", "launch_ptsz", "launch_ex", "coop", "graph"])
def test_every_launch_entry_point_reaches_the_driver_through_the_shim(tmp_path, app, launch):
    env = shim_env(tmp_path, memory_mib=64, core=50)
    out = run_app(env, ["init", "ctx", "0", launch, "100"], app=app)
    assert codes(out.stdout, launch) == [CUDA_SUCCESS], out.stderr


def test_the_fake_driver_alone_does_not_limit_so_the_refusals_above_are_the_shims(tmp_path):
    env = shim_env(tmp_path, memory_mib=1536)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1024", "alloc", "1024"], preload="")
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS, CUDA_SUCCESS]


def test_runtime_style_lookups_go_through_the_drivers_resolver_with_versions_and_flags(tmp_path):
    log = tmp_path / "lookups.log"
    env = shim_env(tmp_path, memory_mib=64, FAKE_CUDA_LOG=str(log))
    run_app(env, ["init"])
    lookups = log.read_text()
    assert "lookup cuGetProcAddress 12000 0 -> found" in lookups
    assert "lookup cuMemAlloc 3020 0 -> found" in lookups
    assert "lookup cuLaunchKernel 7000 2 -> found" in lookups


def test_a_process_that_never_touches_cuda_pays_nothing_and_needs_no_config(tmp_path):
    out = subprocess.run(
        ["sh", "-c", "echo hello"],
        env={
            "LD_PRELOAD": str(SHIM),
            "VCUDA_CONFIG_PATH": str(tmp_path / "missing"),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "hello\n", "")
    assert list(Path(tmp_path).iterdir()) == []
