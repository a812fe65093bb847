"""Builders for plugin tests: fake GPUs and nodes (NVIDIA's NewFullGPU style), pods with signed assignments."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from extender.signing import Ed25519Signer
from plugin.core.gpu import Gpu, NodeGpus
from tests.signing_keys import KEYRING, SIGNER, public_pem
from vcuda.annotations import encode_assignment
from vcuda.model import ContainerAssignment, GpuLink, GpuShare, GpuUuid, NodeName, PcieLevel, PodAssignment
from vcuda.names import Names
from vcuda.signing import pod_binding

KEY = public_pem()
"""The content of the plugin's ``--assignment-key-file`` in tests: the extender's public key (PEM)."""
VERIFIER = KEYRING
NAMES = Names()


def uuid(node: str, index: int) -> GpuUuid:
    return GpuUuid(f"GPU-{node}-{index:04d}")


def gpus(
    count: int,
    *,
    node: str = "node-1",
    model: str = "NVIDIA H100 80GB HBM3",
    memory_mib: int = 81559,
    nvlinks: int = 18,
) -> NodeGpus:
    found = tuple(
        Gpu(
            uuid(node, i),
            i,
            i,
            model,
            memory_mib,
            f"0000:{i:02x}:00.0",
            numa_node=i * 2 // max(count, 1),
            compute_capability=(9, 0),
        )
        for i in range(count)
    )
    links = tuple(
        GpuLink(a.uuid, b.uuid, nvlinks, PcieLevel.NODE if a.numa_node == b.numa_node else PcieLevel.SYSTEM)
        for i, a in enumerate(found)
        for b in found[i + 1 :]
    )
    return NodeGpus(found, links, "580.65.06", "13.0")


def h100x8(node: str = "node-1") -> NodeGpus:
    return gpus(8, node=node)


def h200x8(node: str = "node-1") -> NodeGpus:
    return gpus(8, node=node, model="NVIDIA H200", memory_mib=143771)


def a10x4(node: str = "node-1") -> NodeGpus:
    return gpus(4, node=node, model="NVIDIA A10", memory_mib=23028, nvlinks=0)


Share = tuple[str, int, int]  # (gpu uuid, cores, memory MiB)


def pod_body(
    name: str,
    containers: Sequence[tuple[str, int, int]],
    *,
    namespace: str = "default",
    init: Sequence[tuple[str, int, int]] = (),
    annotations: Mapping[str, str] | None = None,
    names: Names = NAMES,
) -> dict[str, Any]:
    """A pod whose containers ask (name, vcuda-core, vcuda-memory MiB); 0 MiB leaves memory out."""

    def spec(c: tuple[str, int, int]) -> dict[str, Any]:
        limits = {names.core: str(c[1])}
        if c[2]:
            limits[names.memory] = str(c[2])
        return {"name": c[0], "image": "cuda", "resources": {"limits": limits, "requests": limits}}

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "annotations": dict(annotations or {}),
        },
        "spec": {"containers": [spec(c) for c in containers], "initContainers": [spec(c) for c in init]},
    }


def assignment(
    node: str,
    containers: Mapping[str, Iterable[Share]],
    core_limit: Mapping[str, int] | None = None,
    *,
    pod: Mapping[str, Any],
    signer: Ed25519Signer = SIGNER,
) -> str:
    """The extender's annotation for ``pod`` as it is now (set its annotations before signing)."""
    limits = core_limit or {}
    return encode_assignment(
        PodAssignment(
            NodeName(node),
            tuple(
                ContainerAssignment(
                    name,
                    tuple(GpuShare(GpuUuid(u), c, m) for u, c, m in shares),
                    limits.get(name, min(100, max(c for _, c, _ in shares))),
                )
                for name, shares in containers.items()
                for shares in [list(shares)]
            ),
        ),
        pod_binding(pod, NAMES),
        signer,
    )
