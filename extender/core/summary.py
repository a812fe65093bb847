"""A node's load in a few numbers, and the fast answer they give for the commonest pod. Pure.

The filter sees thousands of candidate nodes per pod; calling ``place_pod`` on each costs tens of
microseconds. For a pod with one fractional container and no GPU selection (the usual inference pod) the
answer follows from each healthy GPU's free cores and MiB, and the node score from the node's totals, so
:func:`quick_fit` gives exactly what ``place_pod`` would (a property test holds it to that) and returns
``None`` for everything else. The score and the rejection are not copies: both paths call
:func:`extender.core.score.node_score` and :func:`extender.core.rejection.free_share_rejection`. Imports only
``vcuda`` and the extender's core.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from extender.core.load import GpuLoad, free_space
from extender.core.rejection import Rejection, free_share_rejection
from extender.core.score import node_score
from extender.core.totals import Tally
from vcuda.model import GpuUuid, NodeInventory, PodRequest, Policy
from vcuda.units import CORE_PER_GPU

__all__ = [
    "EMPTY_SUMMARY",
    "NodeSummary",
    "QuickFit",
    "QuickQuery",
    "SummaryIndex",
    "quick_fit",
    "quick_query",
    "summarise",
]

_IDLE: Final = GpuLoad()


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """What one node has left. ``free`` lists (free cores, free MiB) of each healthy GPU and ``front`` the
    ones no other GPU beats on both (usually one: an idle GPU); the totals cover every GPU of the inventory,
    as ``place_pod``'s node score does."""

    gpu_count: int
    free: tuple[tuple[int, int], ...]
    front: tuple[tuple[int, int], ...]
    largest_mib: int
    max_free_cores: int
    max_free_mib: int
    used_cores: int
    used_mib: int
    total_mib: int
    core_capacity: int
    """``100 x gpu_count``: the score's denominators, precomputed."""
    memory_capacity: int
    """``total_mib``, or 1 for a node without memory."""


EMPTY_SUMMARY: Final = NodeSummary(0, (), (), 0, 0, 0, 0, 0, 0, 0, 1)


@dataclass(frozen=True, slots=True)
class QuickFit:
    """The pod fits; ``score`` is the 0..10 node score ``place_pod`` would give."""

    score: int


def summarise(inventory: NodeInventory, load: Mapping[GpuUuid, GpuLoad]) -> NodeSummary:
    healthy = [g for g in inventory.gpus if g.healthy]
    free = free_space(healthy, load)
    return NodeSummary(
        gpu_count=len(inventory.gpus),
        free=free,
        front=_front(free),
        largest_mib=max((g.memory_mib for g in healthy), default=0),
        max_free_cores=max((c for c, _ in free), default=0),
        max_free_mib=max((m for _, m in free), default=0),
        used_cores=sum(load.get(g.uuid, _IDLE).cores for g in inventory.gpus),
        used_mib=sum(load.get(g.uuid, _IDLE).memory_mib for g in inventory.gpus),
        total_mib=(total := sum(g.memory_mib for g in inventory.gpus)),
        core_capacity=CORE_PER_GPU * len(inventory.gpus),
        memory_capacity=total or 1,
    )


def _front(free: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """The Pareto front of (free cores, free MiB): a share fits some GPU iff it fits one of these."""
    front: list[tuple[int, int]] = []
    for cores, mib in sorted(free, key=lambda f: (-f[0], -f[1])):
        if not front or mib > front[-1][1]:
            front.append((cores, mib))
    return tuple(front)


class SummaryIndex:
    """The nodes the summary answers for, by name, with equal summaries shared as one object.

    ``quick`` maps each node with healthy GPUs and nothing in flight to its summary: the filter's hot loop
    reads it with one lookup per candidate and judges each distinct summary object once per pod (idle nodes
    of one shape, usually most of a cluster, share one). Summaries are shared by value and counted, so one
    that no ledger holds any more is forgotten. Not thread-safe: the state's lock guards it, as it guards the
    ledgers that update it. ``tally`` sums every held summary (and the ledgers' pod counts) for ``/metrics``,
    readable without the lock (:mod:`extender.core.totals`).
    """

    __slots__ = ("_shared", "_users", "quick", "tally")

    def __init__(self) -> None:
        self.quick: dict[str, NodeSummary] = {}
        self._shared: dict[NodeSummary, NodeSummary] = {}
        self._users: dict[NodeSummary, int] = {}
        self.tally = Tally()

    def share(self, summary: NodeSummary) -> NodeSummary:
        """The one object equal to ``summary``, counted until :meth:`give_back`."""
        shared = self._shared.setdefault(summary, summary)
        self._users[shared] = self._users.get(shared, 0) + 1
        self.tally.add(shared, 1)
        return shared

    def give_back(self, summary: NodeSummary) -> None:
        self.tally.add(summary, -1)
        users = self._users.get(summary, 0) - 1
        if users > 0:
            self._users[summary] = users
        else:
            self._users.pop(summary, None)
            self._shared.pop(summary, None)

    def set(self, name: str, summary: NodeSummary | None) -> None:
        """``summary`` answers for node ``name`` (None: the node needs the slow path, or is gone)."""
        if summary is None:
            self.quick.pop(name, None)
        else:
            self.quick[name] = summary

    def shared_count(self) -> int:
        """How many distinct summaries are held."""
        return len(self._shared)


@dataclass(frozen=True, slots=True)
class QuickQuery:
    """One pod's question, asked of many nodes: does a (cores, MiB) share fit, and with which score."""

    cores: int
    mib: int
    binpack: bool

    def judge(self, summary: NodeSummary) -> int | Rejection:
        """The node score 0..10 when the share fits, else ``place_pod``'s rejection. Needs a summary with
        healthy GPUs (``summary.free`` not empty). Hot: called once per candidate node."""
        cores, mib = self.cores, self.mib
        if summary.max_free_cores >= cores and summary.max_free_mib >= mib:
            for free_cores, free_mib in summary.front:
                if free_cores >= cores and free_mib >= mib:
                    return node_score(
                        used_cores=summary.used_cores + cores,
                        core_capacity=summary.core_capacity,
                        used_mib=summary.used_mib + mib,
                        memory_capacity=summary.memory_capacity,
                        binpack=self.binpack,
                    )
        return free_share_rejection(summary.free, summary.largest_mib, cores, mib)


def quick_query(request: PodRequest, node_policy: Policy) -> QuickQuery | None:
    """The question for a pod the summary can answer exactly (one fractional container, no GPU selection)."""
    c = request.constraints
    if (
        len(request.containers) != 1
        or c.include_models
        or c.exclude_models
        or c.include_uuids
        or c.exclude_uuids
    ):
        return None
    container = request.containers[0]
    if container.exclusive:
        return None
    policy = c.node_policy or node_policy
    return QuickQuery(container.cores, container.memory_mib, policy is Policy.BINPACK)


def quick_fit(summary: NodeSummary, request: PodRequest, node_policy: Policy) -> QuickFit | Rejection | None:
    """``place_pod``'s verdict and score from the summary alone, or None when the pod needs ``place_pod``."""
    query = quick_query(request, node_policy)
    if query is None or not summary.free:
        return None
    verdict = query.judge(summary)
    return QuickFit(verdict) if isinstance(verdict, int) else verdict
