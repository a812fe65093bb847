"""Filter, prioritize and bind over the cluster state: the extender's use cases, free of HTTP.

Filter judges each candidate node (the summary's fast answer, else ``place_pod``) and remembers the scores per
pod UID and resourceVersion, so prioritize answers from memory. Bind decides and reserves in one step under
the state's lock (microseconds, never across I/O), then writes the signed assignment to the pod and creates
the Binding; any failure gives the reservation back. There is no node-wide lock: the only pods that wait are
those the plugin could not tell apart from one already in flight (``extender.core.inflight``).
"""

import logging
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from extender.core.inflight import Conflict, find_conflict
from extender.core.ledger import NodeLedger, PodKey
from extender.core.load import release
from extender.core.placement import Placement, Rejection, place_pod
from extender.core.summary import QuickQuery, quick_query
from extender.kube import Cluster, ClusterError
from extender.state import ClusterState, pod_key
from vcuda.annotations import encode_assignment
from vcuda.errors import InvalidRequestError
from vcuda.model import ContainerAssignment, GpuShare, GpuUuid, NodeName, PodAssignment, PodRequest, Policy
from vcuda.request import parse_pod_request

__all__ = ["Bound", "FilterOutcome", "Recorder", "Scheduler"]

log = logging.getLogger(__name__)
Obj = Mapping[str, Any]
NO_INVENTORY: Final = "node publishes no kube-vgpu GPU inventory (is the device plugin running there?)"
_MEMO_SIZE: Final = 64
"""Filter outcomes kept for prioritize: it follows its filter at once, and each outcome may hold thousands of
nodes, so a few dozen pods' worth is plenty."""
_REQUESTS_SIZE: Final = 4096
"""Parsed requests kept for bind (small values): pods filtered but not yet bound."""


class Recorder(Protocol):
    """Where decisions and rejections are counted (``extender.metrics``)."""

    def decided(self, verb: str, outcome: str, count: int = 1) -> None: ...

    def rejected(self, verb: str, reasons: Mapping[str, int]) -> None: ...


class _Silent:
    def decided(self, verb: str, outcome: str, count: int = 1) -> None:
        pass

    def rejected(self, verb: str, reasons: Mapping[str, int]) -> None:
        pass


