"""Versioned JSON encodings of the assignment, status and inventory annotations. Standard library only.

Every document carries ``"v": 1``. Decoders accept exactly what the encoders write (unknown keys are
ignored so a newer minor writer stays readable) and raise :class:`ContractError` on anything else.
Assignments are signed with an HMAC-SHA256 over their canonical JSON, so a user who writes the
annotation by hand cannot hand a pod another tenant's GPU.
"""

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from vcuda.errors import ContractError
from vcuda.model import (
    ContainerAssignment,
    GpuInfo,
    GpuLink,
    GpuShare,
    GpuUuid,
    MigInfo,
    NodeInventory,
    NodeName,
    PcieLevel,
    Phase,
    PodAssignment,
)
from vcuda.units import CORE_PER_GPU

__all__ = [
    "VERSION",
    "PodStatus",
    "decode_assignment",
    "decode_assignment_unverified",
    "decode_inventory",
    "decode_status",
    "encode_assignment",
    "encode_inventory",
    "encode_status",
]

VERSION: Final = 1
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PodStatus:
    """The plugin's record of an assignment's progress. Times are Unix seconds."""

    phase: Phase
    allocated: tuple[str, ...] = ()
    updated_at: float = 0.0
    message: str = ""


def _dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (TypeError, ValueError) as err:
        raise ContractError(f"{what} annotation is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ContractError(f"{what} annotation must be a JSON object")
    if doc.get("v") != VERSION:
        raise ContractError(f"{what} annotation has version {doc.get('v')!r}, expected {VERSION}")
    return doc


def _get(doc: Mapping[str, Any], key: str, kind: type[T], what: str) -> T:
    value = doc.get(key)
    if kind is int and isinstance(value, bool):
        value = None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise ContractError(f"{what}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _items(doc: Mapping[str, Any], key: str, what: str, read: Callable[[Any], T]) -> tuple[T, ...]:
    return tuple(read(item) for item in _get(doc, key, list, what))


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"{what} must be an object, got {value!r}")
    return value


# --- assignment ---------------------------------------------------------------------------------


def _assignment_doc(assignment: PodAssignment) -> dict[str, Any]:
    return {
        "v": VERSION,
        "node": assignment.node,
        "containers": [
            {
                "name": c.name,
                "coreLimit": c.core_limit,
                "gpus": [{"uuid": s.uuid, "cores": s.cores, "memoryMiB": s.memory_mib} for s in c.shares],
            }
            for c in assignment.containers
        ],
    }


def _mac(doc: Mapping[str, Any], key: bytes) -> str:
    return hmac.new(key, _dumps(doc).encode(), hashlib.sha256).hexdigest()


def encode_assignment(assignment: PodAssignment, key: bytes) -> str:
    doc = _assignment_doc(assignment)
    return _dumps({**doc, "mac": _mac(doc, key)})


def decode_assignment(text: str, key: bytes) -> PodAssignment:
    """Decode and verify; a missing or wrong signature is a :class:`ContractError`."""
    doc = _load(text, "assignment")
    mac = doc.pop("mac", None)
    assignment = PodAssignment(
        node=NodeName(_get(doc, "node", str, "assignment")),
        containers=_items(doc, "containers", "assignment", _read_container),
    )
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(_assignment_doc(assignment), key)):
        raise ContractError("assignment annotation is not signed by kube-vgpu (bad or missing mac)")
    return assignment


def decode_assignment_unverified(text: str) -> PodAssignment:
    """Decode without checking the signature, for read-only display by tools that hold no key
    (``kubectl vgpu``). Never grant anything on the strength of the result."""
    doc = _load(text, "assignment")
    return PodAssignment(
        node=NodeName(_get(doc, "node", str, "assignment")),
        containers=_items(doc, "containers", "assignment", _read_container),
    )


def _read_container(raw: object) -> ContainerAssignment:
    doc = _obj(raw, "assignment container")
    what = "assignment container"
    shares = _items(doc, "gpus", what, _read_share)
    limit = _get(doc, "coreLimit", int, what)
    if not shares or not 0 < limit <= CORE_PER_GPU:
        raise ContractError(f"{what}: needs GPUs and a coreLimit in 1..100")
    return ContainerAssignment(name=_get(doc, "name", str, what), shares=shares, core_limit=limit)


def _read_share(raw: object) -> GpuShare:
    doc = _obj(raw, "assignment GPU")
    share = GpuShare(
        uuid=GpuUuid(_get(doc, "uuid", str, "assignment GPU")),
        cores=_get(doc, "cores", int, "assignment GPU"),
        memory_mib=_get(doc, "memoryMiB", int, "assignment GPU"),
    )
    if not 0 < share.cores <= CORE_PER_GPU or share.memory_mib < 0:
        raise ContractError(f"assignment GPU {share.uuid}: cores or memory out of range")
    return share


