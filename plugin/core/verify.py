"""The ``PreStartContainer`` verdict: does the container holding the devices match their configuration?

PodResources names the container that really holds the devices (``owner``). The attributed container is
confirmed; an interchangeable one (identical request, constraints and core limit) may have swapped places
and the records are corrected; anything else raises :class:`AttributionMismatchError`. Standard library only.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from plugin.core.admission import Booked
from plugin.core.attribution import (
    Candidate,
    ContainerKey,
    PendingPod,
    PodRef,
    container_name,
    interchangeable,
)
from plugin.core.errors import AttributionMismatchError
from plugin.core.slices import gpu_split
from vcuda.model import GpuShare, Phase

__all__ = [
    "Outcome",
    "Verdict",
    "confirmed_containers",
    "pod_phase",
    "swap_moves",
    "swap_owners",
    "verify",
]


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    SWAPPED = "swapped"


@dataclass(frozen=True, slots=True)
class Verdict:
    """``owner`` is who really holds the devices; on a swap, ``owner`` takes ``ids``' GPUs in the records."""

    outcome: Outcome
    owner: ContainerKey


def verify(
    attributed: Candidate,
    owner: ContainerKey | None,
    owner_candidate: Candidate | None,
    ids: Sequence[str],
) -> Verdict:
    """Check an attribution against PodResources; :class:`AttributionMismatchError` means do not start."""
    if owner is None:
        held = sorted(gpu_split(ids))
        raise AttributionMismatchError(
            f"the kubelet reports no container holding {len(ids)} slices of {held} "
            f"(configured for {container_name(attributed.key)})"
        )
    if owner == attributed.key:
        return Verdict(Outcome.CONFIRMED, owner)
    if owner_candidate is not None and interchangeable(attributed, owner_candidate):
        return Verdict(Outcome.SWAPPED, owner)
    raise AttributionMismatchError(
        f"devices on {sorted(gpu_split(ids))} were configured for {container_name(attributed.key)} but the "
        f"kubelet gave them to {container_name(owner)}, whose request or constraints differ; not starting it"
    )


def swap_moves(attributed: Candidate, owner: Candidate) -> dict[PodRef, dict[str, tuple[GpuShare, ...]]]:
    """The GPUs each of two swapped containers runs on now, per pod (the moves its status records)."""
    new = {owner.key: attributed.assignment.shares, attributed.key: owner.assignment.shares}
    return {
        pod: {k.container: s for k, s in new.items() if k.pod == pod}
        for pod in sorted({owner.key.pod, attributed.key.pod})
    }


def swap_owners(
    owners: Mapping[str, ContainerKey], dir_name: str, attributed: ContainerKey, owner: ContainerKey
) -> dict[str, ContainerKey]:
    """The records (by directory) a swap hands to another container: ``dir_name``'s devices go to
    ``owner``, and ``owner``'s other records to ``attributed`` (it runs with their configuration)."""
    moved = {n: attributed for n, o in owners.items() if o == owner and n != dir_name}
    return moved | {dir_name: owner}


def confirmed_containers(records: Iterable[Booked], pod: PodRef, pending: PendingPod | None) -> set[str]:
    """The pod's containers whose allocation is confirmed (records) or already read back as allocated."""
    done = {r.owner.container for r in records if r.confirmed and r.owner.pod == pod}
    return done | set(pending.allocated if pending else ())


def pod_phase(pending: PendingPod | None, done: set[str]) -> Phase:
    """``allocated`` once every GPU container of the pod is confirmed, else ``assumed``."""
    wanted = {c.name for c in pending.request.containers} if pending is not None else done
    return Phase.ALLOCATED if wanted <= done else Phase.ASSUMED
