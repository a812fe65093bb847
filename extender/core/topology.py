"""How well a set of GPUs is connected, and the best-connected set of a given size. Pure."""

from collections.abc import Mapping, Sequence
from enum import IntEnum

from vcuda.model import GpuInfo, GpuLink, GpuUuid, PcieLevel

__all__ = ["LinkClass", "LinkMap", "best_connected", "link_map"]

LinkMap = Mapping[tuple[GpuUuid, GpuUuid], GpuLink]


class LinkClass(IntEnum):
    """Connection quality of a GPU pair, best first: NVLink, same PCIe switch, same host bridge or NUMA node,
    across NUMA nodes."""

    NVLINK = 0
    PCIE_SWITCH = 1
    HOST_BRIDGE = 2
    NUMA = 3
    CROSS_SOCKET = 4


def link_map(links: Sequence[GpuLink]) -> dict[tuple[GpuUuid, GpuUuid], GpuLink]:
    """Both orderings of every pair, for O(1) lookups."""
    out: dict[tuple[GpuUuid, GpuUuid], GpuLink] = {}
    for link in links:
        out[(link.a, link.b)] = link
        out[(link.b, link.a)] = link
    return out


def _pair(a: GpuInfo, b: GpuInfo, links: LinkMap) -> tuple[LinkClass, int, int]:
    """The pair's class, its PCIe level (the tie-break inside a class: same NUMA node beats across
    sockets, also between NVLinked GPUs) and its NVLink count (more is better)."""
    link = links.get((a.uuid, b.uuid))
    if link is None:
        same_numa = a.numa_node >= 0 and a.numa_node == b.numa_node
        return (LinkClass.NUMA if same_numa else LinkClass.CROSS_SOCKET), PcieLevel.SYSTEM, 0
    if link.nvlinks > 0:
        return LinkClass.NVLINK, link.pcie, link.nvlinks
    if link.pcie <= PcieLevel.MULTIPLE:
        cls = LinkClass.PCIE_SWITCH
    elif link.pcie == PcieLevel.HOSTBRIDGE:
        cls = LinkClass.HOST_BRIDGE
    else:
        cls = LinkClass.NUMA if link.pcie == PcieLevel.NODE else LinkClass.CROSS_SOCKET
    return cls, link.pcie, 0


Cost = tuple[int, int, int, int]


def _cost(pairs: Sequence[tuple[LinkClass, int, int]]) -> Cost:
    """Worst class first, then the sums of classes and PCIe levels, then more NVLinks."""
    return (
        max((c for c, _, _ in pairs), default=0),
        sum(c for c, _, _ in pairs),
        sum(p for _, p, _ in pairs),
        -sum(n for _, _, n in pairs),
    )


def _cost_to(candidate: GpuInfo, members: Sequence[GpuInfo], links: LinkMap) -> Cost:
    return _cost([_pair(candidate, m, links) for m in members])


def _set_cost(members: Sequence[GpuInfo], links: LinkMap) -> Cost:
    return _cost([_pair(a, b, links) for i, a in enumerate(members) for b in members[i + 1 :]])


def best_connected(
    candidates: Sequence[GpuInfo], size: int, links: LinkMap, *, must_include: Sequence[GpuInfo] = ()
) -> tuple[GpuInfo, ...]:
    """The ``size`` GPUs whose worst pair is best connected (then the sums over pairs, then more NVLinks,
    then UUIDs). Greedy growth from every seed: exact for the uniform topologies of real nodes (NVSwitch,
    pairs of GPUs per switch), and O(n² · size²). ``must_include`` (GPUs among ``candidates`` a container
    already holds slices of) is the one seed when given."""
    ordered = sorted(candidates, key=lambda g: g.uuid)
    if size >= len(ordered):
        return tuple(ordered[:size])
    seeds = [sorted(must_include, key=lambda g: g.uuid)] if must_include else [[seed] for seed in ordered]
    best: tuple[GpuInfo, ...] = ()
    best_cost: tuple[Cost, tuple[str, ...]] | None = None
    for seed_members in seeds:
        members = list(seed_members)
        while len(members) < size:
            rest = [g for g in ordered if g not in members]
            members.append(min(rest, key=lambda g: (*_cost_to(g, members, links), g.uuid)))
        chosen = tuple(sorted(members, key=lambda g: g.uuid))
        cost = (_set_cost(chosen, links), tuple(g.uuid for g in chosen))
        if best_cost is None or cost < best_cost:
            best, best_cost = chosen, cost
    return best
