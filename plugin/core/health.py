"""GPU health decisions from XID events and reachability probes. Standard library only.

A GPU is unhealthy while it is unreachable (NVML lost it) or while a critical XID is recent. Application
XIDs (a kernel's own fault: 13, 31, 43, 45, 68 by default) never change health. A GPU marked by an XID comes
back once it is reachable and ``recovery_s`` seconds have passed without another critical XID
(``recovery_s == 0``: an XID mark stays until the plugin restarts, as in NVIDIA's device plugin).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from vcuda.model import GpuUuid

__all__ = [
    "DEFAULT_IGNORED_XIDS",
    "GpuHealth",
    "HealthPolicy",
    "apply_probe",
    "apply_xid",
    "healthy_map",
    "initial_book",
    "next_recovery",
]

DEFAULT_IGNORED_XIDS: Final = frozenset({13, 31, 43, 45, 68})


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS
    recovery_s: float = 0.0


@dataclass(frozen=True, slots=True)
class GpuHealth:
    """One GPU's health inputs. ``last_xid_at`` is the monotonic time of the last critical XID."""

    reachable: bool = True
    last_xid: int | None = None
    last_xid_at: float | None = None

    @property
    def healthy(self) -> bool:
        return self.reachable and self.last_xid is None

    @property
    def reason(self) -> str:
        if not self.reachable:
            return "unreachable"
        return f"xid {self.last_xid}" if self.last_xid is not None else "healthy"


def apply_xid(
    book: Mapping[GpuUuid, GpuHealth], uuid: GpuUuid, xid: int, now: float, policy: HealthPolicy
) -> dict[GpuUuid, GpuHealth]:
    """The book after an XID event; unknown GPUs and application XIDs change nothing."""
    if uuid not in book or xid in policy.ignored_xids:
        return dict(book)
    return {**book, uuid: replace(book[uuid], last_xid=xid, last_xid_at=now)}


def apply_probe(
    book: Mapping[GpuUuid, GpuHealth], reachable: Mapping[GpuUuid, bool], now: float, policy: HealthPolicy
) -> dict[GpuUuid, GpuHealth]:
    """The book after a reachability probe, clearing XID marks older than the recovery window."""
    out: dict[GpuUuid, GpuHealth] = {}
    for uuid, health in book.items():
        up = reachable.get(uuid, health.reachable)
        health = replace(health, reachable=up)
        expired = (
            policy.recovery_s > 0
            and health.last_xid_at is not None
            and now - health.last_xid_at >= policy.recovery_s
        )
        if up and expired:
            health = GpuHealth()
        out[uuid] = health
    return out


def next_recovery(book: Mapping[GpuUuid, GpuHealth], policy: HealthPolicy) -> float | None:
    """When the earliest XID mark of a reachable GPU expires (monotonic), or None: nothing to clear by time.

    An unreachable GPU's mark is cleared by the probe that finds it reachable again (:func:`apply_probe`).
    """
    if policy.recovery_s <= 0:
        return None
    marks = [h.last_xid_at for h in book.values() if h.reachable and h.last_xid_at is not None]
    return min(marks) + policy.recovery_s if marks else None


def healthy_map(book: Mapping[GpuUuid, GpuHealth]) -> dict[GpuUuid, bool]:
    return {uuid: h.healthy for uuid, h in book.items()}


def initial_book(uuids: Iterable[GpuUuid]) -> dict[GpuUuid, GpuHealth]:
    return {u: GpuHealth() for u in uuids}
