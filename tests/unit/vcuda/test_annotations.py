"""Annotation encodings: exact round trips (hypothesis), signatures that cannot be forged or moved to another
pod, a request digest that follows every input of the GPU request, swaps that cannot grow a share, and clear
errors on malformed documents."""

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.signing_keys import KEYRING, OTHER_SIGNER, SIGNER
from vcuda.annotations import (
    AssignmentRefusedError,
    PodStatus,
    apply_moves,
    decode_assignment,
    decode_inventory,
    decode_status,
    encode_assignment,
    encode_inventory,
    encode_status,
)
from vcuda.errors import ContractError
from vcuda.model import (
    ContainerAssignment,
    GpuInfo,
    GpuLink,
    GpuMode,
    GpuShare,
    GpuUuid,
    MigInfo,
    NodeInventory,
    NodeName,
    OtherModeGpu,
    PcieLevel,
    Phase,
    PodAssignment,
)
from vcuda.names import Names
from vcuda.signing import PodBinding, pod_binding

BINDING = PodBinding("uid-1", "ns", "p", "0" * 64)
uuids = st.text("0123456789abcdef-", min_size=1, max_size=40).map(lambda s: GpuUuid("GPU-" + s))
names = st.text(min_size=1, max_size=30)
shares = st.builds(GpuShare, uuids, st.integers(1, 100), st.integers(0, 1 << 20))
containers = st.builds(
    ContainerAssignment, names, st.lists(shares, min_size=1, max_size=4).map(tuple), st.integers(1, 100)
)
assignments = st.builds(
    PodAssignment, names.map(NodeName), st.lists(containers, min_size=1, max_size=4).map(tuple)
)
bindings = st.builds(PodBinding, names, names, names, st.text("0123456789abcdef", min_size=64, max_size=64))


@settings(max_examples=300)
@given(assignments, bindings)
def test_assignment_round_trips(assignment: PodAssignment, pod: PodBinding) -> None:
    assert decode_assignment(encode_assignment(assignment, pod, SIGNER), pod, KEYRING) == assignment


moves = st.lists(st.tuples(names, st.lists(shares, min_size=1, max_size=3).map(tuple)), max_size=3).map(
    lambda m: tuple(sorted(dict(m).items()))
)


@settings(max_examples=300)
@given(
    st.builds(PodStatus, st.sampled_from(Phase), st.lists(names).map(tuple), st.floats(0, 2e9), names, moves)
)
def test_status_round_trips(status: PodStatus) -> None:
    assert decode_status(encode_status(status)) == status


@st.composite
def inventories(draw: st.DrawFn) -> NodeInventory:
    ids = draw(st.lists(uuids, min_size=0, max_size=8, unique=True))
    gpus = tuple(
        GpuInfo(
            u, i, draw(names), draw(st.integers(0, 1 << 20)), draw(st.booleans()), draw(st.integers(-1, 3))
        )
        for i, u in enumerate(ids)
    )
    links = tuple(
        GpuLink(a, b, draw(st.integers(0, 18)), draw(st.sampled_from(PcieLevel)))
        for i, a in enumerate(ids)
        for b in ids[i + 1 :]
    )
    mig_ids = draw(st.lists(names, max_size=6, unique=True))
    parent = GpuUuid("GPU-mig-parent")  # MIG GPUs are never among the shared ones
    mig = tuple(
        MigInfo(u, parent, draw(names), draw(st.integers(0, 1 << 18)), draw(st.integers(0, 132)))
        for u in mig_ids
    )
    other_ids = draw(st.lists(uuids, max_size=4, unique=True).map(lambda xs: [x for x in xs if x not in ids]))
    other = tuple(
        OtherModeGpu(
            u,
            i,
            draw(names),
            draw(st.integers(0, 1 << 20)),
            draw(st.sampled_from([GpuMode.WHOLE, GpuMode.TIME_SLICING, GpuMode.MPS, GpuMode.DRA])),
            draw(names),
            draw(st.integers(1, 48)),
            draw(st.booleans()),
        )
        for i, u in enumerate(other_ids)
    )
    return NodeInventory(gpus, links, mig, other)


@settings(max_examples=300)
@given(inventories())
def test_inventory_round_trips(inventory: NodeInventory) -> None:
    assert decode_inventory(encode_inventory(inventory)) == inventory


ONE = PodAssignment(
    NodeName("n1"), (ContainerAssignment("c", (GpuShare(GpuUuid("GPU-a"), 30, 4096),), core_limit=30),)
)


def _signed_doc(assignment: PodAssignment = ONE, pod: PodBinding = BINDING) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode_assignment(assignment, pod, SIGNER))
    return doc


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("node", "n2", id="node"),
        pytest.param("request", "1" * 64, id="request digest"),
        pytest.param("kid", "ed25519-0000000000000000", id="key ID"),
        pytest.param("pod", {"uid": "uid-2", "namespace": "ns", "name": "p"}, id="pod"),
    ],
)
def test_every_signed_field_is_covered_by_the_signature(field: str, value: object) -> None:
    doc = {**_signed_doc(), field: value}
    with pytest.raises(AssignmentRefusedError, match="not signed by a kube-vgpu key") as err:
        decode_assignment(json.dumps(doc), BINDING, KEYRING)
    assert err.value.reason == "unsigned"


def test_a_hand_edited_gpu_is_refused() -> None:
    doc = _signed_doc()
    doc["containers"][0]["gpus"][0]["uuid"] = "GPU-someone-elses"
    with pytest.raises(AssignmentRefusedError, match="not signed by a kube-vgpu key"):
        decode_assignment(json.dumps(doc), BINDING, KEYRING)


