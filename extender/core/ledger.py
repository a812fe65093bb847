"""Who holds which GPU shares on each node, and which of those pods are still in flight. Pure, no locking.

A :class:`Holding` is one pod's assignment on a node: reserved at bind (before the API server knows), or read
back from a bound pod's verified annotation. A bound GPU pod whose assignment is lost (removed, tampered
with, signed with a retired key) and that this process never saw verified is held *unplaced*: its request is
charged on every GPU of its node until it ends, so its GPU is never sold twice. A holding is *in flight*
until the plugin confirms it (phase allocated or failed) or the grace passes. A bound pod that left the API
server before its kubelet reported it ended (force-deleted) stays charged, *gone*, for a bounded hold: the
kubelet may still count its devices (:func:`release`). A :class:`NodeLedger` keeps a
node's inventory, holdings and the load and summary derived from them, recomputed on every change so reads
are free.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import NewType

from extender.core.inflight import Signature, signature
from extender.core.load import Charge, GpuLoad, charge_every_gpu, reserve
from extender.core.summary import EMPTY_SUMMARY, NodeSummary, SummaryIndex, summarise
from extender.core.totals import NO_PODS, PodCounts, count_pods
from vcuda.model import ContainerAssignment, GpuUuid, NodeInventory, NodeName

__all__ = ["Expiry", "Holding", "NodeLedger", "PodKey", "expire", "gone_in", "release"]

PodKey = NewType("PodKey", str)


@dataclass(frozen=True, slots=True)
class Holding:
    """``since`` is when it was reserved or first seen (seconds); ``bound`` once the API server has the pod on
    the node; ``settled`` once it is no longer in flight. ``unplaced`` charges a pod whose GPUs are not
    known on every GPU of the node (:func:`extender.core.load.charge_every_gpu`)."""

    pod: PodKey
    containers: tuple[ContainerAssignment, ...]
    since: float
    bound: bool = False
    settled: bool = False
    unplaced: tuple[Charge, ...] = ()
    reserved: tuple[ContainerAssignment, ...] | None = None
    """What the pod holds when it is not the sum of ``containers`` (init containers' slices reused:
    :mod:`extender.core.initreuse`); None for a plain pod."""
    gone: float | None = None
    """When the pod left the API server while its kubelet had not reported it ended (seconds); it stays
    charged until :func:`release`. None for a pod the API server still has."""
    admitted: bool = False
    """The pod's kubelet has seen it (a copy with ``status.startTime`` or container statuses): only then may
    the kubelet count its devices after it is gone, so only then is it held (:func:`release`)."""
    namespace: str = ""
    """The pod's namespace: held gone pods are capped per namespace."""

    @property
    def in_flight(self) -> bool:
        return not self.settled

    @property
    def charged(self) -> tuple[ContainerAssignment, ...]:
        """The shares the node's load counts for the pod."""
        return self.containers if self.reserved is None else self.reserved


