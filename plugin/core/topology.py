"""How a node's GPUs are connected, decided from what NVML reports per GPU. Pure: no pynvml, no I/O.

:mod:`plugin.nvml` collects, for every GPU, its PCI bus id and the far end of each active NVLink;
:func:`count_nvlinks` turns that into links per pair and :func:`build_links` into ``vcuda.model.GpuLink``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from vcuda.model import GpuLink, GpuUuid, PcieLevel

__all__ = ["NvLinkEnd", "build_links", "count_nvlinks", "normalize_bus_id", "pair_key"]

Pair = tuple[GpuUuid, GpuUuid]


@dataclass(frozen=True, slots=True)
class NvLinkEnd:
    """One active NVLink of a GPU: the PCI bus id at its far end, and whether that end is an NVSwitch."""

    remote_bus_id: str
    to_switch: bool = False


def normalize_bus_id(bus_id: str) -> str:
    """``0000:18:00.0``, ``00000000:18:00.0`` and ``18:00.0`` name one device: 8-digit domain, upper case."""
    parts = bus_id.strip().upper().split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    if len(parts) != 3:
        return bus_id.strip().upper()
    domain, bus, device = parts
    return f"{int(domain, 16):08X}:{bus}:{device}"


def pair_key(a: GpuUuid, b: GpuUuid) -> Pair:
    """The unordered pair as stored in ``GpuLink``: ``a < b``."""
    return (a, b) if a < b else (b, a)


def _direct_counts(
    links: Mapping[GpuUuid, Sequence[NvLinkEnd]], by_bus: Mapping[str, GpuUuid]
) -> dict[Pair, int]:
    """Links whose far end is another GPU, counted from each side; a pair keeps the smaller side's count."""
    seen: dict[tuple[GpuUuid, GpuUuid], int] = {}
    for uuid, ends in links.items():
        for end in ends:
            peer = by_bus.get(normalize_bus_id(end.remote_bus_id))
            if not end.to_switch and peer is not None and peer != uuid:
                seen[(uuid, peer)] = seen.get((uuid, peer), 0) + 1
    counts: dict[Pair, int] = {}
    for (a, b), n in seen.items():
        key = pair_key(a, b)
        counts[key] = min(n, seen.get((b, a), n))
    return counts


def count_nvlinks(
    links: Mapping[GpuUuid, Sequence[NvLinkEnd]], bus_ids: Mapping[GpuUuid, str]
) -> dict[Pair, int]:
    """NVLinks per unordered pair of GPUs (pairs without NVLink are left out).

    A direct link counts for the two GPUs at its ends. Links to NVSwitches connect every two switch-attached
    GPUs with as many links as the less-connected of the two has (one NVSwitch fabric per node, as on HGX
    boards: 18 links per H100 gives 18 for every pair).
    """
    by_bus = {normalize_bus_id(bus): uuid for uuid, bus in bus_ids.items()}
    counts = _direct_counts(links, by_bus)
    switch_links = {uuid: sum(1 for e in ends if e.to_switch) for uuid, ends in links.items()}
    for a, b in combinations(sorted(u for u, n in switch_links.items() if n > 0), 2):
        key = pair_key(a, b)
        counts[key] = counts.get(key, 0) + min(switch_links[a], switch_links[b])
    return counts


def build_links(
    uuids: Sequence[GpuUuid], nvlinks: Mapping[Pair, int], pcie: Mapping[Pair, PcieLevel]
) -> tuple[GpuLink, ...]:
    """One ``GpuLink`` per unordered pair of ``uuids``, sorted by ``(a, b)``."""
    out = []
    for a, b in combinations(sorted(uuids), 2):
        key = pair_key(a, b)
        out.append(
            GpuLink(a=key[0], b=key[1], nvlinks=nvlinks.get(key, 0), pcie=pcie.get(key, PcieLevel.SYSTEM))
        )
    return tuple(out)
