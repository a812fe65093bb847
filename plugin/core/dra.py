"""The DRA driver's names and what it reads from an allocated ResourceClaim. Standard library only.

The kubelet names a claim (namespace, name, UID); the plugin reads the claim from the API server and takes
from ``status.allocation.devices`` the results of *its* driver (a claim may hold devices of several drivers:
the kubelet calls each driver with the same claim, each prepares its own) and the opaque configuration meant
for it. Everything in the claim is treated as hostile: a wrong type, a missing field, a number out of range
or an unknown parameter is a :class:`ClaimError` naming what is wrong, for that claim only.

Capacity consumed by a share (KEP-5075, ``results[].consumedCapacity``): ``memory`` in bytes and ``cores`` in
percent of the GPU. A capacity that is not listed was not shared out: the result holds all of it (an
exclusive allocation lists none, so it is the whole GPU). A MIG instance (``mig-<uuid>``, a partitionable
device) is always allocated whole: it consumes nothing.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from plugin.core.dra_params import NO_PARAMETERS, GpuShareParameters, ParametersError, parse_parameters
from plugin.core.errors import PluginError
from plugin.core.gpu import Gpu
from plugin.core.mig import MigDevice, mig_devices, partitioned, shareable
from vcuda.errors import ContractError
from vcuda.model import GpuMode, NodeInventory, OtherModeGpu
from vcuda.units import parse_quantity

__all__ = [
    "CAPACITY_CORES",
    "CAPACITY_MEMORY",
    "CDI_CLASS",
    "DRIVER_PREFIX",
    "ClaimAllocation",
    "ClaimError",
    "ClaimRef",
    "DeviceResult",
    "FrontEnd",
    "cdi_kind",
    "claim_cdi_name",
    "claim_container",
    "claim_of_cdi_device",
    "claim_of_container",
    "device_name",
    "dra_inventory",
    "driver_name",
    "node_devices",
    "pool_name",
    "read_allocation",
]

DRIVER_PREFIX: Final = "kube-vgpu"
CAPACITY_MEMORY: Final = "memory"
"""A device's memory capacity, in bytes (what a share consumes: ``consumedCapacity.memory``)."""
CAPACITY_CORES: Final = "cores"
"""A device's compute capacity, 100 per GPU (``consumedCapacity.cores`` in percent)."""
CDI_CLASS: Final = "claim"
_UID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,58}")
_OBJECT_NAME: Final = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_LABEL_UNSAFE: Final = re.compile(r"[^a-z0-9-]+")


class ClaimError(PluginError):
    """A claim cannot be prepared on this node; the message goes back to the kubelet for that claim."""


class FrontEnd(StrEnum):
    """How a node sells its GPUs: shares through the device plugin and the extender, or DRA claims."""

    DEVICE_PLUGIN = "device-plugin"
    DRA = "dra"


def driver_name(domain: str) -> str:
    """The DRA driver name (ResourceSlices, DeviceClass selectors, kubelet registration)."""
    return f"{DRIVER_PREFIX}.{domain}"


def cdi_kind(domain: str) -> str:
    """CDI ``vendor/class`` of the per-claim spec files: ``kube-vgpu.<domain>/claim``."""
    return f"{DRIVER_PREFIX}.{domain}/{CDI_CLASS}"


def claim_cdi_name(uid: str, device: str) -> str:
    """The CDI device name of claim ``uid``'s device (qualified: ``<cdi_kind>=<uid>-<device>``)."""
    return f"{uid}-{device}"


_CLAIM_CDI: Final = re.compile(
    rf"{re.escape(DRIVER_PREFIX)}\.[a-z0-9.-]+/{CDI_CLASS}=({_UID.pattern})-(?:gpu|mig)-[a-z0-9-]+"
)


def claim_of_cdi_device(qualified: str) -> str | None:
    """The claim UID in one of our qualified CDI device names (:func:`cdi_kind`, :func:`claim_cdi_name`,
    :func:`device_name`); None for another driver's or kind's device, or a name we never make."""
    match = _CLAIM_CDI.fullmatch(qualified)
    return None if match is None else match.group(1)


_CLAIM_CONTAINER: Final = "dra-"


def claim_container(uid: str) -> str:
    """The container name in claim ``uid``'s shim config; its state directory is ``<owner uid>_dra-<uid>``."""
    return f"{_CLAIM_CONTAINER}{uid}"


def claim_of_container(name: str) -> str | None:
    """The claim UID of a shim config's container name made by :func:`claim_container`, else None."""
    return name.removeprefix(_CLAIM_CONTAINER) if name.startswith(_CLAIM_CONTAINER) else None


