"""The SIMULATED kubelet's record of device allocations (upstream ``podDevices`` + ``kubelet_internal_checkpoint``).

Kept in memory and written as JSON to ``<device-plugin-dir>/kubelet_internal_checkpoint`` after each change,
so a restarted simulated kubelet finds its allocations again (the real file's format is not reproduced).
"""

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from plugin.api.deviceplugin.v1beta1 import api_pb2 as dp

__all__ = ["Allocation", "Checkpoint", "PodDevices"]


@dataclass(slots=True)
class Allocation:
    ids: list[str]
    response: dp.ContainerAllocateResponse


@dataclass(slots=True)
class PodDevices:
    namespace: str
    name: str
    containers: dict[str, dict[str, Allocation]] = field(
        default_factory=dict
    )  # container -> resource -> alloc


def _encode(alloc: Allocation) -> dict[str, object]:
    return {"ids": alloc.ids, "response": base64.b64encode(alloc.response.SerializeToString()).decode()}


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.pods: dict[str, PodDevices] = {}
        self.resources: set[str] = set()  # every resource a device plugin ever registered
        if path.exists():
            self._load()

    def _load(self) -> None:
        doc = json.loads(self.path.read_text())
        self.resources = set(doc.get("resources", []))
        for uid, raw in doc.get("pods", {}).items():
            pod = PodDevices(raw["namespace"], raw["name"])
            for container, resources in raw["containers"].items():
                pod.containers[container] = {
                    res: Allocation(
                        a["ids"], dp.ContainerAllocateResponse.FromString(base64.b64decode(a["response"]))
                    )
                    for res, a in resources.items()
                }
            self.pods[uid] = pod

    def save(self) -> None:
        pods = {
            uid: {
                "namespace": pod.namespace,
                "name": pod.name,
                "containers": {
                    c: {r: _encode(a) for r, a in res.items()} for c, res in pod.containers.items()
                },
            }
            for uid, pod in self.pods.items()
        }
        doc = {"resources": sorted(self.resources), "pods": pods}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.path)

    def record(
        self, uid: str, namespace: str, name: str, container: str, resource: str, alloc: Allocation
    ) -> None:
        pod = self.pods.setdefault(uid, PodDevices(namespace, name))
        pod.containers.setdefault(container, {})[resource] = alloc
        self.save()

    def get(self, uid: str, container: str, resource: str) -> Allocation | None:
        pod = self.pods.get(uid)
        return pod.containers.get(container, {}).get(resource) if pod else None

    def remove(self, uid: str) -> None:
        if self.pods.pop(uid, None) is not None:
            self.save()

    def in_use(self, resource: str, *, except_uid: str = "") -> set[str]:
        """IDs held by every pod but ``except_uid``."""
        return {
            i
            for uid, pod in self.pods.items()
            if uid != except_uid
            for res in pod.containers.values()
            for r, a in res.items()
            if r == resource
            for i in a.ids
        }
