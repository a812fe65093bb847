"""Steps of a simulated-cluster scenario (tests/e2e): submit pods at once, wait until some are bound, wait until
all settle and assert the invariants."""

from typing import Any

from tests.sim.cluster import SimCluster


async def settle_and_check(cluster: SimCluster, keys: list[str], *, timeout_s: float = 60.0,
                           settled: tuple[str, ...] = ("running", "failed", "unschedulable", "rejected", "blocked")) -> dict[str, Any]:  # fmt: skip
    """Wait for ``keys`` to reach ``settled`` states, then assert the invariants; the pods' states."""
    from tests.sim.invariants import check_invariants

    states = await cluster.wait_settled(keys, timeout_s=timeout_s, settled=settled)
    problems = await check_invariants(cluster)
    assert not problems, "\n".join(problems)
    return states


async def submit_all(cluster: SimCluster, pods: list[dict[str, Any]]) -> list[str]:
    """Submit every pod at once (concurrent creates); their keys."""
    import asyncio

    await asyncio.gather(*(cluster.submit(p) for p in pods))
    return [f"default/{p['metadata']['name']}" for p in pods]


async def wait_bound(cluster: SimCluster, keys: list[str], count: int, *, timeout_s: float = 30.0) -> None:
    """Wait until at least ``count`` of ``keys`` are bound to a node (to act in the middle of a stream)."""
    from tests.sim.waiting import wait_until

    async def enough() -> bool:
        pods = await cluster.pods()
        return sum(1 for k in keys if (pods.get(k, {}).get("spec") or {}).get("nodeName")) >= count

    await wait_until(enough, timeout_s=timeout_s, what=f"{count} pods bound")