def pool_name(node: str) -> str:
    """One pool per node, named after it (as the DRA kubelet plugin helper does)."""
    return node


def device_name(device: Gpu | MigDevice) -> str:
    """A device's name in the ResourceSlice: ``gpu-<uuid without GPU->`` or, for a MIG instance,
    ``mig-<uuid without MIG->``; lower case, a DNS label (:func:`plugin.core.resourceslice.device_name`).

    From the UUID, not the index: indexes may change across reboots while a ResourceSlice still names the
    old ones."""
    kind = "mig" if isinstance(device, MigDevice) else "gpu"
    tail = device.uuid.removeprefix(f"{kind.upper()}-").lower()
    return (f"{kind}-" + _LABEL_UNSAFE.sub("-", tail))[:63].rstrip("-")


def node_devices(gpus: Iterable[Gpu]) -> dict[str, Gpu | MigDevice]:
    """This node's devices that claims may be allocated, by device name: the GPUs the shim shares and the
    instances of MIG-enabled GPUs (taken whole; a GPU whose MIG mode change waits for a reset is neither)."""
    found = tuple(gpus)
    return {device_name(g): g for g in found if shareable(g)} | {
        device_name(m): m for m in mig_devices(g for g in found if partitioned(g))
    }


def dra_inventory(inventory: NodeInventory, driver: str) -> NodeInventory:
    """The inventory of a DRA-mode node: its shared GPUs listed in ``other`` with mode ``dra`` (the extender
    places nothing on them; the scheduler allocates them from ResourceSlices)."""
    other = tuple(
        OtherModeGpu(g.uuid, g.index, g.model, g.memory_mib, GpuMode.DRA, driver, healthy=g.healthy)
        for g in inventory.gpus
    )
    return NodeInventory((), (), inventory.mig, (*inventory.other, *other))


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """A claim as the kubelet names it in ``NodePrepareResources``."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """One allocation result of our driver, with what it consumed (``None``: all of it)."""

    request: str
    pool: str
    device: str
    share_id: str | None = None
    memory_bytes: int | None = None
    cores: int | None = None
    parameters: GpuShareParameters = NO_PARAMETERS
    consumed: tuple[str, ...] = ()
    """The names of every capacity the result consumed (a MIG instance, taken whole, consumes none)."""


@dataclass(frozen=True, slots=True)
class ClaimAllocation:
    """Our part of an allocated claim; ``owner_*`` is the pod it was made for, else the claim itself."""

    ref: ClaimRef
    owner_uid: str
    owner_name: str
    results: tuple[DeviceResult, ...]


def read_allocation(body: object, ref: ClaimRef, driver: str, domain: str) -> ClaimAllocation:
    """Our results in the claim ``body`` (the API server's JSON); raises :class:`ClaimError`."""
    if _UID.fullmatch(ref.uid) is None:
        raise ClaimError(f"claim {ref}: UID {ref.uid!r} is not a Kubernetes UID")
    claim = _mapping(body, "the claim")
    uid = _mapping(claim.get("metadata"), "metadata").get("uid")
    if uid != ref.uid:
        raise ClaimError(f"claim {ref} was replaced: UID {_short(uid)}, the kubelet asked for {ref.uid}")
    allocation = _mapping(claim.get("status"), "status").get("allocation")
    if allocation is None:
        raise ClaimError(f"claim {ref} is not allocated")
    devices = _mapping(_mapping(allocation, "status.allocation").get("devices"), "allocation.devices")
    configs = _configs(devices.get("config"), driver, domain)
    results = tuple(
        _result(r, i, configs)
        for i, r in enumerate(_list(devices.get("results"), "allocation.devices.results"))
        if _mapping(r, f"results[{i}]").get("driver") == driver
    )
    if not results:
        raise ClaimError(f"claim {ref}: no device of driver {driver} is allocated")
    owner_uid, owner_name = _owner(claim, ref)
    return ClaimAllocation(ref, owner_uid, owner_name, results)


@dataclass(frozen=True, slots=True)
class _Config:
    requests: frozenset[str]  # empty: every request
    parameters: GpuShareParameters


def _configs(raw: object, driver: str, domain: str) -> tuple[_Config, ...]:
    """Our opaque configs, class configs first then the claim's: for a result, the last that applies wins."""
    found: list[tuple[int, _Config]] = []
    for i, entry in enumerate(_list(raw, "allocation.devices.config") if raw is not None else ()):
        entry = _mapping(entry, f"config[{i}]")
        opaque = entry.get("opaque")
        if opaque is None or _mapping(opaque, f"config[{i}].opaque").get("driver") != driver:
            continue
        requests = entry.get("requests") or []
        names = frozenset(_text(r, f"config[{i}].requests") for r in _list(requests, f"config[{i}].requests"))
        try:
            parameters = parse_parameters(opaque.get("parameters"), domain)
        except ParametersError as err:
            raise ClaimError(f"config[{i}]: {err}") from err
        found.append((0 if entry.get("source") == "FromClass" else 1, _Config(names, parameters)))
    return tuple(c for _, c in sorted(found, key=lambda pair: pair[0]))


def _result(raw: object, i: int, configs: Sequence[_Config]) -> DeviceResult:
    where = f"results[{i}]"
    result = _mapping(raw, where)
    request = _text(result.get("request"), f"{where}.request")
    share = result.get("shareID")
    consumed = result.get("consumedCapacity")
    capacity = _mapping(consumed, f"{where}.consumedCapacity") if consumed is not None else {}
    applying = [c for c in configs if not c.requests or {request, request.split("/")[0]} & c.requests]
    return DeviceResult(
        request=request,
        pool=_text(result.get("pool"), f"{where}.pool"),
        device=_text(result.get("device"), f"{where}.device"),
        share_id=None if share is None else _text(share, f"{where}.shareID"),
        memory_bytes=_quantity(capacity.get(CAPACITY_MEMORY), f"{where}.consumedCapacity.{CAPACITY_MEMORY}"),
        cores=_quantity(capacity.get(CAPACITY_CORES), f"{where}.consumedCapacity.{CAPACITY_CORES}"),
        parameters=applying[-1].parameters if applying else NO_PARAMETERS,
        consumed=tuple(sorted(str(k)[:63] for k in capacity)),
    )


def _owner(claim: Mapping[str, Any], ref: ClaimRef) -> tuple[str, str]:
    """The pod the claim was made for, else the claim itself (metrics and watchdog events attribute by it).

    A claim made from a pod's ``resourceClaimTemplate`` has that pod as its controller owner and is reserved
    for it alone: its identity is the pod's. Any other claim (created on its own, shareable by several pods)
    keeps its own identity even while one pod holds it: a second pod may join later, and the identity is
    fixed at the first prepare. A controller reference a tenant wrote on its own claim, naming another pod,
    does not count unless that pod is the one the scheduler reserved the claim for.
    """
    raw = claim["status"].get("reservedFor")
    pods = [
        _mapping(r, "status.reservedFor[]")
        for r in (_list(raw, "status.reservedFor") if raw is not None else ())
        if isinstance(r, Mapping) and r.get("resource") == "pods" and not r.get("apiGroup")
    ]
    if len(pods) != 1:
        return ref.uid, ref.name
    uid, name = pods[0].get("uid"), pods[0].get("name")
    if not isinstance(uid, str) or _UID.fullmatch(uid) is None:
        raise ClaimError(f"claim {ref}: reservedFor names a pod with UID {_short(uid)}")
    if not isinstance(name, str) or _OBJECT_NAME.fullmatch(name) is None:
        raise ClaimError(f"claim {ref}: reservedFor names a pod called {_short(name)}")
    if uid != _controller_pod_uid(claim.get("metadata")):
        return ref.uid, ref.name
    return uid, name


def _controller_pod_uid(metadata: object) -> object:
    """The UID of the pod that controls the claim (``ownerReferences`` with ``controller: true``), or None."""
    owners = metadata.get("ownerReferences") if isinstance(metadata, Mapping) else None
    for owner in owners if isinstance(owners, list) else ():
        if (
            isinstance(owner, Mapping)
            and owner.get("controller") is True
            and owner.get("kind") == "Pod"
            and owner.get("apiVersion") == "v1"
        ):
            return owner.get("uid")
    return None


def _quantity(raw: object, where: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ClaimError(f"{where} must be a quantity, not {_short(raw)}")
    try:
        return parse_quantity(raw)
    except ContractError as err:
        raise ClaimError(f"{where} {_short(raw)}: {err}") from err


def _mapping(raw: object, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ClaimError(f"{what} must be an object, not {type(raw).__name__}")
    return raw


def _list(raw: object, what: str) -> Sequence[object]:
    if not isinstance(raw, list):
        raise ClaimError(f"{what} must be a list, not {type(raw).__name__}")
    return raw


def _text(raw: object, what: str) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > 253:
        raise ClaimError(f"{what} must be a non-empty name, not {_short(raw)}")
    return raw


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
