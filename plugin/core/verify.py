"""The ``PreStartContainer`` verdict: does the container holding the devices match their configuration?

PodResources names the container that really holds the devices (``owner``). The attributed container is
confirmed; an interchangeable one (identical request, constraints and core limit) may have swapped places
and the records are corrected; anything else raises :class:`AttributionMismatchError`. Standard library only.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from plugin.core.attribution import Candidate, ContainerKey, container_name, interchangeable
from plugin.core.errors import AttributionMismatchError
from plugin.core.slices import gpu_split

__all__ = ["Outcome", "Verdict", "verify"]


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
