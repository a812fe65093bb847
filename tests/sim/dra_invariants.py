"""The simulated cluster's DRA invariants, from the API objects alone (ResourceSlices and ResourceClaims).

4. No device is over-committed: over the allocated claims, a device without ``allowMultipleAllocations`` is
   in at most one result; for a shared device, the sum of the results' ``consumedCapacity`` stays within each
   capacity's value, and every result on it carries a ``shareID`` and its consumption; the devices that
   consume a pool's counters stay within its ``sharedCounters``; every result names a device the pool
   publishes at its current generation (a claim on a withdrawn device is reported, as the scheduler would
   never make it).
"""

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from tests.sim.dra_allocator import Device, node_devices
from vcuda.units import parse_quantity

__all__ = ["dra_overcommit"]

Obj = dict[str, Any]


def _results(claims: Sequence[Obj]) -> list[tuple[str, Obj]]:
    out = []
    for claim in claims:
        name = f"{claim['metadata'].get('namespace', '')}/{claim['metadata']['name']}"
        allocation = (claim.get("status") or {}).get("allocation") or {}
        out += [(name, r) for r in (allocation.get("devices") or {}).get("results") or []]
    return out


def _device_problems(device: Device, held: Sequence[tuple[str, Obj]]) -> list[str]:
    where = "/".join(device.key)
    if not device.multi:
        return [f"{where} is exclusive but held by {[c for c, _ in held]}"] if len(held) > 1 else []
    problems = [f"{where}: {c} holds a share without shareID or consumedCapacity" for c, r in held
                if not r.get("shareID") or not r.get("consumedCapacity")]  # fmt: skip
    used: Counter[str] = Counter()
    for _, r in held:
        for k, v in (r.get("consumedCapacity") or {}).items():
            used[k] += parse_quantity(v)
    for k, total in used.items():
        value = parse_quantity(((device.spec.get("capacity") or {}).get(k) or {}).get("value", 0))
        if total > value:
            problems.append(f"{where}: {k} consumed {total} > capacity {value}")
    return problems


def dra_overcommit(slices: Sequence[Obj], claims: Sequence[Obj], nodes: Sequence[str]) -> list[str]:
    """Invariant 4 on ``nodes``; the list of violations (empty when it holds)."""
    problems: list[str] = []
    results = _results(claims)
    for node in nodes:
        devices = {d.key: d for d in node_devices(slices, node)}
        held: dict[tuple[str, str, str], list[tuple[str, Obj]]] = defaultdict(list)
        for claim, r in results:
            key = (r["driver"], r["pool"], r["device"])
            if key in devices:
                held[key].append((claim, r))
            elif r["pool"] == node:
                problems.append(f"{claim} holds {'/'.join(key)}, which the pool does not publish")
        counters: Counter[tuple[str, str, str]] = Counter()
        for key, holders in held.items():
            device = devices[key]
            problems += _device_problems(device, holders)
            for c in device.spec.get("consumesCounters", []):
                for name, v in c["counters"].items():
                    counters[(device.pool, c["counterSet"], name)] += parse_quantity(v["value"]) * len(
                        holders
                    )
        for (pool, counter_set, name), total in counters.items():
            limit = (
                next(d for d in devices.values() if d.pool == pool).counters.get(counter_set, {}).get(name, 0)
            )
            if total > limit:
                problems.append(f"pool {pool}: counter {counter_set}/{name} used {total} > {limit}")
    return problems
