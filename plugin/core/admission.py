"""What the kubelet's PodResources ``List`` tells the allocator about the pod being admitted. Stdlib only.

The allocator keeps its pending pods and allocation records; these functions make its decisions over them:
which pods the kubelet is admitting now (:func:`admitting`), which candidates the records leave
(:func:`with_records`), what to suggest (:func:`steer`), why a suggestion could not follow the assignment
(:func:`withheld_reason`), which record a ``PreStartContainer`` is for (:func:`record_for`) and who really
holds its devices (:func:`holder`).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from plugin.core.attribution import (
    Candidate,
    ContainerKey,
    PendingPod,
    PodRef,
    container_name,
    prefer,
    shortfall,
    unlisted_init,
)
from plugin.core.reconcile import KubeletView
from plugin.core.slices import gpu_split

__all__ = [
    "Booked",
    "Held",
    "admitting",
    "contested",
    "holder",
    "kubelet_view",
    "record_for",
    "several_match",
    "steer",
    "with_records",
    "withheld_reason",
]


@dataclass(frozen=True, slots=True)
class Held:
    """One container as PodResources lists it, with the ``vcuda-core`` IDs it holds (maybe none)."""

    namespace: str
    pod: str
    container: str
    device_ids: frozenset[str]


class Booked(Protocol):
    """An allocation record as the decisions see it (``plugin.statedir.AllocationRecord``)."""

    @property
    def device_ids(self) -> tuple[str, ...]: ...
    @property
    def owner(self) -> ContainerKey: ...
    @property
    def confirmed(self) -> bool: ...


B = TypeVar("B", bound=Booked)


def with_records(
    pods: Iterable[PendingPod], records: Iterable[Booked], *, tentative: bool
) -> list[PendingPod]:
    """The pods with every container a record attributes counted as allocated (``tentative``: unconfirmed
    records too, as ``Allocate`` does; else confirmed ones only, as ``PreStartContainer`` does)."""
    taken: dict[PodRef, set[str]] = {}
    for r in records:
        if tentative or r.confirmed:
            taken.setdefault(r.owner.pod, set()).add(r.owner.container)
    return [replace(p, allocated=p.allocated | taken.get(p.key, set())) for p in pods]


def admitting(pods: Mapping[PodRef, PendingPod], held: Iterable[Held]) -> frozenset[PodRef]:
    """Pods the kubelet knows (PodResources) with a GPU container that holds no slices yet."""
    by_name = {(k.namespace, k.name): k for k in pods}
    out = set()
    for h in held:
        key = by_name.get((h.namespace, h.pod))
        if (
            key is not None
            and not h.device_ids
            and any(c.name == h.container for c in pods[key].request.containers)
        ):
            out.add(key)
    return frozenset(out)


def kubelet_view(held: Iterable[Held]) -> KubeletView:
    listed = tuple(held)
    return KubeletView(
        frozenset((h.namespace, h.pod) for h in listed),
        frozenset(h.device_ids for h in listed),
        frozenset((h.namespace, h.pod, h.container) for h in listed),
    )


def contested(ranked: Sequence[Candidate], size: int) -> bool:
    """Several candidates ask for ``size`` slices: the kubelet's admitting pod must go first."""
    return sum(c.request.cores == size for c in ranked) > 1


def steer(
    ranked: Sequence[Candidate], available: Sequence[str], must_include: Sequence[str], size: int
) -> tuple[list[str], Candidate | None]:
    """The IDs to suggest and the candidate they are for (None: none fits, a plain pick)."""
    chosen = prefer(ranked, available, must_include, size)
    split = gpu_split(chosen)
    return chosen, next((c for c in ranked if c.request.cores == size and c.split == split), None)


def several_match(ranked: Sequence[Candidate], ids: Sequence[str]) -> bool:
    split = gpu_split(ids)
    return sum(c.split == split for c in ranked) > 1


def withheld_reason(
    ranked: Sequence[Candidate],
    held: Iterable[Held],
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
) -> str:
    """Names the slices the kubelet did not offer for the best candidate's GPUs and who holds them."""
    found = shortfall(ranked, available, must_include, size)
    if found is None or not found[1]:
        return ""
    cand, lacking = found
    holders = sorted({f"{h.namespace}/{h.pod}" for h in held if set(gpu_split(h.device_ids)) & set(lacking)})
    where = ", ".join(f"{k} of {u}" for u, k in lacking.items())
    who = (
        f"containers of {', '.join(holders)} hold slices there"
        if holders
        else "no container the kubelet lists holds them: it still counts them for a pod it no longer "
        "runs (after a restart it frees those only once its pod sources have synced)"
    )
    return f"the kubelet withheld {where} assigned to {container_name(cand.key)}; {who}"


def record_for(records: Iterable[B], ids: Sequence[str]) -> B | None:
    """The record of exactly ``ids``; an unconfirmed one first (init containers' devices may be reused)."""
    wanted = tuple(sorted(ids))
    found = sorted((r for r in records if r.device_ids == wanted), key=lambda r: r.confirmed)
    return found[0] if found else None


def holder(held: Sequence[Held], pods: Mapping[PodRef, PendingPod], record: Booked) -> ContainerKey | None:
    """Who PodResources says holds the record's devices, pending here or not: a pod without a valid
    assignment (one that copied another pod's) is named too, so the refusal lands on it and not on the
    pod whose assignment it copied."""
    ids = frozenset(record.device_ids)
    by_name = {(k.namespace, k.name): k for k in pods}
    owners = [
        ContainerKey(by_name.get((h.namespace, h.pod)) or PodRef(h.namespace, h.pod, ""), h.container)
        for h in held
        if h.device_ids == ids
    ]
    if record.owner in owners:
        return record.owner
    listed = [(h.namespace, h.pod, h.device_ids) for h in held]
    if unlisted_init(record.owner, pods.get(record.owner.pod), listed, ids):
        return record.owner  # a regular init container: PodResources does not list it
    return owners[0] if owners else None
