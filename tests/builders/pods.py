"""Builders of the pods the simulated-cluster tier submits."""

from typing import Any


def gpu_pod(
    name: str, *containers: tuple[int, int], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A pod with one container per (vcuda-core, vcuda-memory MiB) pair, named c0, c1, ..."""
    specs = []
    for i, (cores, mib) in enumerate(containers):
        limits = {"nvidia.com/vcuda-core": cores, **({"nvidia.com/vcuda-memory": mib} if mib else {})}
        specs.append({"name": f"c{i}", "image": "cuda", "resources": {"limits": limits}})
    meta: dict[str, Any] = {"name": name, "namespace": "default", "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"schedulerName": "kube-vgpu-scheduler", "containers": specs}}  # fmt: skip
