# mypy: disable-error-code="no-untyped-call"
"""Whose a prepared claim is (``plugin.core.dra._owner``), through the real DRA gRPC API, the fake kubelet and
the real ``kubernetes`` client on kmock: the pod a claim was made for (its controller owner, reserved for it
alone), else the claim itself. Attacked as a tenant and as the real kubelet does it:

- a tenant's claim whose ``ownerReferences`` name a victim pod of the namespace (as controller, several
  controllers, a malformed UID, a huge list) gets no pod's identity, collides with no other claim's files
  and fails no one's prepare;
- a claim of its own held by one pod at its first prepare keeps the claim's identity when a second pod joins
  (the kubelet, restarted, calls the driver again for it), across a driver restart, and its directory is the
  one the watchdog is told about (``ClaimPreparer.claim_dirs``);
- a claim prepared before the owner rule changed (a pod's identity for a claim of its own, in the
  checkpoint) keeps that identity across restarts and re-prepares, and unprepare removes its old directory.
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from plugin.core.allocate import CONFIG_FILE_NAME
from tests.builders.dra import DRIVER, GIB, claim, dev, pod_owner, result
from tests.fakes.kmock import KmockCluster
from tests.fixtures.plugin_env import NODE
from tests.integration.plugin.test_dra_plugin import GPUS, DraEnv, pod
from vcuda.shimfile import decode_config

NS = "default"


@pytest.fixture
async def dra(short_dir: Path, kmock_cluster: KmockCluster) -> AsyncIterator[DraEnv]:
    """The agent with ``--front-end=dra`` and its fake kubelet (as in ``test_dra_plugin.py``)."""
    kmock_cluster.core().create_node({"metadata": {"name": NODE}}, _preload_content=False)
    env = DraEnv(short_dir, kmock_cluster)
    await env.kubelet.start()
    await env.start_plugin()
    await env.kubelet.wait_registered(DRIVER)
    yield env
    await env.stop_plugin()
    await env.kubelet.stop()


def identity(env: DraEnv, claim_uid: str) -> tuple[str, str, str]:
    """(directory, config pod UID, config pod name) of the claim's one state directory."""
    (folder,) = (env.state / "containers").glob(f"*_dra-{claim_uid}")
    config = decode_config((folder / CONFIG_FILE_NAME).read_bytes())
    return folder.name, config.pod_uid, config.pod_name


def reserve(env: DraEnv, name: str, pods: list[tuple[str, str]], owners: list[Any] | None = None) -> None:
    """The scheduler adds pods to ``reservedFor``; ``owners`` replaces ``ownerReferences`` (None: keep)."""
    body = json.loads(env.resource.read_namespaced_resource_claim(name, NS, _preload_content=False).data)
    body["status"]["reservedFor"] = [{"resource": "pods", "name": n, "uid": u} for n, u in pods]
    if owners is not None:
        body["metadata"]["ownerReferences"] = owners
    env.resource.replace_namespaced_resource_claim(name, NS, body, _preload_content=False)


def everything_removed(env: DraEnv) -> bool:
    tenants = env.state / "node" / "tenants"
    return (
        env.spec_files() == []
        and env.claim_dirs() == []
        and env.checkpoint() == {}
        and not any(tenants.iterdir())
    )


VICTIM = ("victim", "u-victim")
HUGE = [pod_owner(f"p{i}", f"u-{i}") | {"controller": False} for i in range(3000)]


@pytest.mark.parametrize(
    "owners",
    [
        pytest.param([pod_owner(*VICTIM)], id="the victim as controller"),
        pytest.param([pod_owner(*VICTIM), pod_owner("t", "u-t")], id="several controllers, the victim first"),
        pytest.param([pod_owner("victim", "../../u-victim")], id="a controller with a malformed UID"),
        pytest.param([*HUGE, pod_owner(*VICTIM)], id="a huge list ending with the victim"),
        pytest.param([pod_owner(*VICTIM) | {"apiVersion": "x.io/v1"}], id="a Pod of another group"),
    ],
)
async def test_a_tenants_forged_owner_gives_its_claim_no_pods_identity_and_touches_no_one_else(
    dra: DraEnv, owners: list[Any]
) -> None:
    victim = dra.create_claim(
        claim("victim-gpu", pods=[VICTIM], results=[result(dev(GPUS[0]), memory=GIB, cores=10)])
    )
    evil = dra.create_claim(
        claim("evil", pods=[("t", "u-t")], results=[result(dev(GPUS[0]), memory=GIB, cores=10)])
    )
    reserve(dra, "evil", [("t", "u-t")], owners)
    await dra.kubelet.prepare_pod(pod("t", "u-t", "evil"))
    await dra.kubelet.prepare_pod(pod(*VICTIM, "victim-gpu"))

    evil_uid, victim_uid = evil["metadata"]["uid"], victim["metadata"]["uid"]
    assert identity(dra, evil_uid) == (f"{evil_uid}_dra-{evil_uid}", evil_uid, "evil")
    assert identity(dra, victim_uid) == (f"u-victim_dra-{victim_uid}", "u-victim", "victim")
    assert dra.agent is not None
    assert dra.agent.dra is not None
    assert dra.agent.dra.preparer.claim_dirs() == {
        (NS, "evil"): f"{evil_uid}_dra-{evil_uid}",
        (NS, "victim-gpu"): f"u-victim_dra-{victim_uid}",
    }
    await dra.kubelet.unprepare_pod(pod("t", "u-t", "evil"))
    assert identity(dra, victim_uid)[0] == f"u-victim_dra-{victim_uid}"  # the victim's files are intact
    await dra.kubelet.unprepare_pod(pod(*VICTIM, "victim-gpu"))
    assert everything_removed(dra)


