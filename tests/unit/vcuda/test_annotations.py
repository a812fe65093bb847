"""Annotation encodings: exact round trips (hypothesis), signatures that cannot be forged, and clear errors on
malformed documents."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcuda.annotations import (
    PodStatus,
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
    GpuShare,
    GpuUuid,
    MigInfo,
    NodeInventory,
    NodeName,
    PcieLevel,
    Phase,
    PodAssignment,
)

KEY = b"test-key"
uuids = st.text("0123456789abcdef-", min_size=1, max_size=40).map(lambda s: GpuUuid("GPU-" + s))
names = st.text(min_size=1, max_size=30)
shares = st.builds(GpuShare, uuids, st.integers(1, 100), st.integers(0, 1 << 20))
containers = st.builds(
    ContainerAssignment, names, st.lists(shares, min_size=1, max_size=4).map(tuple), st.integers(1, 100)
)
assignments = st.builds(
    PodAssignment, names.map(NodeName), st.lists(containers, min_size=1, max_size=4).map(tuple)
)


@settings(max_examples=300)
@given(assignments)
def test_assignment_round_trips(assignment: PodAssignment) -> None:
    assert decode_assignment(encode_assignment(assignment, KEY), KEY) == assignment


@settings(max_examples=300)
@given(st.builds(PodStatus, st.sampled_from(Phase), st.lists(names).map(tuple), st.floats(0, 2e9), names))
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
    return NodeInventory(gpus, links, mig)


@settings(max_examples=300)
@given(inventories())
def test_inventory_round_trips(inventory: NodeInventory) -> None:
    assert decode_inventory(encode_inventory(inventory)) == inventory


ONE = PodAssignment(
    NodeName("n1"), (ContainerAssignment("c", (GpuShare(GpuUuid("GPU-a"), 30, 4096),), core_limit=30),)
)


def test_a_hand_edited_assignment_is_refused() -> None:
    doc = json.loads(encode_assignment(ONE, KEY))
    doc["containers"][0]["gpus"][0]["uuid"] = "GPU-someone-elses"
    with pytest.raises(ContractError, match="not signed by kube-vgpu"):
        decode_assignment(json.dumps(doc), KEY)


def test_an_assignment_signed_with_another_key_is_refused() -> None:
    with pytest.raises(ContractError, match="not signed"):
        decode_assignment(encode_assignment(ONE, b"other"), KEY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{", "not JSON", id="truncated"),
        pytest.param("[]", "JSON object", id="array"),
        pytest.param('{"v": 2}', "version 2", id="future version"),
        pytest.param('{"v": 1, "node": 5, "containers": []}', "'node' must be str", id="wrong type"),
        pytest.param(
            '{"v": 1, "node": "n", "containers": [{}]}', "must be list", id="container without GPUs"
        ),
    ],
)
def test_malformed_assignments_raise_contract_errors(text: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        decode_assignment(text, KEY)


def test_inventory_links_must_name_known_gpus() -> None:
    text = json.dumps({"v": 1, "gpus": [], "links": [{"a": "x", "b": "y", "nvlinks": 0, "pcie": 10}]})
    with pytest.raises(ContractError, match="does not have"):
        decode_inventory(text)


def test_an_inventory_written_before_mig_support_reads_without_instances() -> None:
    text = json.dumps({"v": 1, "gpus": [], "links": []})
    assert decode_inventory(text) == NodeInventory((), (), ())


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
