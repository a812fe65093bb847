"""Builders for DRA tests: ResourceClaim bodies (``resource.k8s.io/v1`` JSON) as the scheduler leaves them."""

import uuid as uuidlib
from collections.abc import Sequence
from typing import Any

from plugin.core.dra import device_name, driver_name
from plugin.core.gpu import Gpu
from tests.builders.plugin import NAMES

DRIVER = driver_name(NAMES.domain)
NODE = "node-1"
GIB = 1 << 30


def dev(gpu: Gpu) -> str:
    return device_name(gpu)


def result(
    device: str,
    *,
    request: str = "gpu",
    pool: str = NODE,
    driver: str = DRIVER,
    memory: int | str | None = None,
    cores: int | str | None = None,
    share_id: str | None = None,
) -> dict[str, Any]:
    """One allocation result; ``memory`` (bytes) / ``cores`` become ``consumedCapacity`` when given."""
    body: dict[str, Any] = {"request": request, "driver": driver, "pool": pool, "device": device}
    consumed = {k: str(v) for k, v in (("memory", memory), ("cores", cores)) if v is not None}
    if consumed:
        body["consumedCapacity"] = consumed
        body["shareID"] = share_id or str(uuidlib.uuid4())
    elif share_id is not None:
        body["shareID"] = share_id
    return body


def parameters(core_limit: object = None, **extra: object) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": f"{NAMES.domain}/v1alpha1", "kind": "GpuShareParameters", **extra}
    if core_limit is not None:
        body["coreLimit"] = core_limit
    return body


def config(params: object, *, requests: Sequence[str] = (), source: str = "FromClaim", driver: str = DRIVER) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {"source": source, "opaque": {"driver": driver, "parameters": params}}
    if requests:
        entry["requests"] = list(requests)
    return entry


def claim(
    name: str = "share",
    *,
    namespace: str = "default",
    uid: str | None = None,
    results: Sequence[dict[str, Any]] = (),
    configs: Sequence[dict[str, Any]] = (),
    pods: Sequence[tuple[str, str]] = (("p1", "pod-uid-1"),),
    allocated: bool = True,
    from_template: bool = True,
) -> dict[str, Any]:
    """A claim body; ``pods`` = (name, uid) pairs it is reserved for. With one pod and ``from_template``, the
    claim is that pod's (made from its ``resourceClaimTemplate``: the pod is its controller owner)."""
    body: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuidlib.uuid4())},
        "spec": {
            "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": f"vgpu.{NAMES.domain}"}}]}
        },
        "status": {},
    }
    if allocated:
        devices: dict[str, Any] = {"results": list(results)}
        if configs:
            devices["config"] = list(configs)
        body["status"]["allocation"] = {"devices": devices}
        body["status"]["reservedFor"] = [{"resource": "pods", "name": n, "uid": u} for n, u in pods]
    if from_template and len(pods) == 1:
        body["metadata"]["ownerReferences"] = [pod_owner(*pods[0])]
    return body


def pod_owner(name: str, uid: str) -> dict[str, Any]:
    """The owner reference the resource claim controller puts on a claim it makes from a pod's template."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
