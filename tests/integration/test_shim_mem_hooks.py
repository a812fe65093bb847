"""Hooks are chosen by symbol NAME, never by comparing pointers, and never handed out for missing symbols.

The FAKE driver behaves as the real one does (the behaviours listed at the top of tests/fakes/driver/fake_cuda.c): cuGetProcAddress returns internal trampolines
whose addresses differ from the exported symbols, the v1 cuMemAlloc is still exported, and
cuLaunchCooperativeKernelMultiDevice (gone in CUDA 13) is missing. The old shim passed trampolines through
unhooked (no limit at all on the runtime paths) and handed out hooks for missing symbols.
"""

import pytest

from tests.shim.harness import CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS, MIB, codes, results, run_app, shim_env

CUDA_ERROR_NOT_FOUND = 500
LOOKUP_APPS = [pytest.param("app_runtime", id="cuGetProcAddress_v2"), pytest.param("app_legacy", id="v1")]


@pytest.mark.parametrize("app", LOOKUP_APPS)
@pytest.mark.parametrize("trampolines", ["1", "0"], ids=["driver trampolines", "exported symbols"])
def test_entry_points_from_cu_get_proc_address_are_hooked_whatever_address_the_driver_returns(
    tmp_path, app, trampolines
):
    env = shim_env(tmp_path, memory_mib=1536, FAKE_CUDA_TRAMPOLINES=trampolines)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1024", "alloc", "1024", "info", "vmm", "1024"], app=app)
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY], out.stderr
    assert codes(out.stdout, "vmm") == [CUDA_ERROR_OUT_OF_MEMORY]
    info = next(w for w in results(out.stdout) if w[0] == "info")
    assert info[2:] == [str(512 * MIB), str(1536 * MIB)]


@pytest.mark.parametrize("app", ["app_direct", "app_runtime"])
def test_dlsym_gives_no_hook_for_a_symbol_the_driver_lacks(tmp_path, app):
    env = shim_env(tmp_path, memory_mib=64)
    out = run_app(env, ["sym", "cuLaunchCooperativeKernelMultiDevice", "sym", "cuMemAlloc_v2"], app=app)
    rows = [w for w in results(out.stdout) if w[0] == "sym"]
    assert rows == [["sym", "cuLaunchCooperativeKernelMultiDevice", "0"], ["sym", "cuMemAlloc_v2", "1"]]


@pytest.mark.parametrize("app", ["app_direct", "app_runtime"])
def test_dlsym_gives_no_nvml_hook_for_a_library_that_lacks_the_symbol(tmp_path, app):
    # dlsym(libcuda handle, "nvml...") is NULL without the shim; an NVML older than R510 lacks
    # nvmlDeviceGetMemoryInfo_v2, and pynvml must get NULL (FunctionNotFound) there, not a hook that fails.
    env = shim_env(tmp_path, memory_mib=64)
    out = run_app(env, ["sym", "nvmlDeviceGetMemoryInfo_v2", "sym", "nvmlDeviceGetMemoryInfo"], app=app)
    rows = [w for w in results(out.stdout) if w[0] == "sym"]
    assert rows == [["sym", "nvmlDeviceGetMemoryInfo_v2", "0"], ["sym", "nvmlDeviceGetMemoryInfo", "0"]]


@pytest.mark.parametrize("app", LOOKUP_APPS)
def test_cu_get_proc_address_for_a_symbol_the_driver_lacks_answers_not_found(tmp_path, app):
    env = shim_env(tmp_path, memory_mib=64)
    out = run_app(env, ["lookup", "cuLaunchCooperativeKernelMultiDevice", "9000", "0"], app=app)
    assert codes(out.stdout, "lookup") == [CUDA_ERROR_NOT_FOUND]


@pytest.mark.parametrize("app", LOOKUP_APPS)
def test_an_allocating_entry_point_the_shim_cannot_hook_is_reported_as_a_warning(tmp_path, app):
    env = shim_env(tmp_path, memory_mib=64)
    out = run_app(env, ["lookup", "cuMemAlloc", "2000", "0"], app=app)  # the v1 ABI (before CUDA 3.2)
    assert codes(out.stdout, "lookup") == [CUDA_SUCCESS]
    assert "kube-vgpu vcuda warning: cuGetProcAddress(cuMemAlloc, version 2000)" in out.stderr
    assert "NOT limited" in out.stderr


def test_dlsym_of_an_unhookable_allocating_symbol_is_reported_as_a_warning(tmp_path):
    env = shim_env(tmp_path, memory_mib=64)
    out = run_app(env, ["sym", "cuMemAlloc"], app="app_runtime")
    assert [w for w in results(out.stdout) if w[0] == "sym"] == [["sym", "cuMemAlloc", "1"]]
    assert "kube-vgpu vcuda warning: dlsym(cuMemAlloc)" in out.stderr


def test_hooked_lookups_print_no_warning(tmp_path):
    env = shim_env(tmp_path, memory_mib=64)
    out = run_app(env, ["init", "ctx", "0", "alloc", "1"], app="app_runtime")
    assert "warning" not in out.stderr
