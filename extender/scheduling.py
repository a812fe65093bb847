"""Filter, prioritize and bind over the cluster state: the extender's use cases, free of HTTP.

Filter judges each candidate node (the summary's fast answer, else ``place_pod``) and remembers the scores per
pod UID and resourceVersion, so prioritize answers from memory. Bind reads the pod from the API server (never
a filter-time copy), refuses pods that are not its to bind, decides and reserves in one step under the
state's lock (microseconds, never across I/O), then creates the Binding carrying the signed assignment, with
the pod's UID and resourceVersion as preconditions; any failure gives the reservation back. There is no
node-wide lock: the only pods that wait are those the plugin could not tell apart from one already in flight
(``extender.core.inflight``).
"""

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from extender.clusterstate import ClusterState, pod_key
from extender.core.inflight import Conflict, find_conflict
from extender.core.ledger import NodeLedger, PodKey
from extender.core.load import release
from extender.core.placement import Placement, Rejection, RejectReason, place_pod
from extender.core.summary import QuickQuery, quick_query
from extender.kube import Binding, Cluster, ClusterError
from vcuda.annotations import encode_assignment
from vcuda.errors import InvalidRequestError, shown
from vcuda.model import ContainerAssignment, GpuShare, GpuUuid, NodeName, PodAssignment, PodRequest, Policy
from vcuda.request import parse_pod_request
from vcuda.signing import Signer, pod_binding

__all__ = [
    "DEFAULT_SCHEDULER_NAMES",
    "JUDGE_BUDGET_S",
    "TIME_BUDGET",
    "Bound",
    "FilterOutcome",
    "Recorder",
    "Scheduler",
    "api_status",
]

log = logging.getLogger(__name__)
Obj = Mapping[str, Any]
NO_INVENTORY: Final = "node publishes no kube-vgpu GPU inventory (is the device plugin running there?)"
_MEMO_SIZE: Final = 64
"""Filter outcomes kept for prioritize: it follows its filter at once, and each outcome may hold thousands of
nodes, so a few dozen pods' worth is plenty."""
DEFAULT_SCHEDULER_NAMES: Final = ("kube-vgpu-scheduler",)
"""The chart's second scheduler; the default-scheduler mode passes ``default-scheduler``."""
JUDGE_BUDGET_S: Final = 0.5
"""How long one filter, prioritize or preempt may spend placing a pod node by node (under the state's lock, on
the event loop). A tenant's pod with hundreds of GPU containers costs milliseconds per node, so without a
budget one such pod holds the loop for a minute at 5,000 nodes; ordinary pods finish far inside it. Nodes
left over fail with reason ``time-budget`` (resolvable: kube-scheduler tries again)."""
TIME_BUDGET: Final = RejectReason.TIME_BUDGET
STATUS_MESSAGE_CHARS: Final = 400
"""How much of the API server's Status (reason and message) a refused Binding's error carries: enough for the
RBAC or admission-policy sentence that says why, short enough for kube-scheduler's FailedScheduling event."""


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


_UNKNOWN_NODE: Final = Rejection(RejectReason.NO_INVENTORY, NO_INVENTORY, resolvable=False)


