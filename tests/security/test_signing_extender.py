"""Forged and copied assignments against the extender, over its real HTTP listener (uvicorn, FakeCluster as the
API server feeding the state like a watch).

Attacker: a tenant who can create and update its own pods (annotations included) and read other pods'
annotations. Each case plants an assignment where the extender will read it, then asks the extender, over
HTTP, for the GPU the plant names: the answer must be that the GPU is free (the plant claims nothing), and
the genuine holder's assignment still counts.

Cases: a genuine assignment copied onto another pod (same node; another namespace; the same name after the
original pod was deleted and re-created, i.e. another UID); a genuine assignment on a pod whose GPU request was
changed afterwards (the core-limit annotation); an assignment signed with a key kube-vgpu does not trust; the
HMAC-era (v1) format. A bind over HTTP then writes an assignment bound to the pod it was made for.
"""

import copy
from typing import Any

import httpx
import pytest

from extender.app import create_app
from tests.fakes.extender import NAMES, assignment_of, gpu_node, ledger_of, make_deps, pod_obj
from tests.fixtures.extender_server import serving
from tests.signing_keys import KEYRING, OTHER_SIGNER, SIGNER, sign_for
from vcuda.annotations import AssignmentRefusedError, decode_assignment
from vcuda.model import ContainerAssignment, GpuShare, GpuUuid, NodeName, PodAssignment
from vcuda.signing import pod_binding

PREFIX = "/scheduler"
WHOLE_GPU = (100, 0)


def gpu(i: int) -> GpuUuid:
    return GpuUuid(f"GPU-n1-{i:04d}")


def whole_gpu_assignment(index: int = 0) -> PodAssignment:
    return PodAssignment(
        NodeName("n1"), (ContainerAssignment("c0", (GpuShare(gpu(index), 100, 81920),), 100),)
    )


@pytest.fixture
async def extender():
    deps, cluster = make_deps([gpu_node("n1", gpus=1)])
    async with (
        serving(create_app(deps)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        yield http, deps, cluster


async def whole_gpu_fits_n1(http: httpx.AsyncClient) -> bool:
    """Asks the extender over HTTP whether a pod wanting n1's only GPU, whole, would fit there."""
    pod = pod_obj("probe", WHOLE_GPU)
    answer = await http.post(f"{PREFIX}/filter", json={"Pod": pod, "Nodes": None, "NodeNames": ["n1"]})
    assert answer.status_code == 200
    return bool(answer.json()["NodeNames"] == ["n1"])


def victim_with_genuine_assignment() -> dict[str, Any]:
    victim = pod_obj("victim", WHOLE_GPU, namespace="team-a", uid="uid-victim", node="n1", phase="Running")
    victim["metadata"]["annotations"][NAMES.assignment] = sign_for(victim, whole_gpu_assignment(), NAMES)
    return victim


def plant(pod: dict[str, Any], text: str) -> dict[str, Any]:
    pod["metadata"]["annotations"][NAMES.assignment] = text
    return pod


@pytest.mark.parametrize(
    "attacker",
    [
        pytest.param(dict(name="thief", namespace="team-a", uid="uid-thief"), id="copied to another pod"),
        pytest.param(dict(name="victim", namespace="team-b", uid="uid-x"), id="copied to another namespace"),
        pytest.param(
            dict(name="victim", namespace="team-a", uid="uid-new"), id="same name, re-created (UID)"
        ),
    ],
)
async def test_a_copied_genuine_assignment_claims_no_gpu(extender, attacker):
    http, deps, cluster = extender
    victim = victim_with_genuine_assignment()
    text = victim["metadata"]["annotations"][NAMES.assignment]
    cluster.add(victim)
    assert not await whole_gpu_fits_n1(http)  # the genuine holder counts
    cluster.state.remove_pod(victim)  # the victim ends; its GPU is free again
    assert await whole_gpu_fits_n1(http)
    # The copy sits on a bound pod that asks for no GPU: it must not keep the GPU taken.
    thief = plant(
        pod_obj(attacker["name"], namespace=attacker["namespace"], uid=attacker["uid"], node="n1"), text
    )
    cluster.add(thief)
    assert await whole_gpu_fits_n1(http)
    assert deps.metrics.forged._value.get() == 1
    assert ledger_of(deps.state, "n1").load == {}


async def test_an_assignment_whose_pod_changed_its_request_is_ignored(extender):
    http, deps, cluster = extender
    pod = pod_obj("grower", (10, 1024), uid="uid-g", node="n1", phase="Running")
    small = PodAssignment(NodeName("n1"), (ContainerAssignment("c0", (GpuShare(gpu(0), 10, 1024),), 10),))
    pod["metadata"]["annotations"][NAMES.assignment] = sign_for(pod, small, NAMES)
    cluster.add(pod)
    assert ledger_of(deps.state, "n1").load[gpu(0)].cores == 10
    grown = copy.deepcopy(pod)
    grown["metadata"]["annotations"][NAMES.core_limit] = "100"  # the tenant raises its own soft limit
    with pytest.raises(AssignmentRefusedError, match="changed after its assignment was signed"):
        assignment_of(grown)
    cluster.add(grown)
    # The old verified holding stays (its GPU is in use); nothing is granted on the strength of the edit.
    assert ledger_of(deps.state, "n1").load[gpu(0)].cores == 10
    assert not await whole_gpu_fits_n1(http)
    assert deps.metrics.forged._value.get() == 1


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("untrusted key", id="signed with another key"),
        pytest.param('{"v":1,"node":"n1","containers":[],"mac":"00"}', id="HMAC-era document"),
    ],
)
async def test_an_untrusted_assignment_on_a_pod_the_tenant_bound_itself_claims_no_gpu(extender, text):
    http, deps, cluster = extender
    pod = pod_obj("selfbound", namespace="team-b", uid="uid-s", node="n1")  # asks for no GPU
    if text == "untrusted key":
        text = sign_for(pod, whole_gpu_assignment(), NAMES, OTHER_SIGNER)
    cluster.add(plant(pod, text))
    assert await whole_gpu_fits_n1(http)
    assert deps.metrics.forged._value.get() == 1


async def test_a_bind_over_http_signs_for_exactly_the_pod_it_binds(extender):
    http, _, cluster = extender
    pod = pod_obj("p", (30, 4096), uid="uid-p")
    cluster.add(pod)
    answer = await http.post(
        f"{PREFIX}/bind", json={"PodName": "p", "PodNamespace": "default", "PodUID": "uid-p", "Node": "n1"}
    )
    assert answer.json() == {"Error": ""}
    stored = await cluster.read_pod("default", "p")
    assert assignment_of(stored).containers[0].shares[0].memory_mib == 4096
    other = pod_obj("q", (30, 4096), uid="uid-q")
    with pytest.raises(AssignmentRefusedError, match="signed for pod default/p"):
        decode_assignment(
            stored["metadata"]["annotations"][NAMES.assignment], pod_binding(other, NAMES), KEYRING
        )
    assert SIGNER.key_id in stored["metadata"]["annotations"][NAMES.assignment]