# --- status -------------------------------------------------------------------------------------


def encode_status(status: PodStatus) -> str:
    return _dumps(
        {
            "v": VERSION,
            "phase": status.phase.value,
            "allocated": list(status.allocated),
            "updatedAt": status.updated_at,
            "message": status.message,
        }
    )


def decode_status(text: str) -> PodStatus:
    doc = _load(text, "status")
    try:
        phase = Phase(_get(doc, "phase", str, "status"))
    except ValueError as err:
        raise ContractError(f"status: unknown phase {doc.get('phase')!r}") from err
    allocated = _get(doc, "allocated", list, "status")
    if not all(isinstance(a, str) for a in allocated):
        raise ContractError("status: 'allocated' must list container names")
    return PodStatus(
        phase=phase,
        allocated=tuple(allocated),
        updated_at=_get(doc, "updatedAt", float, "status"),
        message=_get(doc, "message", str, "status"),
    )


# --- inventory ----------------------------------------------------------------------------------


def encode_inventory(inventory: NodeInventory) -> str:
    return _dumps(
        {
            "v": VERSION,
            "gpus": [
                {
                    "uuid": g.uuid,
                    "index": g.index,
                    "model": g.model,
                    "memoryMiB": g.memory_mib,
                    "healthy": g.healthy,
                    "numa": g.numa_node,
                }
                for g in inventory.gpus
            ],
            "links": [
                {"a": link.a, "b": link.b, "nvlinks": link.nvlinks, "pcie": int(link.pcie)}
                for link in inventory.links
            ],
            "mig": [
                {
                    "uuid": m.uuid,
                    "parent": m.parent,
                    "profile": m.profile,
                    "memoryMiB": m.memory_mib,
                    "multiprocessors": m.multiprocessors,
                }
                for m in inventory.mig
            ],
        }
    )


def decode_inventory(text: str) -> NodeInventory:
    doc = _load(text, "inventory")
    gpus = _items(doc, "gpus", "inventory", _read_gpu)
    links = _items(doc, "links", "inventory", _read_link)
    known = {g.uuid for g in gpus}
    if len(known) != len(gpus):
        raise ContractError("inventory: duplicate GPU UUID")
    if any(link.a not in known or link.b not in known for link in links):
        raise ContractError("inventory: a link names a GPU the node does not have")
    mig = _items(doc, "mig", "inventory", _read_mig) if "mig" in doc else ()  # absent before MIG support
    if len({m.uuid for m in mig}) != len(mig):
        raise ContractError("inventory: duplicate MIG UUID")
    if any(m.parent in known for m in mig):
        raise ContractError("inventory: a MIG instance's GPU is also listed as a shared GPU")
    return NodeInventory(gpus=gpus, links=links, mig=mig)


def _read_gpu(raw: object) -> GpuInfo:
    doc = _obj(raw, "inventory GPU")
    what = "inventory GPU"
    gpu = GpuInfo(
        uuid=GpuUuid(_get(doc, "uuid", str, what)),
        index=_get(doc, "index", int, what),
        model=_get(doc, "model", str, what),
        memory_mib=_get(doc, "memoryMiB", int, what),
        healthy=_get(doc, "healthy", bool, what),
        numa_node=_get(doc, "numa", int, what),
    )
    if gpu.memory_mib < 0 or gpu.index < 0:
        raise ContractError(f"{what} {gpu.uuid}: negative index or memory")
    return gpu


def _read_mig(raw: object) -> MigInfo:
    doc = _obj(raw, "inventory MIG instance")
    what = "inventory MIG instance"
    mig = MigInfo(
        uuid=_get(doc, "uuid", str, what),
        parent=GpuUuid(_get(doc, "parent", str, what)),
        profile=_get(doc, "profile", str, what),
        memory_mib=_get(doc, "memoryMiB", int, what),
        multiprocessors=_get(doc, "multiprocessors", int, what),
    )
    if mig.memory_mib < 0 or mig.multiprocessors < 0:
        raise ContractError(f"{what} {mig.uuid}: negative memory or multiprocessors")
    return mig


def _read_link(raw: object) -> GpuLink:
    doc = _obj(raw, "inventory link")
    what = "inventory link"
    try:
        pcie = PcieLevel(_get(doc, "pcie", int, what))
    except ValueError as err:
        raise ContractError(f"{what}: unknown PCIe level {doc.get('pcie')!r}") from err
    return GpuLink(
        a=GpuUuid(_get(doc, "a", str, what)),
        b=GpuUuid(_get(doc, "b", str, what)),
        nvlinks=_get(doc, "nvlinks", int, what),
        pcie=pcie,
    )
