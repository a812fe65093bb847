"""The rule that lets identical pods bind in parallel while the plugin can still tell every
Allocate apart. Pure.

The kubelet's ``Allocate`` names no pod: the plugin sees a container asking for N ``vcuda-core`` IDs. Two pods
in flight on one node (bound, not yet allocated) are safe when every pair of their containers with the same
``vcuda-core`` count was given the same thing up to the choice of GPU (same cores and MiB per GPU, same soft
limit): whichever the plugin attributes to whichever, each container gets what it asked for. When they differ
in anything else, the second pod waits or goes elsewhere. HAMi instead serialises every bind on a node.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from vcuda.model import ContainerAssignment

__all__ = ["Conflict", "Signature", "find_conflict", "signature"]

Signature = tuple[int, int, tuple[tuple[int, int], ...]]


def signature(container: ContainerAssignment) -> Signature:
    """What the plugin must not confuse: cores, soft limit and (cores, MiB) per GPU, GPU UUIDs left out."""
    shares = tuple(sorted((s.cores, s.memory_mib) for s in container.shares))
    return container.cores, container.core_limit, shares


@dataclass(frozen=True, slots=True)
class Conflict:
    """``cores`` is the ``vcuda-core`` count two differently assigned in-flight containers share."""

    cores: int
    container: str

    @property
    def detail(self) -> str:
        return (
            f"waiting: another pod with vcuda-core {self.cores} but a different assignment is being "
            "allocated on this node (the device plugin could not tell the two apart)"
        )


def find_conflict(
    in_flight: Iterable[Signature], candidate: Iterable[ContainerAssignment]
) -> Conflict | None:
    """The first of ``candidate``'s containers that in-flight containers with its core count would be
    confused with, or None when the candidate may bind now."""
    by_cores: dict[int, set[Signature]] = {}
    for sig in in_flight:
        by_cores.setdefault(sig[0], set()).add(sig)
    for container in candidate:
        others = by_cores.get(container.cores)
        if others and others != {signature(container)}:
            return Conflict(container.cores, container.name)
    return None
