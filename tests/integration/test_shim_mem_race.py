"""Concurrent alloc/free over a FAKE driver that hands freed addresses out again at once (LIFO, as the real one).

The shim must take an allocation out of its table before the driver frees it: otherwise a thread that gets the
same address back in between loses the first allocation's size and the charge is never given back (the old
shim: 48 of 64 MiB still charged after 4 x 20,000 alloc/free pairs). FAKE_CUDA_FREE_YIELD makes the freeing
thread yield once the address is free again, as a real free that enters the kernel would.
"""

import pytest

from tests.shim.harness import MIB, read_until, results, run_app, shim_env, start_app

THREADS = 4
SIZE_MIB = 16
WORKLOAD = ["init", "ctx", "0", "threads", str(THREADS), "20000", str(SIZE_MIB)]


@pytest.mark.parametrize("app", ["app_direct", "app_runtime"])
def test_four_threads_of_alloc_and_free_give_every_charge_back_and_are_never_wrongly_refused(tmp_path, app):
    # The limit holds exactly one allocation per thread: any leaked charge shows as a refusal or as lost room.
    env = shim_env(tmp_path, memory_mib=THREADS * SIZE_MIB, FAKE_CUDA_FREE_YIELD="1")
    out = run_app(env, [*WORKLOAD, "info"], app=app)
    rows = {w[0]: w[1:] for w in results(out.stdout)}
    assert rows["threads"] == ["0", "0"], out.stderr  # no refusals, no failed frees
    assert rows["info"] == ["0", str(THREADS * SIZE_MIB * MIB), str(THREADS * SIZE_MIB * MIB)]


def test_the_usage_file_shows_nothing_charged_and_nothing_refused_after_the_threads(tmp_path):
    env = shim_env(tmp_path, memory_mib=THREADS * SIZE_MIB, FAKE_CUDA_FREE_YIELD="1")
    with start_app(env, [*WORKLOAD, "pause"], app="app_direct") as proc:
        read_until(proc, "paused")
        (me,) = env.processes()
        assert (me.gpus[0].memory_used, me.gpus[0].refused_allocs) == (0, 0)
