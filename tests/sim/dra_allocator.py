"""The SIMULATED scheduler's DRA allocator: test code that allocates ResourceClaims on one node from its
ResourceSlices, as kube-scheduler's DRA plugin (``k8s.io/dynamic-resource-allocation/structured``) does, and
returns ``status.allocation`` in its Go JSON shape.

Rules followed (``k8s.io/api/resource/v1`` documentation, KEP-5075 consumable capacity, KEP-4815):

- only the highest generation of a pool counts, and a pool counts only when all ``resourceSliceCount`` slices
  of it are there (an incomplete pool is skipped, as the scheduler waits for it);
- a device matches a request when its DeviceClass's selectors and the request's selectors accept it
  (:mod:`tests.sim.dra_cel`), it has every capacity the request names, and no taint with effect
  ``NoSchedule``/``NoExecute`` that the request does not tolerate;
- a device without ``allowMultipleAllocations`` goes to one claim and one request, whole;
- a device with it is shared: each allocation consumes, per capacity, the requested amount rounded by the
  capacity's request policy (below ``validRange.min``: raised to it; between steps: up to ``min + n*step``;
  over ``max``: does not fit; ``validValues``: the smallest valid value at or above it, none: does not fit),
  or the policy's ``default`` when the request names none, or the whole capacity when there is no policy; the
  sum of what all allocations consume never exceeds the capacity's value; the result carries ``shareID`` and
  ``consumedCapacity``;
- devices that consume counters (partitionable devices) fit only while the sum over allocated devices stays
  within the pool's ``sharedCounters``;
- ``matchAttribute`` constraints: every device chosen for the named requests has the attribute, with one value;
- first fit: requests in order, pools by name, devices in slice order, backtracking when a later request or
  a constraint fails. ``allocationMode: All``, ``firstAvailable`` and ``adminAccess`` are refused
  (:class:`UnsupportedRequestError`), never guessed.
"""

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugin.core.resourceslice import binary_quantity
from tests.sim.dra_cel import matches
from vcuda.units import parse_quantity

__all__ = ["Device", "Unallocatable", "UnsupportedRequestError", "allocate", "consumed", "node_devices"]

Obj = dict[str, Any]
Key = tuple[str, str, str]  # driver, pool, device


class UnsupportedRequestError(ValueError):
    """A request the simulated allocator does not implement."""


@dataclass(frozen=True, slots=True)
class Unallocatable:
    reason: str


@dataclass(frozen=True, slots=True)
class Device:
    driver: str
    pool: str
    spec: Obj  # the slice's device entry, plus "driver" for CEL
    counters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # the pool's counter sets

    @property
    def key(self) -> Key:
        return (self.driver, self.pool, self.spec["name"])

    @property
    def multi(self) -> bool:
        return bool(self.spec.get("allowMultipleAllocations"))


def node_devices(slices: Sequence[Obj], node: str) -> list[Device]:
    """The devices of complete pools at their highest generation on ``node``, pools by name."""
    pools: dict[tuple[str, str], list[Obj]] = {}
    for s in slices:
        spec = s["spec"]
        if spec.get("nodeName") == node:
            pools.setdefault((spec["driver"], spec["pool"]["name"]), []).append(spec)
    found: list[Device] = []
    for (driver, pool), specs in sorted(pools.items()):
        top = max(s["pool"]["generation"] for s in specs)
        current = [s for s in specs if s["pool"]["generation"] == top]
        if len(current) != current[0]["pool"]["resourceSliceCount"]:
            continue  # incomplete: the scheduler waits for the rest
        counters = {
            c["name"]: {k: parse_quantity(v["value"]) for k, v in c["counters"].items()}
            for s in current
            for c in s.get("sharedCounters", [])
        }
        found += [
            Device(driver, pool, d | {"driver": driver}, counters)
            for s in current
            for d in s.get("devices", [])
        ]
    return found