async def test_a_claim_of_its_own_keeps_its_identity_when_a_second_pod_joins_and_across_restarts(
    dra: DraEnv,
) -> None:
    body = dra.create_claim(
        claim(
            "shared",
            pods=[("a", "u-a")],
            results=[result(dev(GPUS[1]), memory=GIB, cores=20)],
            from_template=False,
        )
    )
    uid = body["metadata"]["uid"]
    mine = (f"{uid}_dra-{uid}", uid, "shared")
    first = (await dra.kubelet.prepare_pod(pod("a", "u-a", "shared")))["shared"]
    assert identity(dra, uid) == mine

    reserve(dra, "shared", [("a", "u-a"), ("b", "u-b")])  # a second pod joins the claim
    old = dra.kubelet.plugins[DRIVER].generation
    await dra.stop_plugin()
    await dra.start_plugin()
    await dra.kubelet.wait_registered(DRIVER, after=old)
    await dra.kubelet.restart()  # its cache comes back unprepared: the driver is called again, for b
    await dra.kubelet.wait_registered(DRIVER)
    calls = dra.kubelet.calls["prepare"]
    assert (await dra.kubelet.prepare_pod(pod("b", "u-b", "shared")))["shared"] == first
    assert dra.kubelet.calls["prepare"] == calls + 1
    assert identity(dra, uid) == mine
    assert dra.agent is not None
    assert dra.agent.dra is not None
    assert dra.agent.dra.preparer.claim_dirs() == {(NS, "shared"): mine[0]}

    await dra.kubelet.prepare_pod(pod("a", "u-a", "shared"))
    await dra.kubelet.unprepare_pod(pod("a", "u-a", "shared"))
    assert identity(dra, uid) == mine  # b still uses it
    await dra.kubelet.unprepare_pod(pod("b", "u-b", "shared"))
    assert everything_removed(dra)


async def test_a_claim_prepared_under_the_old_owner_rule_keeps_its_directory_and_unprepare_removes_it(
    dra: DraEnv,
) -> None:
    """The rule before: the one pod a claim was reserved for owned it. Such a checkpoint record is made here
    by preparing while the claim names its pod as controller, then taking the reference away (the claim as
    the new rule reads it: a claim of its own); nothing in the record tells the two rules apart."""
    body = dra.create_claim(
        claim("legacy", pods=[("a", "u-a")], results=[result(dev(GPUS[2]), memory=GIB, cores=20)])
    )
    uid = body["metadata"]["uid"]
    first = (await dra.kubelet.prepare_pod(pod("a", "u-a", "legacy")))["legacy"]
    legacy = (f"u-a_dra-{uid}", "u-a", "a")
    assert identity(dra, uid) == legacy
    reserve(dra, "legacy", [("a", "u-a")], owners=[])

    old = dra.kubelet.plugins[DRIVER].generation
    await dra.stop_plugin()
    for spec in dra.spec_files():  # a reboot empties /var/run/cdi; the checkpoint stays
        spec.unlink()
    await dra.start_plugin()
    await dra.kubelet.wait_registered(DRIVER, after=old)
    assert len(dra.spec_files()) == 1  # restored under the recorded identity
    assert identity(dra, uid) == legacy
    await dra.kubelet.restart()
    await dra.kubelet.wait_registered(DRIVER)
    assert (await dra.kubelet.prepare_pod(pod("a", "u-a", "legacy")))["legacy"] == first
    assert identity(dra, uid) == legacy  # no second directory under the claim's own identity

    await dra.kubelet.unprepare_pod(pod("a", "u-a", "legacy"))
    assert everything_removed(dra)
