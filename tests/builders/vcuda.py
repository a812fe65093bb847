"""Builders for plain contract values in tests (NVIDIA's NewFullGPU style): GPUs, nodes, pods, assignments."""

from vcuda.model import (
    Constraints,
    ContainerRequest,
    GpuInfo,
    GpuLink,
    GpuUuid,
    NodeInventory,
    PcieLevel,
    PodRequest,
)


def uuid(node: str, index: int) -> GpuUuid:
    return GpuUuid(f"GPU-{node}-{index:04d}")


def gpu(index: int = 0, *, node: str = "n", memory_mib: int = 81920, model: str = "NVIDIA H100 80GB HBM3",
        healthy: bool = True, numa: int = 0) -> GpuInfo:  # fmt: skip
    return GpuInfo(uuid(node, index), index, model, memory_mib, healthy, numa)


def nvswitch_node(count: int = 8, *, node: str = "n", memory_mib: int = 81920) -> NodeInventory:
    """Every pair joined by 18 NVLinks (HGX H100)."""
    gpus = tuple(gpu(i, node=node, memory_mib=memory_mib, numa=i // 4) for i in range(count))
    links = tuple(
        GpuLink(a.uuid, b.uuid, 18, PcieLevel.SYSTEM if a.numa_node != b.numa_node else PcieLevel.NODE)
        for i, a in enumerate(gpus)
        for b in gpus[i + 1 :]
    )
    return NodeInventory(gpus, links)


def pcie_node(count: int = 4, *, node: str = "n", memory_mib: int = 24576) -> NodeInventory:
    """No NVLink; GPUs in pairs behind one PCIe switch, pairs on alternating NUMA nodes (4 x A10)."""
    gpus = tuple(
        gpu(i, node=node, memory_mib=memory_mib, model="NVIDIA A10", numa=(i // 2) % 2) for i in range(count)
    )

    def level(a: GpuInfo, b: GpuInfo) -> PcieLevel:
        if a.index // 2 == b.index // 2:
            return PcieLevel.MULTIPLE
        return PcieLevel.NODE if a.numa_node == b.numa_node else PcieLevel.SYSTEM

    links = tuple(GpuLink(a.uuid, b.uuid, 0, level(a, b)) for i, a in enumerate(gpus) for b in gpus[i + 1 :])
    return NodeInventory(gpus, links)


def request(*containers: tuple[int, int], constraints: Constraints | None = None,
            core_limit: int | None = None) -> PodRequest:  # fmt: skip
    """``request((30, 4096), (200, 0))``: one container per (cores, MiB) pair, named c0, c1, ..."""
    return PodRequest(
        tuple(ContainerRequest(f"c{i}", cores, mib) for i, (cores, mib) in enumerate(containers)),
        constraints or Constraints(),
        core_limit,
    )
