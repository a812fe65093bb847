# mypy: disable-error-code="no-untyped-call"
"""A kubelet that restarts between the plugin's ``Allocate`` answer and its checkpoint loses the answer: on
re-registration the plugin reconciles its book with PodResources and counts the container as pending again.

Real gRPC (FakeKubelet), kmock, a FakeGpuSource. The crash is staged on the FakeKubelet: the allocation is
taken out of what its PodResources reports (never checkpointed) while the pod stays listed, then it restarts.
"""

import grpc
import pytest

from tests.builders.plugin import NAMES
from tests.fixtures.plugin_env import eventually
from vcuda.model import Phase

GPU = "GPU-node-1-0000"
SHARE = {"c": [(GPU, 10, 2048)]}


def record_file(env, name):
    return env.settings.state_dir / "containers" / f"{env.pod(name)['metadata']['uid']}_c" / "allocation.json"


async def lose_allocation_and_restart(env, name):
    """The kubelet 'crashes' after Allocate returned: it comes back listing the pod, holding no devices."""
    del env.kubelet.allocations[("default", name, "c")]
    await env.kubelet.restart()
    await env.kubelet.wait_registered(NAMES.core, timeout=10.0)
    await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 800, timeout=10.0)


async def test_the_re_asked_allocate_goes_to_the_same_container_and_its_twin_still_runs(env_factory):
    env = await env_factory()
    for name in ("victim", "twin"):
        env.create_pod(name, [("c", 10, 2048)], SHARE)
    await env.admit("victim", [("c", 10)])
    await lose_allocation_and_restart(env, "victim")

    (again,) = await env.admit("victim", [("c", 10)])
    assert env.config_of(again).pod_name == "victim"
    await env.start_container("victim", "c")
    (twin,) = await env.admit("twin", [("c", 10)])
    assert env.config_of(twin).pod_name == "twin"
    await env.start_container("twin", "c")

    assert env.status("victim").phase is Phase.ALLOCATED
    assert env.status("twin").phase is Phase.ALLOCATED
    assert env.recorded("victim").container("c").shares == env.recorded("twin").container("c").shares


async def test_re_registration_alone_forgets_the_lost_allocate(env_factory):
    env = await env_factory()
    env.create_pod("victim", [("c", 10, 2048)], SHARE)
    await env.admit("victim", [("c", 10)])
    assert record_file(env, "victim").exists()
    await lose_allocation_and_restart(env, "victim")
    await eventually(lambda: not record_file(env, "victim").exists())


async def test_an_allocate_the_restarted_kubelet_kept_is_still_verified_and_confirmed(env_factory):
    env = await env_factory()
    env.create_pod("kept", [("c", 10, 2048)], SHARE)
    (admitted,) = await env.admit("kept", [("c", 10)])
    await env.kubelet.restart()  # the checkpoint has it: PodResources still lists the IDs
    await env.kubelet.wait_registered(NAMES.core, timeout=10.0)
    assert env.agent is not None
    await env.agent.allocator.reconcile()
    assert record_file(env, "kept").exists()
    await env.start_container("kept", "c")
    assert env.status("kept").phase is Phase.ALLOCATED
    assert env.config_of(admitted).pod_name == "kept"


async def test_a_lost_allocate_is_refused_at_prestart_if_the_kubelet_ever_asks(env_factory):
    env = await env_factory()
    env.create_pod("victim", [("c", 10, 2048)], SHARE)
    (lost,) = await env.admit("victim", [("c", 10)])
    await lose_allocation_and_restart(env, "victim")
    assert env.agent is not None
    await env.agent.allocator.reconcile()
    env.kubelet.allocations[("default", "victim", "c")] = lost  # the forgotten answer, used anyway
    with pytest.raises(grpc.aio.AioRpcError, match="no Allocate is recorded"):
        await env.start_container("victim", "c")


async def test_an_init_containers_allocate_survives_a_re_registration_before_its_prestart(env_factory):
    """PodResources never lists regular init containers: their records are not judged by it."""
    env = await env_factory()
    shares = {"i": [(GPU, 10, 2048)], "c": [(GPU, 20, 2048)]}
    env.create_pod("staged", [("c", 20, 2048)], shares, init=[("i", 10, 2048)])
    (init, app) = await env.admit("staged", [("i", 10), ("c", 20)], init=["i"])
    assert set(init.ids) < set(app.ids)  # the app reuses the init's IDs: no listed container holds them alone
    await env.kubelet.restart()  # between Allocate and PreStart; the checkpoint kept both answers
    await env.kubelet.wait_registered(NAMES.core, timeout=10.0)
    assert env.agent is not None
    await env.agent.allocator.reconcile()

    await env.start_container("staged", "i")  # refused ("no Allocate is recorded") if the record was dropped
    await env.start_container("staged", "c")
    assert env.config_of(init).container == "i"
    assert env.config_of(app).container == "c"