def _round(requested: int, policy: Mapping[str, Any]) -> int | None:
    """The amount consumed for ``requested`` under ``policy``; None when the policy refuses it."""
    if "validValues" in policy:
        valid = sorted(parse_quantity(v) for v in policy["validValues"])
        return next((v for v in valid if v >= requested), None)
    bounds = policy.get("validRange")
    if not bounds:
        return requested
    low = parse_quantity(bounds.get("min", 0))
    amount = max(requested, low)
    if bounds.get("step"):
        step = parse_quantity(bounds["step"])
        amount = low + -(-(amount - low) // step) * step
    if bounds.get("max") is not None and amount > parse_quantity(bounds["max"]):
        return None
    return amount


def consumed(device: Device, requests: Mapping[str, str]) -> dict[str, int] | None:
    """What one allocation of ``device`` takes per capacity for ``requests``; None when it does not fit a
    policy or names a capacity the device lacks."""
    capacity = device.spec.get("capacity") or {}
    if any(name not in capacity for name in requests):
        return None
    out: dict[str, int] = {}
    for name, cap in capacity.items():
        policy = cap.get("requestPolicy") or {}
        if name in requests:
            amount = _round(parse_quantity(requests[name]), policy)
        elif policy.get("default") is not None:
            amount = parse_quantity(policy["default"])
        else:
            amount = parse_quantity(cap["value"])
        if amount is None:
            return None
        out[name] = amount
    return out


@dataclass
class _Book:
    """What is already allocated on the node: exclusive holders, shared consumption, counters used."""

    exclusive: set[Key] = field(default_factory=set)
    shared: dict[Key, dict[str, int]] = field(default_factory=dict)
    counters: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # driver, pool, set, counter

    def fits(self, device: Device, take: Mapping[str, int] | None) -> bool:
        if device.key in self.exclusive:
            return False
        if device.multi:
            assert take is not None
            used = self.shared.get(device.key, {})
            capacity = device.spec.get("capacity") or {}
            if any(used.get(k, 0) + v > parse_quantity(capacity[k]["value"]) for k, v in take.items()):
                return False
        elif device.key in self.shared:
            return False
        return all(
            self.counters.get((device.driver, device.pool, c["counterSet"], name), 0)
            + parse_quantity(v["value"])
            <= device.counters.get(c["counterSet"], {}).get(name, 0)
            for c in device.spec.get("consumesCounters", [])
            for name, v in c["counters"].items()
        )

    def add(self, device: Device, take: Mapping[str, int] | None) -> None:
        if device.multi and take is not None:
            used = self.shared.setdefault(device.key, {})
            for k, v in take.items():
                used[k] = used.get(k, 0) + v
        else:
            self.exclusive.add(device.key)
        for c in device.spec.get("consumesCounters", []):
            for name, v in c["counters"].items():
                key = (device.driver, device.pool, c["counterSet"], name)
                self.counters[key] = self.counters.get(key, 0) + parse_quantity(v["value"])


def _book(devices: Sequence[Device], claims: Sequence[Obj]) -> _Book:
    by_key = {d.key: d for d in devices}
    book = _Book()
    for claim in claims:
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for r in (allocation.get("devices") or {}).get("results") or []:
            device = by_key.get((r["driver"], r["pool"], r["device"]))
            if device is not None:
                take = {k: parse_quantity(v) for k, v in (r.get("consumedCapacity") or {}).items()}
                book.add(device, take if device.multi else None)
    return book


@dataclass(frozen=True, slots=True)
class _Request:
    name: str
    selectors: tuple[str, ...]
    count: int
    capacity: Mapping[str, str]
    tolerations: tuple[Obj, ...]


def _requests(claim: Obj, classes: Mapping[str, Obj]) -> list[_Request]:
    out = []
    for raw in claim["spec"]["devices"].get("requests", []):
        if "exactly" not in raw:
            raise UnsupportedRequestError(f"request {raw.get('name')}: only `exactly` is simulated")
        exact = raw["exactly"]
        if exact.get("allocationMode", "ExactCount") != "ExactCount" or exact.get("adminAccess"):
            raise UnsupportedRequestError(f"request {raw['name']}: only ExactCount without adminAccess")
        device_class = classes.get(exact["deviceClassName"])
        if device_class is None:
            raise KeyError(f"DeviceClass {exact['deviceClassName']} does not exist")
        selectors = [s["cel"]["expression"] for s in device_class["spec"].get("selectors", [])]
        selectors += [s["cel"]["expression"] for s in exact.get("selectors", [])]
        out.append(_Request(raw["name"], tuple(selectors), int(exact.get("count", 1)),
                            (exact.get("capacity") or {}).get("requests") or {}, tuple(exact.get("tolerations", []))))  # fmt: skip
    return out


def _tolerated(taint: Mapping[str, str], tolerations: Sequence[Obj]) -> bool:
    return any(
        t.get("key") in (None, "", taint["key"])
        and (t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""))
        and t.get("effect") in (None, "", taint["effect"])
        for t in tolerations
    )


