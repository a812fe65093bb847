"""Versioned JSON encodings of the assignment, status and inventory annotations. Standard library only.

Every document carries its version (``"v"``); the assignment lives in :mod:`vcuda.assignment` and is
re-exported here. Decoders accept exactly what the encoders write (unknown
keys are ignored so a newer minor writer stays readable) and raise :class:`ContractError` on anything else.
Assignments are signed (Ed25519, by the extender only) over their canonical JSON, which names the pod they
are for and a digest of its GPU request (:mod:`vcuda.signing`): a user who writes the annotation by hand,
or copies another pod's, gets nothing. The plugin never re-signs; what it changes (a swap of two
interchangeable containers) it records in its own status annotation (``PodStatus.moved``).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from vcuda.assignment import (
    ASSIGNMENT_VERSION,
    REFUSALS,
    AssignmentRefusedError,
    apply_moves,
    decode_assignment,
    decode_assignment_unverified,
    encode_assignment,
    read_share,
    shares_doc,
)
from vcuda.errors import ContractError, shown
from vcuda.jsondoc import VERSION, dumps, get, items, load, member, obj
from vcuda.model import (
    GpuInfo,
    GpuLink,
    GpuMode,
    GpuShare,
    GpuUuid,
    MigInfo,
    NodeInventory,
    OtherModeGpu,
    PcieLevel,
    Phase,
)

__all__ = [
    "ASSIGNMENT_VERSION",
    "REFUSALS",
    "VERSION",
    "AssignmentRefusedError",
    "PodStatus",
    "apply_moves",
    "decode_assignment",
    "decode_assignment_unverified",
    "decode_inventory",
    "decode_status",
    "encode_assignment",
    "encode_inventory",
    "encode_status",
]


@dataclass(frozen=True, slots=True)
class PodStatus:
    """The plugin's record of an assignment's progress. Times are Unix seconds. ``moved`` holds the GPUs of
    containers the plugin swapped with an interchangeable one (see :func:`apply_moves`)."""

    phase: Phase
    allocated: tuple[str, ...] = ()
    updated_at: float = 0.0
    message: str = ""
    moved: tuple[tuple[str, tuple[GpuShare, ...]], ...] = ()


# --- status -------------------------------------------------------------------------------------


def encode_status(status: PodStatus) -> str:
    doc: dict[str, Any] = {
        "v": VERSION,
        "phase": status.phase.value,
        "allocated": list(status.allocated),
        "updatedAt": status.updated_at,
        "message": status.message,
    }
    if status.moved:
        doc["moved"] = {name: shares_doc(shares) for name, shares in sorted(status.moved)}
    return dumps(doc)


def _read_moved(doc: Mapping[str, Any]) -> tuple[tuple[str, tuple[GpuShare, ...]], ...]:
    raw = obj(doc.get("moved", {}), "status 'moved'")
    return tuple(
        (str(name), tuple(read_share(s) for s in _listed(v, "status 'moved'")))
        for name, v in sorted(raw.items())
    )


def _listed(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ContractError(f"{what} must list GPUs, got {shown(value)}")
    return value


def decode_status(text: str) -> PodStatus:
    doc = load(text, "status")
    phase = member(doc, "phase", Phase, "status", "phase")
    allocated = get(doc, "allocated", list, "status")
    if not all(isinstance(a, str) for a in allocated):
        raise ContractError("status: 'allocated' must list container names")
    return PodStatus(
        phase=phase,
        allocated=tuple(allocated),
        updated_at=get(doc, "updatedAt", float, "status"),
        message=get(doc, "message", str, "status"),
        moved=_read_moved(doc),
    )


# --- inventory ----------------------------------------------------------------------------------


def encode_inventory(inventory: NodeInventory) -> str:
    return dumps(
        {
            "v": VERSION,
            "gpus": [{**_gpu_doc(g), "numa": g.numa_node} for g in inventory.gpus],
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
            "other": [
                {**_gpu_doc(o), "mode": o.mode.value, "resource": o.resource, "replicas": o.replicas}
                for o in inventory.other
            ],
        }
    )


def decode_inventory(text: str) -> NodeInventory:
    doc = load(text, "inventory")
    gpus = items(doc, "gpus", "inventory", _read_gpu)
    links = items(doc, "links", "inventory", _read_link)
    known = {g.uuid for g in gpus}
    if len(known) != len(gpus):
        raise ContractError("inventory: duplicate GPU UUID")
    if any(link.a not in known or link.b not in known for link in links):
        raise ContractError("inventory: a link names a GPU the node does not have")
    mig = items(doc, "mig", "inventory", _read_mig) if "mig" in doc else ()  # absent before MIG support
    if len({m.uuid for m in mig}) != len(mig):
        raise ContractError("inventory: duplicate MIG UUID")
    if any(m.parent in known for m in mig):
        raise ContractError("inventory: a MIG instance's GPU is also listed as a shared GPU")
    other = items(doc, "other", "inventory", _read_other) if "other" in doc else ()  # absent before modes
    other_uuids = [o.uuid for o in other]
    if len(set(other_uuids)) != len(other_uuids):
        raise ContractError("inventory: duplicate GPU UUID among other-mode GPUs")
    if any(uuid in known or uuid in {m.parent for m in mig} for uuid in other_uuids):
        raise ContractError("inventory: a GPU is listed in two modes")
    return NodeInventory(gpus=gpus, links=links, mig=mig, other=other)


class _GpuFields(TypedDict):
    """The keys every inventory GPU entry has, shared or sold in another mode."""

    uuid: GpuUuid
    index: int
    model: str
    memory_mib: int
    healthy: bool


def _gpu_doc(g: GpuInfo | OtherModeGpu) -> dict[str, Any]:
    return {
        "uuid": g.uuid,
        "index": g.index,
        "model": g.model,
        "memoryMiB": g.memory_mib,
        "healthy": g.healthy,
    }


def _read_gpu_fields(doc: Mapping[str, Any], what: str) -> _GpuFields:
    return {
        "uuid": GpuUuid(get(doc, "uuid", str, what)),
        "index": get(doc, "index", int, what),
        "model": get(doc, "model", str, what),
        "memory_mib": get(doc, "memoryMiB", int, what),
        "healthy": get(doc, "healthy", bool, what),
    }


def _read_gpu(raw: object) -> GpuInfo:
    doc = obj(raw, "inventory GPU")
    what = "inventory GPU"
    gpu = GpuInfo(**_read_gpu_fields(doc, what), numa_node=get(doc, "numa", int, what))
    if gpu.memory_mib < 0 or gpu.index < 0:
        raise ContractError(f"{what} {gpu.uuid}: negative index or memory")
    return gpu


def _read_mig(raw: object) -> MigInfo:
    doc = obj(raw, "inventory MIG instance")
    what = "inventory MIG instance"
    mig = MigInfo(
        uuid=get(doc, "uuid", str, what),
        parent=GpuUuid(get(doc, "parent", str, what)),
        profile=get(doc, "profile", str, what),
        memory_mib=get(doc, "memoryMiB", int, what),
        multiprocessors=get(doc, "multiprocessors", int, what),
    )
    if mig.memory_mib < 0 or mig.multiprocessors < 0:
        raise ContractError(f"{what} {mig.uuid}: negative memory or multiprocessors")
    return mig


def _read_other(raw: object) -> OtherModeGpu:
    doc = obj(raw, "inventory other-mode GPU")
    what = "inventory other-mode GPU"
    mode = member(doc, "mode", GpuMode, what, "mode")
    if mode in (GpuMode.VCUDA, GpuMode.MIG):
        raise ContractError(f"{what}: mode {mode.value!r} is listed in 'gpus' or 'mig', not 'other'")
    gpu = OtherModeGpu(
        **_read_gpu_fields(doc, what),
        mode=mode,
        resource=get(doc, "resource", str, what),
        replicas=get(doc, "replicas", int, what),
    )
    if gpu.memory_mib < 0 or gpu.index < 0 or gpu.replicas < 1:
        raise ContractError(f"{what} {gpu.uuid}: negative index or memory, or fewer than one replica")
    return gpu


def _read_link(raw: object) -> GpuLink:
    doc = obj(raw, "inventory link")
    what = "inventory link"
    pcie = member(doc, "pcie", PcieLevel, what, "PCIe level")
    return GpuLink(
        a=GpuUuid(get(doc, "a", str, what)),
        b=GpuUuid(get(doc, "b", str, what)),
        nvlinks=get(doc, "nvlinks", int, what),
        pcie=pcie,
    )
