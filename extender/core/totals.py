"""Cluster-wide sums kept as the ledgers change, so reading them costs nothing and needs no lock. Pure.

The extender's ``/metrics`` reports the cluster as a few numbers (nodes, GPUs, compute and memory allocatable
and allocated, pods by phase of the ledger), never per node or per GPU: those series belong to the node
exporters. A :class:`Tally` is told of every summary a ledger takes up or gives back and of every change in a
node's pod counts (:class:`extender.core.summary.SummaryIndex` and :class:`extender.core.ledger.NodeLedger`
call it under the state's lock) and publishes a new immutable :class:`ClusterTotals` after each: a reader
takes ``tally.totals`` (one reference read) without the lock. A reader landing inside one node's update may
see that node counted once too few for that instant; the figures are exact between updates.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

if TYPE_CHECKING:  # summary.py imports this module
    from extender.core.summary import NodeSummary

__all__ = ["NO_PODS", "ClusterTotals", "PodCounts", "Tally", "count_pods"]


class ClusterTotals(NamedTuple):
    """Sums over every node the extender knows. Compute in percent of one GPU, memory in MiB."""

    nodes: int = 0
    """Nodes with a ledger: every watched node, with or without GPUs."""
    gpu_nodes: int = 0
    gpus: int = 0
    healthy_gpus: int = 0
    core_capacity: int = 0
    memory_capacity_mib: int = 0
    used_cores: int = 0
    used_mib: int = 0
    reserved_pods: int = 0
    """Reserved by a bind the API server has not yet confirmed."""
    bound_pods: int = 0
    """Bound, waiting for the plugin's confirmation (in flight)."""
    settled_pods: int = 0
    """Confirmed by the plugin or past the grace, with a verified assignment."""
    unplaced_pods: int = 0
    """Bound without a valid assignment, charged on every GPU of the node."""


class PodCounts(NamedTuple):
    reserved: int = 0
    bound: int = 0
    settled: int = 0
    unplaced: int = 0


NO_PODS: Final = PodCounts()
_PODS_AT: Final = ClusterTotals._fields.index("reserved_pods")


class _Held(Protocol):
    @property
    def bound(self) -> bool: ...

    @property
    def settled(self) -> bool: ...

    @property
    def unplaced(self) -> tuple[object, ...]: ...


def count_pods(holdings: Iterable[_Held]) -> PodCounts:
    """One node's holdings by phase."""
    reserved = bound = settled = unplaced = 0
    for h in holdings:
        if not h.bound:
            reserved += 1
        elif not h.settled:
            bound += 1
        elif h.unplaced:
            unplaced += 1
        else:
            settled += 1
    return PodCounts(reserved, bound, settled, unplaced)


class Tally:
    """The running sums. Not thread-safe for writers (the state's lock serialises them); readers take
    :attr:`totals`, which is replaced, never changed."""

    __slots__ = ("_sums", "totals")

    def __init__(self) -> None:
        self._sums = list(ClusterTotals())
        self.totals = ClusterTotals()

    def add(self, summary: "NodeSummary", sign: int) -> None:
        """A ledger took up (``sign`` 1) or gave back (-1) ``summary``."""
        s = self._sums
        s[0] += sign
        if summary.gpu_count:
            s[1] += sign
            s[2] += sign * summary.gpu_count
            s[3] += sign * len(summary.free)
            s[4] += sign * summary.core_capacity
            s[5] += sign * summary.total_mib
            s[6] += sign * summary.used_cores
            s[7] += sign * summary.used_mib
        self.totals = ClusterTotals._make(s)

    def move_pods(self, before: PodCounts, after: PodCounts) -> None:
        """A node's pod counts changed from ``before`` to ``after``."""
        if before == after:
            return
        s = self._sums
        for i, (old, new) in enumerate(zip(before, after, strict=True), start=_PODS_AT):
            s[i] += new - old
        self.totals = ClusterTotals._make(s)