def _candidate(device: Device, request: _Request) -> dict[str, int] | bool | None:
    """False: the device does not match; otherwise what an allocation would consume (None: exclusive)."""
    if not all(matches(expression, device.spec) for expression in request.selectors):
        return False
    if any(
        t["effect"] in ("NoSchedule", "NoExecute") and not _tolerated(t, request.tolerations)
        for t in device.spec.get("taints", [])
    ):
        return False
    take = consumed(device, request.capacity)
    if take is None:
        return False
    return take if device.multi else None


def _attribute(device: Device, qualified: str) -> object:
    domain, _, name = qualified.partition("/")
    attrs = device.spec.get("attributes") or {}
    found = attrs.get(qualified) or (attrs.get(name) if domain == device.driver else None)
    return None if not found else next(iter(found.values()))


def _constraints_hold(claim: Obj, chosen: Sequence[tuple[str, Device, Any]]) -> bool:
    for constraint in claim["spec"]["devices"].get("constraints", []):
        names = set(constraint.get("requests") or [r for r, _, _ in chosen])
        if "matchAttribute" in constraint:
            values = [_attribute(d, constraint["matchAttribute"]) for r, d, _ in chosen if r in names]
            if any(v is None for v in values) or len(set(map(repr, values))) > 1:
                return False
    return True


def _search(
    claim: Obj, requests: Sequence[_Request], devices: Sequence[Device], book: _Book, chosen: list[Any]
) -> Iterator[list[Any]]:
    """Every first-fit assignment of the remaining slots (request, n-th device), in order."""
    slots = [(r, i) for r in requests for i in range(r.count)]
    if len(chosen) == len(slots):
        if _constraints_hold(claim, chosen):
            yield list(chosen)
        return
    request, _ = slots[len(chosen)]
    for device in devices:
        if any(r == request.name and d.key == device.key for r, d, _ in chosen):
            continue  # one request takes distinct devices
        take = _candidate(device, request)
        if take is False or not book.fits(device, take if isinstance(take, dict) else None):
            continue
        if not device.multi and any(d.key == device.key for _, d, _ in chosen):
            continue
        trial = _Book(set(book.exclusive), {k: dict(v) for k, v in book.shared.items()}, dict(book.counters))
        trial.add(device, take if isinstance(take, dict) else None)
        chosen.append((request.name, device, take))
        yield from _search(claim, requests, devices, trial, chosen)
        chosen.pop()


def _result(request: str, device: Device, take: Any) -> Obj:
    out: Obj = {
        "request": request,
        "driver": device.driver,
        "pool": device.pool,
        "device": device.spec["name"],
    }
    if isinstance(take, dict):
        out["shareID"] = str(uuid.uuid4())
        out["consumedCapacity"] = {k: binary_quantity(v) for k, v in sorted(take.items())}
    return out


def _config(claim: Obj, classes: Mapping[str, Obj]) -> list[Obj]:
    out = []
    for raw in claim["spec"]["devices"].get("requests", []):
        device_class = classes[raw["exactly"]["deviceClassName"]]
        out += [
            {"source": "FromClass", "requests": [raw["name"]], **c}
            for c in device_class["spec"].get("config", [])
        ]
    out += [{"source": "FromClaim", **c} for c in claim["spec"]["devices"].get("config", [])]
    return out


def allocate(
    claim: Obj, *, node: str, slices: Sequence[Obj], classes: Mapping[str, Obj], claims: Sequence[Obj]
) -> Obj | Unallocatable:
    """``status.allocation`` for ``claim`` on ``node`` next to the allocated ``claims``, or why it cannot be."""
    devices = node_devices(slices, node)
    book = _book(devices, claims)
    requests = _requests(claim, classes)
    found = next(_search(claim, requests, devices, book, []), None)
    if found is None:
        return Unallocatable(f"cannot allocate all claims on node {node}")
    selector = {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    }
    return {
        "devices": {"results": [_result(r, d, t) for r, d, t in found], "config": _config(claim, classes)},
        "nodeSelector": selector,
    }
