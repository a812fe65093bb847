# mypy: disable-error-code="no-untyped-call"
"""Several pods bound at once, admitted by the kubelet in another order than they were bound.

The invariant, checked after every scenario: every container that started runs with exactly the GPUs and
limits its pod's (possibly corrected) assignment records; a container that would not is refused in
PreStartContainer, with the pod's status FAILED, an event, and an unreadable config file.

| scenario | kubelet follows GetPreferredAllocation | outcome |
| --- | --- | --- |
| interchangeable whole-GPU pods, reverse order | yes | all correct, no swap needed |
| interchangeable whole-GPU pods, reverse order | no (takes the first free IDs) | swapped, records corrected |
| different sizes, reverse order | yes | all correct |
| same size, same GPU, different memory, reverse order | yes | all correct (PodResources disambiguates) |
| same size, different memory, kubelet ignores preference | no | refused loudly, never wrong limits |
"""

import grpc
import pytest

from tests.builders.plugin import NAMES
from tests.signing_keys import decode_for
from vcuda.errors import ContractError
from vcuda.model import Phase
from vcuda.units import MIB

G = "GPU-node-1-{:04d}".format


def assert_configs_match_records(env, admitted):
    """The invariant: the config a started container reads equals its pod's recorded assignment."""
    for a in admitted:
        config = env.config_of(a)
        record = env.recorded(a.pod).container(a.container)
        assert (config.pod_name, config.container) == (a.pod, a.container)
        assert [(g.uuid, g.core_limit, g.memory_limit_bytes) for g in config.gpus] == [
            (s.uuid, min(s.cores, 100), s.memory_mib * MIB) for s in record.shares
        ]
        assert {i.rpartition("::")[0] for i in a.ids} == {s.uuid for s in record.shares}


async def admit_all_then_start(env, order, follow=True):
    admitted = []
    for name, cores in order:
        admitted += await env.admit(name, [("main", cores)], follow_preference=follow)
    for a in admitted:
        await env.start_container(a.pod, "main")
    return admitted


@pytest.mark.parametrize("follow", [True, False], ids=["kubelet follows preference", "kubelet ignores it"])
async def test_interchangeable_pods_admitted_in_reverse_order_run_with_their_records(env_factory, follow):
    env = await env_factory()
    for i, name in enumerate(["p1", "p2", "p3"]):
        env.create_pod(name, [("main", 100, 0)], {"main": [(G(i), 100, 81559)]})
    admitted = await admit_all_then_start(env, [("p3", 100), ("p1", 100), ("p2", 100)], follow)
    assert_configs_match_records(env, admitted)
    for name in ("p1", "p2", "p3"):
        assert env.status(name).phase is Phase.ALLOCATED
    held = sorted(s.uuid for n in ("p1", "p2", "p3") for s in env.recorded(n).container("main").shares)
    assert held == [G(0), G(1), G(2)]  # a swap moves records, never duplicates or loses a GPU


async def test_pods_of_different_sizes_admitted_in_reverse_order_are_attributed_exactly(env_factory):
    env = await env_factory()
    env.create_pod("small", [("main", 10, 1024)], {"main": [(G(0), 10, 1024)]})
    env.create_pod("mid", [("main", 40, 8192)], {"main": [(G(0), 40, 8192)]})
    env.create_pod("big", [("main", 100, 0)], {"main": [(G(1), 100, 81559)]})
    admitted = await admit_all_then_start(env, [("big", 100), ("mid", 40), ("small", 10)])
    assert_configs_match_records(env, admitted)
    assert [env.recorded(n).container("main").shares[0].uuid for n in ("small", "mid", "big")] == [
        G(0),
        G(0),
        G(1),
    ]


async def test_same_size_different_memory_on_one_gpu_is_disambiguated_through_pod_resources(env_factory):
    env = await env_factory()
    env.create_pod("older", [("main", 30, 2048)], {"main": [(G(5), 30, 2048)]})
    env.create_pod("newer", [("main", 30, 16384)], {"main": [(G(5), 30, 16384)]})
    admitted = await admit_all_then_start(env, [("newer", 30), ("older", 30)])
    assert_configs_match_records(env, admitted)
    assert env.kubelet.list_calls >= 1


async def test_a_container_that_would_get_wrong_limits_is_refused_loudly(env_factory):
    env = await env_factory()
    env.create_pod("first", [("main", 50, 4096)], {"main": [(G(0), 50, 4096)]})
    env.create_pod("second", [("main", 50, 30000)], {"main": [(G(1), 50, 30000)]})
    # The kubelet ignores the preference and hands "second" the first free IDs, which are on GPU 0.
    [second] = await env.admit("second", [("main", 50)], follow_preference=False)
    assert {i.rpartition("::")[0] for i in second.ids} == {G(0)}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.start_container("second", "main")
    assert str(err.value.details()).startswith("kube-vgpu attribution mismatch:")
    with pytest.raises(ContractError):
        env.config_of(second)  # poisoned: the shim refuses to start CUDA rather than run wrong limits
    assert env.status("second").phase is Phase.FAILED  # the pod whose container was refused
    assert env.status("first") is None  # still pending: the kubelet may admit it later
    events = env.core.list_namespaced_event("default").items
    assert [(e.reason, e.involved_object.name) for e in events] == [("VGPUAttributionMismatch", "second")]
    [first] = await env.admit("first", [("main", 50)])
    await env.start_container("first", "main")
    assert_configs_match_records(env, [first])
    assert decode_for(env.pod("second"), NAMES)


async def test_container_restart_is_confirmed_without_asking_the_kubelet_again(env_factory):
    env = await env_factory()
    env.create_pod("p", [("main", 30, 4096)], {"main": [(G(0), 30, 4096)]})
    await env.admit("p", [("main", 30)])
    await env.start_container("p", "main")
    calls = env.kubelet.list_calls
    await env.start_container("p", "main")
    assert env.kubelet.list_calls == calls
