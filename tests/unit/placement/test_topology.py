"""best_connected: NVLink beats one PCIe switch beats a host bridge beats one NUMA node beats two sockets;
inside a class, fewer hops and more NVLinks win; ties end on the UUID."""

from extender.core.topology import best_connected, link_map
from tests.builders.vcuda import gpu, pcie_node
from vcuda.model import GpuInfo, GpuLink, GpuUuid, PcieLevel


def uuids(gpus: tuple[GpuInfo, ...]) -> set[GpuUuid]:
    return {g.uuid for g in gpus}


def test_pairs_behind_one_switch_are_chosen_over_cross_socket_pairs() -> None:
    node = pcie_node(4)
    chosen = best_connected(node.gpus[1:], 2, link_map(node.links))
    assert uuids(chosen) == {node.gpus[2].uuid, node.gpus[3].uuid}


def test_nvlink_pair_beats_a_pcie_switch_pair() -> None:
    gpus = tuple(gpu(i, numa=0) for i in range(4))
    u = [g.uuid for g in gpus]
    links = [
        GpuLink(u[0], u[1], 0, PcieLevel.SINGLE),
        GpuLink(u[2], u[3], 4, PcieLevel.SYSTEM),
        *(
            GpuLink(a, b, 0, PcieLevel.SYSTEM)
            for a, b in [(u[0], u[2]), (u[0], u[3]), (u[1], u[2]), (u[1], u[3])]
        ),
    ]
    assert uuids(best_connected(gpus, 2, link_map(links))) == {u[2], u[3]}


def test_more_nvlinks_win_inside_the_nvlink_class() -> None:
    gpus = tuple(gpu(i) for i in range(3))
    u = [g.uuid for g in gpus]
    links = [
        GpuLink(u[0], u[1], 2, PcieLevel.NODE),
        GpuLink(u[0], u[2], 12, PcieLevel.NODE),
        GpuLink(u[1], u[2], 2, PcieLevel.NODE),
    ]
    assert uuids(best_connected(gpus, 2, link_map(links))) == {u[0], u[2]}


def test_without_link_data_the_numa_node_decides() -> None:
    gpus = (gpu(0, numa=0), gpu(1, numa=1), gpu(2, numa=1))
    assert uuids(best_connected(gpus, 2, {})) == {gpus[1].uuid, gpus[2].uuid}


def test_asking_for_every_candidate_returns_them_all_sorted() -> None:
    gpus = (gpu(1), gpu(0))
    assert best_connected(gpus, 2, {}) == (gpus[1], gpus[0])
