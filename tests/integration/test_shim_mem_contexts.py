"""Memory is counted in every context, and charges die exactly with the memory they stand for.

The FAKE driver keeps several contexts per device (primary and cuCtxCreate), each owning its allocations,
which die with cuCtxDestroy, cuDevicePrimaryCtxReset (cudaDeviceReset) or the last primary release; streams
remember their context; cuMemRelease of a mapped handle frees nothing until the last cuMemUnmap (the behaviours listed at the top of tests/fakes/driver/fake_cuda.c).
"""

import pytest

from tests.shim.harness import (
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    MIB,
    codes,
    read_until,
    run_app,
    shim_env,
    start_app,
)

OK, OOM = CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY

CASES = [
    pytest.param(
        ["ctx", "0", "alloc", "32", "ctxcreate", "0", "alloc", "32", "alloc", "32"],
        [OK, OK, OOM],
        id="a second context counts against the same device",
    ),
    pytest.param(
        ["ctx", "0", "ctxcreate", "0", "alloc", "48", "ctxdestroy", "ctx", "0", "alloc", "48"],
        [OK, OK],
        id="cuCtxDestroy gives that context's charges back",
    ),
    pytest.param(
        ["ctx", "0", "alloc", "48", "reset", "0", "ctx", "0", "alloc", "48"],
        [OK, OK],
        id="a primary-context reset gives its charges back",
    ),
    pytest.param(
        ["ctx", "0", "alloc", "48", "release", "0", "ctx", "0", "alloc", "48"],
        [OK, OK],
        id="the last primary-context release gives its charges back",
    ),
    pytest.param(  # runtimes before CUDA 11 call the v1 symbol (dlsym, or cuGetProcAddress below 11000)
        ["ctx", "0", "alloc", "48", "reset1", "0", "ctx", "0", "alloc", "48"],
        [OK, OK],
        id="a primary-context reset through the v1 entry point gives its charges back",
    ),
    pytest.param(
        ["ctx", "0", "alloc", "48", "release1", "0", "ctx", "0", "alloc", "48"],
        [OK, OK],
        id="the last primary-context release through the v1 entry point gives its charges back",
    ),
    pytest.param(
        ["ctxcreate", "0", "alloc", "48", "ctx", "0", "reset", "0", "alloc", "48"],
        [OK, OOM],
        id="a primary-context reset keeps the charges of other contexts",
    ),
    pytest.param(
        ["ctx", "0", "stream", "noctx", "salloc", "48", "salloc", "48"],
        [OK, OOM],
        id="with no current context a stream allocation is counted on the stream's device",
    ),
    pytest.param(
        ["vmm", "48", "vrelease", "ctx", "0", "alloc", "48", "vunmap", "alloc", "48"],
        [OOM, OK],
        id="a released VMM handle keeps its charge until unmapped",
    ),
    pytest.param(
        ["vmm", "48", "vunmap", "ctx", "0", "alloc", "48", "vrelease", "alloc", "48"],
        [OOM, OK],
        id="an unmapped VMM handle keeps its charge until released",
    ),
]


@pytest.mark.parametrize(("words", "expected"), CASES)
@pytest.mark.parametrize("app", ["app_direct", "app_runtime"])
def test_charges_follow_the_memory_in_every_context(tmp_path, app, words, expected):
    env = shim_env(tmp_path, memory_mib=64)
    out = run_app(env, ["init", *words], app=app)
    assert codes(out.stdout, "alloc") + codes(out.stdout, "salloc") == expected, out.stdout + out.stderr


def test_a_stream_allocation_without_a_current_context_shows_in_the_usage_file(tmp_path):
    env = shim_env(tmp_path, memory_mib=64)
    with start_app(env, ["init", "ctx", "0", "stream", "noctx", "salloc", "48", "pause"]) as proc:
        read_until(proc, "paused")
        (me,) = env.processes()
        assert me.gpus[0].memory_used == 48 * MIB