@dataclass(slots=True)
class FilterOutcome:
    passing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Bound:
    """The bind's answer: ``error`` empty on success; ``reason`` a stable code for metrics."""

    error: str = ""
    reason: str = "bound"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A node refused for a reason outside placement (shaped like ``Rejection``)."""

    reason: str
    detail: str
    resolvable: bool


_UNKNOWN_NODE: Final = Refusal("no-inventory", NO_INVENTORY, resolvable=False)
_Verdict = int | Rejection | Refusal | Conflict


class Scheduler:
    def __init__(
        self,
        state: ClusterState,
        cluster: Cluster,
        *,
        key: bytes,
        gpu_policy: Policy,
        node_policy: Policy,
        recorder: Recorder | None = None,
    ) -> None:
        self.state, self.cluster, self._key = state, cluster, key
        self.gpu_policy, self.node_policy = gpu_policy, node_policy
        self.recorder: Recorder = recorder or _Silent()
        self._memo: OrderedDict[tuple[str, str], FilterOutcome] = OrderedDict()
        self._requests: OrderedDict[PodKey, PodRequest] = OrderedDict()

    # --- filter and prioritize -----------------------------------------------------------------

    def filter(self, pod: Obj, node_names: Sequence[str]) -> FilterOutcome:
        outcome = FilterOutcome()
        try:
            request = self._request(pod)
        except InvalidRequestError as err:
            outcome.unresolvable = dict.fromkeys(node_names, str(err))
            outcome.reasons[err.reason] = len(node_names)
            self._record("filter", outcome)
            return outcome
        self._judge_all(outcome, node_names, request)
        self._remember(pod, outcome)
        self._record("filter", outcome)
        return outcome

    def _judge_all(self, outcome: FilterOutcome, node_names: Sequence[str], request: PodRequest) -> None:
        """The hot loop (thousands of nodes per call). Nodes the summary answers for (``state.quick``) get
        its verdict, computed once per distinct summary object (equal summaries are one object, and idle
        nodes of one shape share one); everything else goes through :meth:`_judge`."""
        query = quick_query(request, self.node_policy) if request.containers else None
        with self.state.lock:
            if query is None:
                for name in node_names:
                    self._sort(outcome, name, self._judge(self.state.ledger(name), request, None))
                return
            quick, judge = self.state.quick.get, query.judge
            known: dict[int, int | Rejection] = {}
            seen = known.get
            passing, scores = outcome.passing, outcome.scores
            for name in node_names:
                summary = quick(name)
                if summary is None:
                    self._sort(outcome, name, self._judge(self.state.ledger(name), request, query))
                    continue
                verdict = seen(id(summary))
                if verdict is None:
                    verdict = known[id(summary)] = judge(summary)
                if type(verdict) is int:
                    passing.append(name)
                    scores[name] = verdict
                else:
                    self._sort(outcome, name, verdict)

    def prioritize(self, pod: Obj, node_names: Sequence[str]) -> dict[str, int]:
        """Scores 0..10: the filter's, from memory for the same pod version; computed afresh otherwise."""
        memo = self._memo.get(_memo_key(pod))
        self.recorder.decided("prioritize", "remembered" if memo is not None else "computed")
        if memo is None:
            try:
                request = self._request(pod)
            except InvalidRequestError:
                return dict.fromkeys(node_names, 0)
            memo = FilterOutcome()
            self._judge_all(memo, node_names, request)
            self._remember(pod, memo)
        return {name: memo.scores.get(name, 0) for name in node_names}

    def _request(self, pod: Obj) -> PodRequest:
        request = parse_pod_request(pod, self.state.names)
        _put(self._requests, pod_key(pod), request, _REQUESTS_SIZE)
        return request

    def _judge(self, ledger: NodeLedger | None, request: PodRequest, query: QuickQuery | None) -> _Verdict:
        if not request.containers:
            return 0
        if ledger is None or ledger.inventory is None:
            return _UNKNOWN_NODE
        if query is not None and ledger.summary.free:
            verdict = query.judge(ledger.summary)
            if isinstance(verdict, Rejection) or not ledger.in_flight:
                return verdict
            conflict = find_conflict(ledger.in_flight, [_share_of(request)])
            return verdict if conflict is None else conflict
        placed = self._place(ledger, request)
        if isinstance(placed, Rejection):
            return placed
        conflict = find_conflict(ledger.in_flight, placed.containers) if ledger.in_flight else None
        return placed.score if conflict is None else conflict

    def _place(self, ledger: NodeLedger, request: PodRequest) -> Placement | Rejection:
        assert ledger.inventory is not None
        return place_pod(
            ledger.inventory, ledger.load, request, gpu_policy=self.gpu_policy, node_policy=self.node_policy
        )

    @staticmethod
    def _sort(outcome: FilterOutcome, name: str, verdict: _Verdict) -> None:
        if isinstance(verdict, int):
            outcome.passing.append(name)
            outcome.scores[name] = verdict
        elif isinstance(verdict, Conflict):
            outcome.failed[name] = verdict.detail
            outcome.reasons["in-flight-conflict"] += 1
        elif verdict.resolvable:
            outcome.failed[name] = verdict.detail
            outcome.reasons[str(verdict.reason)] += 1
        else:
            outcome.unresolvable[name] = verdict.detail
            outcome.reasons[str(verdict.reason)] += 1

    def _remember(self, pod: Obj, outcome: FilterOutcome) -> None:
        _put(self._memo, _memo_key(pod), outcome, _MEMO_SIZE)

    def _record(self, verb: str, outcome: FilterOutcome) -> None:
        self.recorder.decided(verb, "fit", len(outcome.passing))
        self.recorder.decided(verb, "unfit", len(outcome.failed) + len(outcome.unresolvable))
        self.recorder.rejected(verb, outcome.reasons)

    # --- preempt -------------------------------------------------------------------------------

    def preempt(self, pod: Obj, victims: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """The nodes where evicting the scheduler's victims really frees room for the pod (same victims)."""
        try:
            request = self._request(pod)
        except InvalidRequestError:
            return {}
        kept: dict[str, list[str]] = {}
        with self.state.lock:
            for node, uids in victims.items():
                ledger = self.state.ledger(node)
                if ledger is None or ledger.inventory is None:
                    continue
                load = ledger.load
                for uid in uids:
                    holding = ledger.get(PodKey(uid))
                    load = release(load, holding.containers) if holding else load
                placed = place_pod(
                    ledger.inventory, load, request, gpu_policy=self.gpu_policy, node_policy=self.node_policy
                )
                if isinstance(placed, Placement):
                    kept[node] = list(uids)
        self.recorder.decided("preempt", "kept", len(kept))
        return kept

    # --- bind ----------------------------------------------------------------------------------

    async def bind(self, namespace: str, name: str, uid: str, node: str) -> Bound:
        key = PodKey(uid) if uid else PodKey(f"{namespace}/{name}")
        try:
            request = self._requests.get(key) or await self._read_request(namespace, name)
        except (ClusterError, InvalidRequestError) as err:
            return self._bound(Bound(f"pod {namespace}/{name}: {err}", "pod-unreadable"))
        decision = self._decide(key, NodeName(node), request)
        if isinstance(decision, Bound):
            return self._bound(decision)
        return self._bound(
            await self._commit(key, namespace, name, uid, PodAssignment(NodeName(node), decision))
        )

    async def _read_request(self, namespace: str, name: str) -> PodRequest:
        return parse_pod_request(await self.cluster.read_pod(namespace, name), self.state.names)

    def _decide(
        self, key: PodKey, node: NodeName, request: PodRequest
    ) -> tuple[ContainerAssignment, ...] | Bound:
        """Place and reserve in one step; a Bound carries the refusal."""
        with self.state.lock:
            held = self.state.holding(key)
            if held is not None:
                return Bound(f"pod {key} is already being bound", "duplicate")
            if not request.containers:
                return ()
            ledger = self.state.ledger(node)
            if ledger is None or ledger.inventory is None:
                return Bound(f"node {node}: {NO_INVENTORY}", "no-inventory")
            placed = self._place(ledger, request)
            if isinstance(placed, Rejection):
                return Bound(f"node {node}: {placed.detail}", str(placed.reason))
            conflict = find_conflict(ledger.in_flight, placed.containers) if ledger.in_flight else None
            if conflict is not None:
                return Bound(f"node {node}: {conflict.detail}", "in-flight-conflict")
            self.state.reserve(key, node, placed.containers)
            return placed.containers

    async def _commit(
        self, key: PodKey, namespace: str, name: str, uid: str, assignment: PodAssignment
    ) -> Bound:
        """One write: the Binding carries the assignment annotation, which the API server puts on the pod
        together with ``spec.nodeName``."""
        annotations = (
            {self.state.names.assignment: encode_assignment(assignment, self._key)}
            if assignment.containers
            else {}
        )
        try:
            await self.cluster.bind_pod(namespace, name, uid, assignment.node, annotations)
        except ClusterError as err:
            if await self._bound_anyway(namespace, name, assignment.node, annotations):
                # The server applied the Binding but its answer was lost (timeout, retried bind answered
                # 409): the pod runs there with our assignment, so the reservation must stay.
                self.state.mark_bound(key)
                return Bound()
            self.state.rollback(key)
            return Bound(f"binding {namespace}/{name} to {assignment.node} failed: {err}", "api-error")
        self.state.mark_bound(key)
        log.info(
            "bound",
            extra={
                "pod": f"{namespace}/{name}",
                "node": assignment.node,
                "gpus": [s.uuid for c in assignment.containers for s in c.shares],
            },
        )
        return Bound()

    async def _bound_anyway(
        self, namespace: str, name: str, node: str, annotations: Mapping[str, str]
    ) -> bool:
        try:
            pod = await self.cluster.read_pod(namespace, name)
        except ClusterError:
            return False
        spec, meta = pod.get("spec"), pod.get("metadata")
        if not (isinstance(spec, Mapping) and spec.get("nodeName") == node and isinstance(meta, Mapping)):
            return False
        held = meta.get("annotations") or {}
        return isinstance(held, Mapping) and all(held.get(k) == v for k, v in annotations.items())

    def _bound(self, bound: Bound) -> Bound:
        self.recorder.decided("bind", "bound" if not bound.error else "refused")
        if bound.error:
            self.recorder.rejected("bind", {bound.reason: 1})
        return bound


def _share_of(request: PodRequest) -> ContainerAssignment:
    """The single fractional container's assignment up to the GPU (what the in-flight rule compares)."""
    c = request.containers[0]
    limit = max(c.cores, request.core_limit or 0)
    return ContainerAssignment(c.name, (GpuShare(GpuUuid(""), c.cores, c.memory_mib),), core_limit=limit)


def _memo_key(pod: Obj) -> tuple[str, str]:
    meta = pod.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return pod_key(pod), str(version or "")


def _put(cache: "OrderedDict[Any, Any]", key: Any, value: Any, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > size:
        cache.popitem(last=False)
