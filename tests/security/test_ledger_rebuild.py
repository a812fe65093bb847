"""The ledger never forgets a running pod's GPU because its assignment annotation vanished or was tampered
with: the real Kubernetes adapter (watches and client) against kmock as the API server, and extender restarts.

Attacker: the tenant owning a running GPU pod, who deletes, empties, edits or replaces its own assignment
annotation (nothing stops it on a cluster without the chart's ValidatingAdmissionPolicy), hoping that after an
extender restart its GPU is sold again. Each case binds the pod through the extender, tampers with the
annotation through the API server, restarts the extender (a fresh one rebuilds from the lists only) and asks it
to bind a second pod that needs the same GPU whole: it must not get that GPU. The running extender must also
keep the exact holding it verified before the tampering (by UID), without a restart.
"""

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes.extender import NAMES, assignment_of, gpu_node, ledger_of, pod_obj
from tests.fakes.kmock import KmockCluster
from tests.fixtures.extender_kmock import (
    Extender,
    create_pod,
    has_inventory,
    read_pod,
    wait_until,
)
from tests.signing_keys import OTHER_SIGNER, sign_for
from vcuda.annotations import decode_assignment_unverified

WHOLE = (100, 0)


@pytest.fixture
def api():
    with KmockCluster() as cluster:
        cluster.core().create_node(gpu_node("n1", gpus=2), _preload_content=False)
        yield cluster


def set_annotation(api: KmockCluster, name: str, value: str | None) -> None:
    patch = {"metadata": {"annotations": {NAMES.assignment: value}}}
    api.core().patch_namespaced_pod(name, "default", patch, _preload_content=False)


def copied_from_other(api: KmockCluster, pod: dict[str, Any]) -> str:
    """A genuine assignment of another pod on the same node for the *other* GPU (a copy, not forged)."""
    other = create_pod(api, pod_obj("donor", (1, 1)))
    assignment = decode_assignment_unverified(pod["metadata"]["annotations"][NAMES.assignment])
    return sign_for(other, assignment, NAMES)


TAMPERING: dict[str, Callable[[KmockCluster, dict[str, Any]], str | None]] = {
    "deleted": lambda api, pod: None,
    "emptied": lambda api, pod: "",
    "garbage": lambda api, pod: "{not json",
    "re-signed with an untrusted key": lambda api, pod: sign_for(
        pod, assignment_of(pod), NAMES, OTHER_SIGNER
    ),
    "edited to the other GPU": lambda api, pod: json.dumps(
        {
            **(doc := json.loads(pod["metadata"]["annotations"][NAMES.assignment])),
            "containers": [
                {**doc["containers"][0], "gpus": [{**doc["containers"][0]["gpus"][0], "uuid": "GPU-n1-0001"}]}
            ],
        }
    ),
    "replaced by another pod's genuine assignment": copied_from_other,
}


async def bind(ext: Extender, api: KmockCluster, name: str) -> str:
    pod = create_pod(api, pod_obj(name, WHOLE))
    return (await ext.scheduler.bind("default", name, pod["metadata"]["uid"], "n1")).error


@pytest.mark.parametrize("how", list(TAMPERING))
async def test_a_tampered_assignment_never_frees_the_gpu_before_or_after_a_restart(api, how):
    with Extender(api) as first:
        wait_until(lambda: has_inventory(first.state, "n1"), "inventory")
        assert await bind(first, api, "victim") == ""
        victim = read_pod(api, "victim")
        held = assignment_of(victim).containers[0].shares[0].uuid
        wait_until(lambda: held in ledger_of(first.state, "n1").load, "the bound pod")
        set_annotation(api, "victim", TAMPERING[how](api, victim))
        wait_until(
            lambda: (
                read_pod(api, "victim")["metadata"]["resourceVersion"]
                != victim["metadata"]["resourceVersion"]
            ),
            "the edit",
        )
        assert ledger_of(first.state, "n1").load[held].cores == 100  # kept by UID, exactly
    with Extender(api) as second:
        wait_until(lambda: has_inventory(second.state, "n1"), "inventory")
        wait_until(lambda: ledger_of(second.state, "n1").load.get(held) is not None, "the rebuilt load")
        assert ledger_of(second.state, "n1").load[held].cores == 100
        error = await bind(second, api, "second")
        if error == "":
            got = assignment_of(read_pod(api, "second")).containers[0].shares[0].uuid
            assert got != held, f"GPU {held} sold twice after the annotation was {how}"


async def test_an_untampered_pod_is_rebuilt_exactly(api):
    with Extender(api) as first:
        wait_until(lambda: has_inventory(first.state, "n1"), "inventory")
        assert await bind(first, api, "honest") == ""
        before = dict(ledger_of(first.state, "n1").load)
    with Extender(api) as second:
        wait_until(lambda: ledger_of(second.state, "n1").load == before, "the same load")
        assert len(before) == 1  # one GPU held, the other still for sale
        assert await bind(second, api, "next") == ""


def test_a_status_move_written_by_anyone_never_frees_the_signed_gpu():
    """Where no admission policy guards the plugin's status, a tenant could write a ``moved`` record: the
    extender charges the moved container on both GPUs, never only on the one the record names."""
    from extender.core.ledger import PodKey
    from tests.fakes.extender import make_deps
    from vcuda.annotations import PodStatus, encode_status
    from vcuda.model import ContainerAssignment, GpuShare, GpuUuid, NodeName, Phase, PodAssignment

    deps, _ = make_deps([gpu_node("n1", gpus=2)])
    pod = pod_obj("p", (30, 4096), uid="uid-p", node="n1", phase="Running")
    signed = PodAssignment(
        NodeName("n1"), (ContainerAssignment("c0", (GpuShare(GpuUuid("GPU-n1-0000"), 30, 4096),), 30),)
    )
    pod["metadata"]["annotations"][NAMES.assignment] = sign_for(pod, signed, NAMES)
    moved = (("c0", (GpuShare(GpuUuid("GPU-n1-0001"), 30, 4096),)),)
    pod["metadata"]["annotations"][NAMES.status] = encode_status(
        PodStatus(Phase.ALLOCATED, ("c0",), 0.0, "", moved)
    )
    deps.state.apply_pod(pod)
    load = ledger_of(deps.state, "n1").load
    assert {u: lo.cores for u, lo in load.items()} == {"GPU-n1-0000": 30, "GPU-n1-0001": 30}
    deps.state.remove_pod(pod)
    assert deps.state.holding(PodKey("uid-p")) is None
    assert ledger_of(deps.state, "n1").load == {}