def test_an_assignment_signed_with_another_key_is_refused() -> None:
    text = encode_assignment(ONE, BINDING, OTHER_SIGNER)
    with pytest.raises(AssignmentRefusedError, match="not signed") as err:
        decode_assignment(text, BINDING, KEYRING)
    assert err.value.reason == "unsigned"


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        pytest.param(replace(BINDING, uid="uid-2"), "other-pod", id="same name, another UID (recreated)"),
        pytest.param(replace(BINDING, name="q"), "other-pod", id="another pod's name"),
        pytest.param(replace(BINDING, namespace="other"), "other-pod", id="another namespace"),
        pytest.param(replace(BINDING, request="1" * 64), "request-changed", id="request changed"),
    ],
)
def test_a_genuine_assignment_is_refused_on_any_other_pod(pod: PodBinding, reason: str) -> None:
    text = encode_assignment(ONE, BINDING, SIGNER)
    with pytest.raises(AssignmentRefusedError) as err:
        decode_assignment(text, pod, KEYRING)
    assert err.value.reason == reason


def test_the_request_digest_follows_every_input_of_the_gpu_request() -> None:
    n = Names()
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "annotations": {"other": "x"}},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {n.core: "30", n.memory: "4096"}}}]},
    }
    base = pod_binding(pod, n)
    pod["metadata"]["annotations"]["other"] = "y"  # not part of the GPU request
    pod["metadata"]["resourceVersion"] = "9"
    assert pod_binding(pod, n) == base
    changes: list[Callable[[dict[str, Any]], None]] = [
        lambda p: p["spec"]["containers"][0]["resources"]["limits"].update({n.memory: "8192"}),
        lambda p: p["metadata"]["annotations"].update({n.core_limit: "100"}),
        lambda p: p["metadata"]["annotations"].update({n.include_uuids: "GPU-x"}),
        lambda p: p["spec"].update(
            {"initContainers": [{"name": "i", "resources": {"limits": {n.core: "1"}}}]}
        ),
        lambda p: p["spec"]["containers"][0].update({"name": "renamed"}),
    ]
    for change in changes:
        changed = json.loads(json.dumps(pod))
        change(changed)
        assert pod_binding(changed, n).request != base.request


def test_moves_apply_only_as_swaps_between_equal_shares() -> None:
    other = (GpuShare(GpuUuid("GPU-b"), 30, 4096),)
    assert apply_moves(ONE, [("c", other)]).containers[0].shares == other
    bigger = (GpuShare(GpuUuid("GPU-b"), 100, 81920),)
    assert apply_moves(ONE, [("c", bigger)]) == ONE  # a status cannot grow a container's share
    assert apply_moves(ONE, [("ghost", other)]) == ONE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{", "not JSON", id="truncated"),
        pytest.param("[]", "JSON object", id="array"),
        pytest.param('{"v": 3}', "version 3", id="future version"),
        pytest.param('{"v": 1, "node": "n", "containers": [], "mac": "00"}', "version 1", id="HMAC era"),
        pytest.param('{"v": 2, "node": 5, "containers": []}', "must be", id="wrong type"),
        pytest.param(
            '{"v": 2, "kid": "k", "sig": "", "request": "", "pod": {"uid": "", "namespace": "", "name": ""},'
            ' "node": "n", "containers": [{}]}',
            "must be list",
            id="container without GPUs",
        ),
        pytest.param(
            '{"v": 2, "kid": "k", "sig": "!!", "request": "", "pod": {"uid": "", "namespace": "", "name": ""},'
            ' "node": "n", "containers": []}',
            "base64",
            id="signature not base64",
        ),
    ],
)
def test_malformed_assignments_raise_contract_errors(text: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        decode_assignment(text, BINDING, KEYRING)


def test_inventory_links_must_name_known_gpus() -> None:
    text = json.dumps({"v": 1, "gpus": [], "links": [{"a": "x", "b": "y", "nvlinks": 0, "pcie": 10}]})
    with pytest.raises(ContractError, match="does not have"):
        decode_inventory(text)


def test_an_inventory_written_before_mig_support_reads_without_instances() -> None:
    text = json.dumps({"v": 1, "gpus": [], "links": []})
    assert decode_inventory(text) == NodeInventory((), (), ())


OTHER = {
    "uuid": "GPU-a",
    "index": 0,
    "model": "A100",
    "memoryMiB": 40960,
    "mode": "time-slicing",
    "resource": "nvidia.com/gpu",
    "replicas": 4,
    "healthy": True,
}


def test_a_gpu_sold_in_another_mode_cannot_also_be_shared() -> None:
    gpu = {"uuid": "GPU-a", "index": 0, "model": "A100", "memoryMiB": 40960, "healthy": True, "numa": 0}
    with pytest.raises(ContractError, match="two modes"):
        decode_inventory(json.dumps({"v": 1, "gpus": [gpu], "links": [], "other": [OTHER]}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "vcuda"}, "listed in 'gpus'"),
        ({"mode": "turbo"}, "unknown mode"),
        ({"replicas": 0}, "fewer than one replica"),
    ],
)
def test_other_mode_gpus_are_checked(change: dict[str, object], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        decode_inventory(json.dumps({"v": 1, "gpus": [], "links": [], "other": [{**OTHER, **change}]}))


def test_a_mig_gpu_cannot_also_be_shared() -> None:
    gpu = {"uuid": "GPU-a", "index": 0, "model": "A100", "memoryMiB": 40960, "healthy": True, "numa": 0}
    mig = {
        "uuid": "MIG-1",
        "parent": "GPU-a",
        "profile": "3g.20gb",
        "memoryMiB": 19968,
        "multiprocessors": 42,
    }
    with pytest.raises(ContractError, match="also listed as a shared GPU"):
        decode_inventory(json.dumps({"v": 1, "gpus": [gpu], "links": [], "mig": [mig]}))
