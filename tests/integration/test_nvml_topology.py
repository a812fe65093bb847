"""How per-GPU NVLink reports add up per pair (``plugin.core.topology``; pure, no NVML needed).

Case matrix: NVSwitch fabrics (equal and unequal link counts), direct links (symmetric, asymmetric reports),
links to devices that are not GPUs on the node, direct plus switch links, bus id spellings, and the
``GpuLink`` list built from the counts.
"""

import pytest

from plugin.core.topology import NvLinkEnd, build_links, count_nvlinks, normalize_bus_id
from vcuda.model import GpuLink, GpuUuid, PcieLevel

A, B, C = GpuUuid("GPU-a"), GpuUuid("GPU-b"), GpuUuid("GPU-c")
BUS = {A: "00000000:18:00.0", B: "00000000:2A:00.0", C: "00000000:3A:00.0"}
SWITCH = "00000000:FF:00.0"


def switch(n: int) -> list[NvLinkEnd]:
    return [NvLinkEnd(SWITCH, to_switch=True)] * n


def direct(gpu: GpuUuid, n: int) -> list[NvLinkEnd]:
    return [NvLinkEnd(BUS[gpu])] * n


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        pytest.param(
            {A: switch(18), B: switch(18), C: switch(18)},
            {(A, B): 18, (A, C): 18, (B, C): 18},
            id="NVSwitch 18 each -> 18 per pair",
        ),
        pytest.param(
            {A: switch(18), B: switch(18), C: switch(12)},
            {(A, B): 18, (A, C): 12, (B, C): 12},
            id="NVSwitch: the less-connected GPU bounds its pairs",
        ),
        pytest.param(
            {A: direct(B, 4), B: direct(A, 4), C: []}, {(A, B): 4}, id="direct 4 links A-B, C unconnected"
        ),
        pytest.param(
            {A: direct(B, 3), B: direct(A, 2)}, {(A, B): 2}, id="asymmetric reports -> the smaller count"
        ),
        pytest.param(
            {A: [NvLinkEnd("00000000:99:00.0")] * 2, B: []},
            {},
            id="links to a device that is no GPU here -> none",
        ),
        pytest.param(
            {A: direct(B, 2) + switch(6), B: direct(A, 2) + switch(6)},
            {(A, B): 8},
            id="direct plus switch links add up",
        ),
        pytest.param(
            {A: [NvLinkEnd("0000:2a:00.0")] * 2, B: [NvLinkEnd("0000:18:00.0")] * 2},
            {(A, B): 2},
            id="legacy bus id spelling still matches",
        ),
    ],
)
def test_nvlinks_per_pair(links, expected):
    assert count_nvlinks(links, BUS) == expected


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        pytest.param("00000000:18:00.0", "00000000:18:00.0", id="full"),
        pytest.param("0000:18:00.0", "00000000:18:00.0", id="legacy 4-digit domain"),
        pytest.param("18:00.0", "00000000:18:00.0", id="no domain"),
        pytest.param("00000001:af:00.0", "00000001:AF:00.0", id="lower case"),
    ],
)
def test_bus_ids_normalize_to_one_spelling(raw, normal):
    assert normalize_bus_id(raw) == normal


def test_every_pair_gets_one_link_sorted_with_defaults():
    links = build_links([C, A, B], {(A, B): 4}, {(A, C): PcieLevel.NODE})

    assert links == (
        GpuLink(A, B, 4, PcieLevel.SYSTEM),
        GpuLink(A, C, 0, PcieLevel.NODE),
        GpuLink(B, C, 0, PcieLevel.SYSTEM),
    )