def _cut(text: str, limit: int = 160) -> str:
    """A message of a node's making, cut: every filter answer carries it once per node."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_inventory(ledger: NodeLedger | None) -> Rejection:
    """A node without an inventory, or whose inventory was refused (the reason is the user's to read)."""
    if ledger is None or not ledger.refused:
        return _UNKNOWN_NODE
    return Rejection(
        RejectReason.INVENTORY_REFUSED,
        f"node's GPU inventory is refused ({_cut(ledger.refused)}): no vcuda shares until its plugin "
        "publishes a valid one",
        resolvable=False,
    )


_Verdict = int | Rejection | Conflict


class Scheduler:
    def __init__(
        self,
        state: ClusterState,
        cluster: Cluster,
        *,
        signer: Signer,
        gpu_policy: Policy,
        node_policy: Policy,
        scheduler_names: Collection[str] = DEFAULT_SCHEDULER_NAMES,
        recorder: Recorder | None = None,
        judge_budget_s: float = JUDGE_BUDGET_S,
    ) -> None:
        self.state, self.cluster, self._signer = state, cluster, signer
        self.judge_budget_s = judge_budget_s
        self.gpu_policy, self.node_policy = gpu_policy, node_policy
        self.scheduler_names = frozenset(scheduler_names)
        self.recorder: Recorder = recorder or _Silent()
        self._memo: OrderedDict[tuple[str, str], FilterOutcome] = OrderedDict()

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
        deadline = time.perf_counter() + self.judge_budget_s
        with self.state.lock:
            if query is None:
                for name in node_names:
                    self._sort(outcome, name, self._judge_in_time(name, request, None, deadline))
                return
            quick, judge = self.state.quick.get, query.judge
            known: dict[int, int | Rejection] = {}
            seen = known.get
            passing, scores = outcome.passing, outcome.scores
            for name in node_names:
                summary = quick(name)
                if summary is None:
                    self._sort(outcome, name, self._judge_in_time(name, request, query, deadline))
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

    def _judge_in_time(
        self, name: str, request: PodRequest, query: QuickQuery | None, deadline: float
    ) -> _Verdict:
        """:meth:`_judge`, or the ``time-budget`` refusal once the request's budget is spent."""
        if time.perf_counter() > deadline:
            return self._out_of_time
        return self._judge(self.state.ledger(name), request, query)

    @property
    def _out_of_time(self) -> Rejection:
        return Rejection(
            TIME_BUDGET,
            f"not judged: the extender's time budget for one pod ({self.judge_budget_s:g} s) ran out "
            "before this node (a pod with very many GPU containers); kube-scheduler retries",
            resolvable=True,
        )

    def _request(self, pod: Obj) -> PodRequest:
        return parse_pod_request(pod, self.state.names)

    def _judge(self, ledger: NodeLedger | None, request: PodRequest, query: QuickQuery | None) -> _Verdict:
        if not request.containers:
            return 0
        if ledger is None or ledger.inventory is None:
            return _no_inventory(ledger)
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
        deadline = time.perf_counter() + self.judge_budget_s
        with self.state.lock:
            for node, uids in victims.items():
                ledger = self.state.ledger(node)
                if ledger is None or ledger.inventory is None or time.perf_counter() > deadline:
                    continue
                load = ledger.load
                for uid in uids:
                    holding = ledger.get(PodKey(uid))
                    load = release(load, holding.charged) if holding else load
                placed = place_pod(
                    ledger.inventory, load, request, gpu_policy=self.gpu_policy, node_policy=self.node_policy
                )
                if isinstance(placed, Placement):
                    kept[node] = list(uids)
        self.recorder.decided("preempt", "kept", len(kept))
        return kept

    # --- bind ----------------------------------------------------------------------------------

    async def bind(self, namespace: str, name: str, uid: str, node: str) -> Bound:
        """Bind the pod as the API server holds it now: read it, check it is the pod the scheduler means
        (UID), one this extender serves (a GPU request, our scheduler name, not bound or being deleted), place
        its *current* request on ``node`` and reserve, then create the Binding with the pod's UID and
        resourceVersion as preconditions, so a pod changed or replaced since the read is not bound. Nothing
        is taken from filter time or from the request's own claims."""
        try:
            pod = await self.cluster.read_pod(namespace, name)
        except ClusterError as err:
            return self._bound(Bound(f"pod {namespace}/{name}: {err}", "pod-unreadable"))
        checked = self._bindable(pod, namespace, name, uid)
        if isinstance(checked, Bound):
            return self._bound(checked)
        key, request = checked
        decision = self._decide(key, NodeName(node), request)
        if isinstance(decision, Bound):
            return self._bound(decision)
        return self._bound(await self._commit(key, pod, PodAssignment(NodeName(node), decision)))

    def _bindable(self, pod: Obj, namespace: str, name: str, uid: str) -> tuple[PodKey, PodRequest] | Bound:
        """The pod's key and validated GPU request, or the refusal that says why it is not ours to bind."""
        who = f"pod {namespace}/{name}"
        meta = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
        spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
        assert isinstance(meta, Mapping)
        assert isinstance(spec, Mapping)
        held_uid = meta.get("uid")
        if uid and held_uid != uid:
            return Bound(
                f"{who} has UID {shown(held_uid)}, not {shown(uid)}: it was replaced", "uid-mismatch"
            )
        scheduler = spec.get("schedulerName") or "default-scheduler"
        if scheduler not in self.scheduler_names:
            serves = ", ".join(sorted(self.scheduler_names))
            return Bound(
                f"{who} names scheduler {shown(scheduler)}; kube-vgpu serves {serves}", "foreign-scheduler"
            )
        if spec.get("nodeName"):
            return Bound(f"{who} is already bound to {shown(spec.get('nodeName'))}", "already-bound")
        if meta.get("deletionTimestamp"):
            return Bound(f"{who} is being deleted", "being-deleted")
        try:
            request = parse_pod_request(pod, self.state.names)
        except InvalidRequestError as err:
            return Bound(f"{who}: {err}", err.reason)
        if not request.containers:
            names = self.state.names
            return Bound(
                f"{who} requests no {names.core} or {names.memory}: kube-vgpu binds GPU pods only", "not-gpu"
            )
        return pod_key(pod), request

    def _decide(
        self, key: PodKey, node: NodeName, request: PodRequest
    ) -> tuple[ContainerAssignment, ...] | Bound:
        """Place and reserve in one step (the filter's own judgement on the node's current load); a Bound
        carries the refusal. A node outside the inventory, or one the placement rejects, is refused."""
        with self.state.lock:
            held = self.state.holding(key)
            if held is not None:
                return Bound(f"pod {key} is already being bound", "duplicate")
            ledger = self.state.ledger(node)
            if ledger is None or ledger.inventory is None:
                refusal = _no_inventory(ledger)
                return Bound(f"node {shown(node)}: {refusal.detail}", str(refusal.reason))
            placed = self._place(ledger, request)
            if isinstance(placed, Rejection):
                return Bound(f"node {node}: {placed.detail}", str(placed.reason))
            conflict = find_conflict(ledger.in_flight, placed.containers) if ledger.in_flight else None
            if conflict is not None:
                return Bound(f"node {node}: {conflict.detail}", "in-flight-conflict")
            self.state.reserve(key, node, placed.containers, placed.reserved)
            return placed.containers

    async def _commit(self, key: PodKey, pod: Obj, assignment: PodAssignment) -> Bound:
        """One write: the Binding carries the assignment annotation, which the API server puts on the pod
        together with ``spec.nodeName``; the pod's UID and resourceVersion are its preconditions."""
        meta = pod["metadata"]
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
        binding = Binding(
            namespace,
            name,
            assignment.node,
            {self.state.names.assignment: self._sign(assignment, pod)},
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
        )
        try:
            await self.cluster.bind_pod(binding)
        except ClusterError as err:
            if await self._bound_anyway(binding):
                # The server applied the Binding but its answer was lost (timeout, retried bind answered
                # 409): the pod runs there with our assignment, so the reservation must stay.
                self.state.mark_bound(key)
                return Bound()
            self.state.rollback(key)
            why = f"{err} ({detail})" if (detail := api_status(err)) else str(err)
            return Bound(f"binding {namespace}/{name} to {assignment.node} failed: {why}", "api-error")
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

    def _sign(self, assignment: PodAssignment, pod: Obj) -> str:
        return encode_assignment(assignment, pod_binding(pod, self.state.names), self._signer)

    async def _bound_anyway(self, binding: Binding) -> bool:
        try:
            pod = await self.cluster.read_pod(binding.namespace, binding.name)
        except ClusterError:
            return False
        spec, meta = pod.get("spec"), pod.get("metadata")
        if not (
            isinstance(spec, Mapping) and spec.get("nodeName") == binding.node and isinstance(meta, Mapping)
        ):
            return False
        held = meta.get("annotations") or {}
        return isinstance(held, Mapping) and all(held.get(k) == v for k, v in binding.annotations.items())

    def _bound(self, bound: Bound) -> Bound:
        self.recorder.decided("bind", "bound" if not bound.error else "refused")
        if bound.error:
            self.recorder.rejected("bind", {bound.reason: 1})
        return bound


def api_status(err: BaseException, limit: int = STATUS_MESSAGE_CHARS) -> str:
    """``reason: message`` of the ``Status`` body the API server answered a refused call with, on one line and
    at most ``limit`` characters; "" when the error carries no such body (a timeout, a proxy's HTML page).
    The client's exception (``body``, bytes or text) is the ``ClusterError``'s cause."""
    body = getattr(err.__cause__, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        doc = json.loads(body) if isinstance(body, str) and body else None
    except ValueError:
        return ""
    if not isinstance(doc, dict) or doc.get("kind") != "Status":
        return ""
    parts = [v for v in (doc.get("reason"), doc.get("message")) if isinstance(v, str) and v.strip()]
    text = " ".join(": ".join(parts).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
