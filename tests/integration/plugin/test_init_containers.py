# mypy: disable-error-code="no-untyped-call"
"""Init containers and sidecars through the plugin, with a FakeKubelet that reuses init devices first and
lists only app containers and sidecars in PodResources, as the real kubelet does.

| pod (assignment as the extender places it)         | the kubelet hands out                    | checked          |
| -------------------------------------------------- | ---------------------------------------- | ---------------- |
| init 50/2 GiB + app 50/4 GiB on GPU 0              | the app gets exactly the init's IDs      | configs, PreStart|
| init 50 + apps 30 + 20 on GPU 0                    | the apps split the init's IDs            | configs, PreStart|
| init 30 + app 50 on GPU 0                          | the app: the init's 30 IDs + 20 steered  | must_include     |
| sidecar 20, init 50, app 50 on GPU 0               | the app reuses the init's IDs, never the | PreStart, IDs    |
|                                                    | sidecar's                                |                  |
| init 50, sidecar 20, app 50 on GPU 0               | the sidecar reuses 20 of the init's and  | PreStart, IDs    |
|                                                    | keeps them; the app takes the other 30   |                  |
"""

from typing import Any

import pytest

from tests.builders.plugin import NAMES, assignment, pod_body
from tests.fixtures.plugin_env import NODE
from vcuda.model import Phase
from vcuda.units import MIB

G = "GPU-node-1-{:04d}".format


def create(env: Any, name: str, containers: list[tuple[str, int, int, str]]) -> None:
    """A bound pod with its signed assignment: (name, cores, MiB, kind) on GPU 0, kind init/sidecar/app."""
    app = [(n, c, m) for n, c, m, k in containers if k == "app"]
    init = [(n, c, m) for n, c, m, k in containers if k != "app"]
    body = pod_body(name, app, init=init)
    for spec in body["spec"]["initContainers"]:
        if any(n == spec["name"] and k == "sidecar" for n, _, _, k in containers):
            spec["restartPolicy"] = "Always"
    shares = {n: [(G(0), c, m)] for n, c, m, _ in containers}
    body["metadata"]["annotations"][NAMES.assignment] = assignment(NODE, shares, pod=body)
    env.core.create_namespaced_pod("default", body, _preload_content=False)
    env.cluster.bind("default", name, NODE)


async def admit(env: Any, name: str, containers: list[tuple[str, int, int, str]]) -> dict[str, Any]:
    admitted = await env.admit(
        name,
        [(n, c) for n, c, _, _ in containers],
        init=[n for n, _, _, k in containers if k == "init"],
        sidecars=[n for n, _, _, k in containers if k == "sidecar"],
    )
    return {a.container: a for a in admitted}


async def start_all(env: Any, name: str, containers: list[tuple[str, int, int, str]]) -> None:
    for n, _, _, _ in containers:
        await env.start_container(name, n)  # raises when PreStartContainer refuses
    status = env.status(name)
    assert status.phase is Phase.ALLOCATED
    assert set(status.allocated) == {n for n, _, _, _ in containers}


def check_config(env: Any, admitted: Any, cores: int, mib: int) -> None:
    config = env.config_of(admitted)
    assert config.container == admitted.container
    assert [(g.uuid, g.core_limit, g.memory_limit_bytes) for g in config.gpus] == [(G(0), cores, mib * MIB)]


async def test_app_container_reusing_its_init_containers_ids_is_attributed_and_starts(env_factory) -> None:
    env = await env_factory()
    pod = [("setup", 50, 2048, "init"), ("main", 50, 4096, "app")]
    create(env, "reuse", pod)
    got = await admit(env, "reuse", pod)
    assert sorted(got["main"].ids) == sorted(got["setup"].ids)  # the kubelet reused every init ID
    assert got["main"].preferred is None  # ... without asking GetPreferredAllocation
    check_config(env, got["setup"], 50, 2048)
    check_config(env, got["main"], 50, 4096)
    listed = {c.name for p in env.kubelet.pod_resources().pod_resources for c in p.containers}
    assert listed == {"main"}  # PodResources never lists a regular init container
    await start_all(env, "reuse", pod)


async def test_two_app_containers_split_their_init_containers_ids(env_factory) -> None:
    env = await env_factory()
    pod = [("setup", 50, 1024, "init"), ("a", 30, 2048, "app"), ("b", 20, 4096, "app")]
    create(env, "split", pod)
    got = await admit(env, "split", pod)
    assert sorted(got["a"].ids + got["b"].ids) == sorted(got["setup"].ids)
    check_config(env, got["a"], 30, 2048)
    check_config(env, got["b"], 20, 4096)
    await start_all(env, "split", pod)


async def test_a_larger_app_container_is_steered_around_the_reused_ids(env_factory) -> None:
    env = await env_factory()
    pod = [("setup", 30, 1024, "init"), ("main", 50, 2048, "app")]
    create(env, "grow", pod)
    got = await admit(env, "grow", pod)
    assert set(got["setup"].ids) < set(got["main"].ids)
    assert got["main"].preferred is not None
    assert set(got["main"].preferred) == set(got["main"].ids)  # the plugin's answer kept the reused IDs
    check_config(env, got["main"], 50, 2048)
    await start_all(env, "grow", pod)


@pytest.mark.parametrize(
    "pod",
    [
        pytest.param(
            [("proxy", 20, 512, "sidecar"), ("setup", 50, 1024, "init"), ("main", 50, 2048, "app")],
            id="sidecar first: the app reuses the init's IDs only",
        ),
        pytest.param(
            [("setup", 50, 1024, "init"), ("proxy", 20, 512, "sidecar"), ("main", 50, 2048, "app")],
            id="sidecar after the init: reuses 20 of its IDs and keeps them",
        ),
    ],
)
async def test_a_sidecar_keeps_its_own_ids(env_factory, pod) -> None:
    env = await env_factory()
    create(env, "side", pod)
    got = await admit(env, "side", pod)
    assert not set(got["proxy"].ids) & set(got["main"].ids)
    assert set(got["proxy"].ids) | set(got["main"].ids) >= set(got["setup"].ids)
    check_config(env, got["proxy"], 20, 512)
    check_config(env, got["main"], 50, 2048)
    listed = {c.name for p in env.kubelet.pod_resources().pod_resources for c in p.containers}
    assert listed == {"proxy", "main"}
    await start_all(env, "side", pod)
