"""Node label ownership (plugin.core.ownership): the record decides what the plugin may remove.

Case matrix: unchanged node -> empty patch; a wanted label is set; a recorded, unwanted label is removed;
a foreign label (not recorded) is never removed, whatever its prefix; the record round-trips and lists the
names written; unreadable records raise; GFD names are recognised; uninstall removes exactly the record.
"""

import json
from typing import Any

import pytest

from plugin.core.ownership import (
    Managed,
    decode_managed,
    encode_managed,
    is_gfd_name,
    meta_patch,
    uninstall_patch,
    without_gfd_names,
)

KEY = "nvidia.com/vgpu-managed"
FOREIGN = {"nvidia.com/gpu.deploy.driver": "true", "nvidia.com/mig.config": "all-1g.10gb"}


NOTHING = Managed()


def patch(
    labels: dict[str, str],
    have: dict[str, str],
    previous: Managed = NOTHING,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return meta_patch(
        {"labels": have, "annotations": annotations or {}},
        labels=labels,
        annotations={"nvidia.com/vgpu-inventory": "{}"},
        previous=previous,
        key=KEY,
    )


def test_a_node_already_right_needs_no_patch() -> None:
    record = encode_managed(
        Managed(frozenset({"nvidia.com/gpu.count"}), frozenset({"nvidia.com/vgpu-inventory", KEY}))
    )
    annotations = {"nvidia.com/vgpu-inventory": "{}", KEY: record}
    have = {"nvidia.com/gpu.count": "8", **FOREIGN}
    assert patch({"nvidia.com/gpu.count": "8"}, have, decode_managed(record), annotations) == {}


@pytest.mark.parametrize(
    ("previous", "expected_removed"),
    [
        pytest.param(Managed(), set(), id="no record: nothing is removed"),
        pytest.param(
            Managed(frozenset({"nvidia.com/gpu.old"})), {"nvidia.com/gpu.old"}, id="recorded: removed"
        ),
        pytest.param(Managed(frozenset({"nvidia.com/gpu.gone"})), set(), id="recorded but absent: no-op"),
    ],
)
def test_only_recorded_labels_are_removed(previous: Managed, expected_removed: set[str]) -> None:
    have = {"nvidia.com/gpu.old": "x", **FOREIGN}
    result = patch({"nvidia.com/gpu.count": "8"}, have, previous)
    removed = {k for k, v in result["labels"].items() if v is None}
    assert removed == expected_removed
    assert result["labels"]["nvidia.com/gpu.count"] == "8"
    assert json.loads(result["annotations"][KEY]) == {
        "v": 1,
        "labels": ["nvidia.com/gpu.count"],
        "annotations": sorted(["nvidia.com/vgpu-inventory", KEY]),
    }


def test_the_record_round_trips() -> None:
    managed = Managed(frozenset({"a/b", "c/d"}), frozenset({KEY}))
    assert decode_managed(encode_managed(managed)) == managed
    assert decode_managed(None) == Managed()


@pytest.mark.parametrize(
    "text", ["{", "[]", '{"v": 2}', '{"v": 1, "labels": [1]}', '{"v": 1, "annotations": "x"}']
)
def test_an_unreadable_record_raises(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case words it differently)
        decode_managed(text)


@pytest.mark.parametrize(
    ("key", "gfd"),
    [
        ("nvidia.com/gpu.product", True),
        ("nvidia.com/gpu.family", True),
        ("nvidia.com/cuda.driver.major", True),
        ("nvidia.com/mig.strategy", True),
        ("nvidia.com/mig-1g.10gb.count", True),
        ("nvidia.com/gfd.timestamp", True),
        ("nvidia.com/vgpu-inventory", False),
        ("example.com/gpu.product", False),
        ("feature.node.kubernetes.io/pci-10de.present", False),
    ],
)
def test_gfd_names_are_recognised(key: str, gfd: bool) -> None:
    assert is_gfd_name(key) is gfd
    assert (key in without_gfd_names({key: "v"})) is not gfd


def test_uninstall_removes_exactly_the_record() -> None:
    meta = {"labels": {"nvidia.com/gpu.count": "8", **FOREIGN}, "annotations": {KEY: "{}", "other/x": "y"}}
    result = uninstall_patch(meta, Managed(frozenset({"nvidia.com/gpu.count", "nvidia.com/gpu.gone"})), KEY)
    assert result == {"labels": {"nvidia.com/gpu.count": None}, "annotations": {KEY: None}}