class NodeLedger:
    """One node's GPUs and the holdings on them. ``generation`` changes whenever an answer
    could. With an ``index`` (the state's), every change also updates the node's entry there and the summary
    is the index's shared object for its value."""

    __slots__ = (
        "_holdings",
        "_index",
        "generation",
        "gone",
        "in_flight",
        "inventory",
        "load",
        "name",
        "pods",
        "refused",
        "summary",
    )

    def __init__(
        self, name: NodeName, inventory: NodeInventory | None = None, *, index: SummaryIndex | None = None
    ) -> None:
        self.name = name
        self.inventory = inventory
        self.refused = ""
        """Why the node's published inventory was refused (then ``inventory`` is None); empty otherwise."""
        self._index = index
        self._holdings: dict[PodKey, Holding] = {}
        self.load: dict[GpuUuid, GpuLoad] = {}
        self.summary: NodeSummary = EMPTY_SUMMARY
        self.in_flight: tuple[Signature, ...] = ()
        self.gone = 0
        """How many holdings are of pods gone from the API server (:attr:`Holding.gone`)."""
        self.pods: PodCounts = NO_PODS
        self.generation = 0
        self._refresh()

    def holdings(self) -> Iterator[Holding]:
        return iter(self._holdings.values())

    def get(self, pod: PodKey) -> Holding | None:
        return self._holdings.get(pod)

    def set_inventory(self, inventory: NodeInventory | None, refused: str = "") -> None:
        """``refused``: why the published inventory was unreadable (``inventory`` is then None)."""
        self.inventory, self.refused = inventory, refused
        self._refresh()

    def hold(self, holding: Holding) -> None:
        """Add or replace the pod's holding."""
        self._holdings[holding.pod] = holding
        self._refresh()

    def drop(self, pod: PodKey) -> Holding | None:
        holding = self._holdings.pop(pod, None)
        if holding is not None:
            self._refresh()
        return holding

    def detach(self) -> None:
        """The node is gone: leave the index (the ledger must not be changed afterwards)."""
        if self._index is not None:
            self._index.set(self.name, None)
            self._index.give_back(self.summary)
            self._index.tally.move_pods(self.pods, NO_PODS)
            self._index = None

    def _refresh(self) -> None:
        load: dict[GpuUuid, GpuLoad] = {}
        for holding in self._holdings.values():
            load = reserve(load, holding.charged)
        unplaced = [c for h in self._holdings.values() for c in h.unplaced]
        if unplaced and self.inventory is not None:
            load = charge_every_gpu(load, self.inventory.gpus, unplaced)
        self.load = load
        summary = summarise(self.inventory, load) if self.inventory is not None else EMPTY_SUMMARY
        self.in_flight = tuple(
            signature(c) for h in self._holdings.values() if h.in_flight for c in h.containers
        )
        self.gone = sum(1 for h in self._holdings.values() if h.gone is not None)
        self.generation += 1
        pods, self.pods = self.pods, count_pods(self._holdings.values())
        index = self._index
        if index is None:
            self.summary = summary
            return
        index.tally.move_pods(pods, self.pods)
        if self.generation > 1:
            index.give_back(self.summary)
        self.summary = index.share(summary)
        quick = self.inventory is not None and self.summary.free and not self.in_flight
        index.set(self.name, self.summary if quick else None)


@dataclass(frozen=True, slots=True)
class Expiry:
    settled: int = 0
    dropped: int = 0


def expire(ledger: NodeLedger, now: float, grace_s: float) -> Expiry:
    """End in-flight holdings older than the grace: a bound pod keeps its load but stops being in flight; a
    reservation the API server never confirmed (its bind is stuck) gives its GPUs back."""
    settled = dropped = 0
    for holding in list(ledger.holdings()):
        if holding.settled or holding.gone is not None or now - holding.since < grace_s:
            continue
        if holding.bound:
            ledger.hold(replace(holding, settled=True))
            settled += 1
        else:
            ledger.drop(holding.pod)
            dropped += 1
    return Expiry(settled, dropped)


def release(ledger: NodeLedger, now: float, hold_s: float) -> int:
    """Give back the GPUs of pods gone from the API server for ``hold_s`` or more; answers how many.

    Why a pod is held at all: the kubelet's device manager frees a pod's devices only when it next allocates
    and has seen every pod source since it started (``UpdateAllocatedDevices`` waits for ``sourcesReady``),
    so for a while after a kubelet restart it still counts a force-deleted pod's devices, restored from its
    checkpoint. Sold again at once, they would fail the next pod's admission (``UnexpectedAdmissionError``).
    """
    gone = [h.pod for h in ledger.holdings() if h.gone is not None and now - h.gone >= hold_s]
    for pod in gone:
        ledger.drop(pod)
    return len(gone)


def gone_in(ledgers: Iterable[NodeLedger], namespace: str) -> int:
    """How many pods of ``namespace`` are held gone on ``ledgers``."""
    return sum(
        1
        for ledger in ledgers
        if ledger.gone
        for h in ledger.holdings()
        if h.gone is not None and h.namespace == namespace
    )
