"""``kubectl vgpu claims``: the ResourceClaims of the kube-vgpu DRA driver and the shares they hold.

One row per device a claim holds (``status.allocation.devices.results`` of driver ``kube-vgpu.<domain>``):
the node, the device, the cores and memory it consumed (KEP-5075 ``consumedCapacity``; a device taken whole
lists none: ``all``), the soft compute limit from the driver's opaque ``GpuShareParameters``, and the pods it
is reserved for. A claim that asks one of the driver's DeviceClasses and is not allocated yet is ``pending``.
Claims are read as the API server answers them, but a field of the wrong type makes the claim's row
``invalid`` instead of stopping the listing. Like the rest of ``kubectl vgpu``: read-only, no extender import.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vcuda.errors import ContractError
from vcuda.units import MIB, parse_quantity

__all__ = ["ClaimRow", "claim_rows", "dra_device_use", "render_claims"]

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ClaimRow:
    namespace: str
    claim: str
    state: str  # allocated, pending, invalid
    node: str = ""
    device: str = ""
    cores: str = ""  # percent, or "all" for a device taken whole
    memory_mib: str = ""  # MiB, or "all"
    core_limit: str = ""
    pods: tuple[str, ...] = ()


def _driver(domain: str) -> str:
    return f"kube-vgpu.{domain}"


def _ours(claim: Obj, domain: str) -> bool:
    classes = {f"{kind}.{domain}" for kind in ("vgpu", "gpu", "mig")}
    requests = ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []
    return any(((r.get("exactly") or {}).get("deviceClassName") in classes) for r in requests)


def _node(allocation: Obj, pool: str) -> str:
    for term in (allocation.get("nodeSelector") or {}).get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return pool


def _core_limit(allocation: Obj, request: str, driver: str) -> str:
    found = ""
    for config in (allocation.get("devices") or {}).get("config") or []:
        opaque = config.get("opaque") or {}
        wanted = config.get("requests") or []
        if opaque.get("driver") == driver and (not wanted or request.split("/")[0] in wanted):
            limit = (opaque.get("parameters") or {}).get("coreLimit")
            found = str(limit) if isinstance(limit, int) else found
    return found


def _rows(claim: Obj, domain: str) -> list[ClaimRow]:
    meta = claim.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    status = claim.get("status") or {}
    pods = tuple(
        sorted(f"{ns}/{r['name']}" for r in status.get("reservedFor") or [] if r.get("resource") == "pods")
    )
    allocation = status.get("allocation")
    if allocation is None:
        return [ClaimRow(ns, name, "pending", pods=pods)] if _ours(claim, domain) else []
    driver = _driver(domain)
    rows = []
    for r in (allocation.get("devices") or {}).get("results") or []:
        if r.get("driver") != driver:
            continue
        consumed = r.get("consumedCapacity") or {}
        cores = str(parse_quantity(consumed["cores"])) if "cores" in consumed else "all"
        memory = str(parse_quantity(consumed["memory"]) // MIB) if "memory" in consumed else "all"
        limit = _core_limit(allocation, str(r.get("request") or ""), driver)
        node = _node(allocation, str(r.get("pool") or ""))
        rows.append(
            ClaimRow(ns, name, "allocated", node, str(r.get("device") or ""), cores, memory, limit, pods)
        )
    return rows


def claim_rows(claims: Iterable[Obj], domain: str) -> list[ClaimRow]:
    """One row per device of the driver each claim holds, ordered by namespace, claim and device."""
    rows = []
    for claim in claims:
        try:
            rows += _rows(claim, domain)
        except (AttributeError, KeyError, TypeError, ValueError, ContractError):
            meta = claim.get("metadata") if isinstance(claim, Mapping) else None
            meta = meta if isinstance(meta, Mapping) else {}
            rows.append(ClaimRow(str(meta.get("namespace") or ""), str(meta.get("name") or ""), "invalid"))
    return sorted(rows, key=lambda r: (r.namespace, r.claim, r.device))


def dra_device_use(claims: Iterable[Obj], domain: str) -> dict[tuple[str, str], tuple[int, int, list[str]]]:
    """(node, device name) -> (cores, memory MiB, pods) the driver's allocated claims take on it; a device
    taken whole counts 100 cores and no MiB (the caller knows the GPU's size); malformed claims, nothing."""
    used: dict[tuple[str, str], tuple[int, int, list[str]]] = {}
    for row in claim_rows(claims, domain):
        if row.state != "allocated":
            continue
        cores, memory, pods = used.get((row.node, row.device), (0, 0, []))
        cores += 100 if row.cores == "all" else int(row.cores)
        memory += 0 if row.memory_mib == "all" else int(row.memory_mib)
        used[(row.node, row.device)] = (cores, memory, [*pods, *row.pods])
    return used


def render_claims(rows: Sequence[ClaimRow], table: Any) -> str:
    header = ("NAMESPACE", "CLAIM", "STATE", "NODE", "DEVICE", "CORES", "MEMORY(MiB)", "CORE-LIMIT", "PODS")
    body = [
        (r.namespace, r.claim, r.state, r.node or "-", r.device or "-", r.cores or "-", r.memory_mib or "-",
         r.core_limit or "-", ",".join(r.pods) or "-")
        for r in rows
    ]  # fmt: skip
    return str(table(header, body))
