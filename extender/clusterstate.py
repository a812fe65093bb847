"""The extender's picture of the cluster: one ledger per GPU node, fed by the watches and by binds.

Translates Kubernetes JSON (nodes with the plugin's inventory annotation, pods with the extender's signed
assignment and the plugin's status) into ledger holdings. Everything is rebuilt from the API server on
start; nothing is stored locally. Thread-safe: the watches call in from their threads and the HTTP handlers
from the event loop; every method holds one short lock, never across I/O. Assignments that fail verification
(bad signature, copied from another pod, a request changed since signing) are a user forging them
(HAMi#3041): the annotation is ignored and never claims a GPU for the pod it is on.

Nothing a tenant does to its own annotations frees a GPU its running pod holds: a bound pod whose assignment
vanished or stopped verifying keeps the holding this process last verified (by UID), and when there is none
(after a restart) it is charged *unplaced* on its node from its request (see :mod:`extender.core.ledger`).
The plugin's status record may move a container to another GPU of the same node (a swap of interchangeable
containers, :func:`vcuda.annotations.apply_moves`); the plugin never re-signs. A moved container is charged on
both its signed and its recorded GPUs: where no admission policy guards the status, a tenant could write it.

A bound pod that leaves the API server before its kubelet reported it ended (no ``Succeeded``/``Failed``
phase: force-deleted, or gone while the watch was down) keeps its GPUs for ``gone_hold_s`` more: the kubelet
may still count its devices (:func:`extender.core.ledger.release`). A pod whose kubelet ended it gives them
back at once; so does one its kubelet never admitted (no ``status.startTime``, no container statuses: the
kubelet cannot count devices of a pod it never saw), and one beyond ``gone_hold_max`` held pods of its
namespace (a create, bind, force-delete loop holds no more than that).
"""

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from extender.core.initreuse import net_charges, plain
from extender.core.ledger import Expiry, Holding, NodeLedger, PodKey, expire, gone_in, release
from extender.core.load import Charge
from extender.core.summary import NodeSummary, SummaryIndex
from extender.core.totals import ClusterTotals
from vcuda.annotations import (
    AssignmentRefusedError,
    PodStatus,
    apply_moves,
    decode_assignment,
    decode_inventory,
    decode_status,
)
from vcuda.errors import ContractError
from vcuda.model import ContainerAssignment, GpuShare, NodeInventory, NodeName, Phase, PodAssignment
from vcuda.names import Names
from vcuda.request import parse_pod_request, wants_gpu
from vcuda.signing import PodBinding, Verifier, pod_binding
from vcuda.units import CORE_PER_GPU

__all__ = ["ClusterState", "StateEvents", "pod_key"]

log = logging.getLogger(__name__)
Obj = Mapping[str, Any]
_TERMINAL: Final = frozenset({"Succeeded", "Failed"})
_SETTLED: Final = frozenset({Phase.ALLOCATED, Phase.FAILED})
_NO_STATUS: Final = PodStatus(Phase.ASSUMED)


class StateEvents(Protocol):
    """What the state reports for metrics."""

    def forged_assignment(self, reason: str) -> None: ...

    def expired(self, expiry: Expiry) -> None: ...


class _Quiet:
    def forged_assignment(self, reason: str) -> None:
        pass

    def expired(self, expiry: Expiry) -> None:
        pass


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _annotations(obj: Obj) -> Obj:
    found = _meta(obj).get("annotations")
    return found if isinstance(found, Mapping) else {}


def _with_moves(
    assignment: PodAssignment, moved: tuple[tuple[str, tuple[GpuShare, ...]], ...]
) -> tuple[ContainerAssignment, ...]:
    """The signed containers plus, for each moved one, the same share on the GPUs it was moved to."""
    signed = assignment.containers
    after = apply_moves(assignment, moved).containers
    return signed + tuple(a for a, b in zip(after, signed, strict=True) if a != b)


def pod_key(pod: Obj) -> PodKey:
    """The pod's UID, or ``namespace/name`` where an API server (a fake one) sets none."""
    meta = _meta(pod)
    uid = meta.get("uid")
    if isinstance(uid, str) and uid:
        return PodKey(uid)
    return PodKey(f"{meta.get('namespace') or 'default'}/{meta.get('name')}")


@dataclass(frozen=True, slots=True)
class _NodeSource:
    text: str | None


class ClusterState:
    """Every node's ledger. ``lock`` is public so the scheduler can decide and reserve in one step."""

    def __init__(
        self,
        names: Names,
        verifier: Verifier,
        *,
        grace_s: float,
        clock: Callable[[], float],
        events: StateEvents | None = None,
        gone_hold_s: float = 0.0,
        gone_hold_max: int = 4,
    ) -> None:
        self.names, self._verifier, self.grace_s, self.clock = names, verifier, grace_s, clock
        self.gone_hold_s = gone_hold_s
        """How long a bound pod gone before its kubelet ended it stays charged; 0 gives it back at once."""
        self.gone_hold_max = gone_hold_max
        """How many gone pods of one namespace are held at most; more are given back at once."""
        self.events: StateEvents = events or _Quiet()
        self.lock = threading.RLock()
        self._nodes: dict[str, NodeLedger] = {}
        self._index = SummaryIndex()
        self._sources: dict[NodeName, _NodeSource] = {}
        self._where: dict[PodKey, NodeName] = {}
        self._forged: dict[PodKey, str] = {}
        self._good: dict[PodKey, tuple[str, PodBinding, PodAssignment]] = {}
        """The last verified assignment per pod, with the text and binding it was verified for: a watch
        event that changes neither is not verified again (Ed25519 costs ~0.1-0.3 ms, under the lock)."""
        self.synced = threading.Event()

    # --- reads ---------------------------------------------------------------------------------

    @property
    def nodes(self) -> Mapping[str, NodeLedger]:
        """Every node's ledger by name (read under ``lock``)."""
        return self._nodes

    @property
    def quick(self) -> Mapping[str, NodeSummary]:
        """The summary of every node the summary alone answers for (healthy GPUs, nothing in flight), by name;
        equal summaries are one object (read under ``lock``)."""
        return self._index.quick

    @property
    def totals(self) -> ClusterTotals:
        """Sums over every node for ``/metrics``; read without ``lock`` (a snapshot the writers replace)."""
        return self._index.tally.totals

    def ledger(self, name: str) -> NodeLedger | None:
        return self._nodes.get(NodeName(name))

    def ledgers(self) -> Iterator[NodeLedger]:
        return iter(list(self._nodes.values()))

    def holding(self, pod: PodKey) -> Holding | None:
        node = self._where.get(pod)
        return None if node is None else self._nodes[node].get(pod)

    def in_flight_count(self) -> int:
        with self.lock:
            return sum(1 for n in self._nodes.values() for h in n.holdings() if h.in_flight)

    # --- nodes ---------------------------------------------------------------------------------

    def apply_node(self, node: Obj) -> None:
        name = NodeName(str(_meta(node).get("name", "")))
        text = _annotations(node).get(self.names.inventory)
        text = text if isinstance(text, str) else None
        with self.lock:
            if name in self._sources and self._sources[name].text == text:
                return
            self._sources[name] = _NodeSource(text)
            ledger = self._ledger_for(name)
            try:
                inventory = None if text is None else decode_inventory(text)
            except ContractError as err:
                # A buggy or foreign plugin (a GPU listed both as shares and in another mode, a broken
                # document): nothing of it is trusted, so the node takes no shares until it publishes a valid
                # one. Pods already holding shares there stay charged.
                log.warning(
                    "refusing a node's GPU inventory: no vcuda shares are placed on the node until its "
                    "plugin publishes a valid one",
                    extra={"node": name, "error": str(err)},
                )
                ledger.set_inventory(None, refused=str(err))
                return
            if inventory is not None:
                self._warn_mode_switch(ledger, inventory)
            ledger.set_inventory(inventory)

    @staticmethod
    def _warn_mode_switch(ledger: NodeLedger, inventory: NodeInventory) -> None:
        """A GPU that pods hold shares on and that the node now sells in another mode: the plugin should have
        refused or drained the switch (one GPU, one mode). The shares stay charged; no new ones go there."""
        for gpu in inventory.other:
            if ledger.load.get(gpu.uuid) is not None:
                log.warning(
                    "a GPU holding vcuda shares is now sold in another mode: the shares stay charged, no new "
                    "ones are placed on it",
                    extra={
                        "node": ledger.name,
                        "gpu": gpu.uuid,
                        "mode": gpu.mode.value,
                        "resource": gpu.resource,
                    },
                )

    def remove_node(self, name: str) -> None:
        with self.lock:
            ledger = self._nodes.pop(NodeName(name), None)
            self._sources.pop(NodeName(name), None)
            if ledger is not None:
                ledger.detach()
            for holding in ledger.holdings() if ledger else ():
                self._where.pop(holding.pod, None)

    def replace_nodes(self, nodes: Iterable[Obj]) -> None:
        """A fresh list: apply each node and forget the ones that are gone."""
        with self.lock:
            seen = set()
            for node in nodes:
                self.apply_node(node)
                seen.add(str(_meta(node).get("name", "")))
            for gone in [n for n in self._nodes if n not in seen]:
                self.remove_node(gone)

    def _ledger_for(self, name: NodeName) -> NodeLedger:
        ledger = self._nodes.get(name)
        if ledger is None:
            ledger = self._nodes[name] = NodeLedger(name, index=self._index)
        return ledger

    # --- pods ----------------------------------------------------------------------------------

    def apply_pod(self, pod: Obj) -> None:
        key = pod_key(pod)
        spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
        status = pod.get("status") if isinstance(pod.get("status"), Mapping) else {}
        assert isinstance(spec, Mapping)
        assert isinstance(status, Mapping)
        with self.lock:
            if status.get("phase") in _TERMINAL:
                self._drop(key)
                return
            node = spec.get("nodeName")
            assignment = self._verified(key, pod)
            if not isinstance(node, str) or not node:
                return  # only a reservation of our own (if any) stands for an unbound pod
            if assignment is not None and assignment.node != node:
                self._forgery(key, "assignment names another node than the pod's", str(assignment.node))
                assignment = None
            if assignment is None:
                self._keep_or_charge(key, NodeName(node), pod)
                return
            current = self.holding(key)
            settled = self._settled(pod, status) or (current is not None and current.settled)
            since = current.since if current is not None else self.clock()
            containers = _with_moves(assignment, self._status(pod).moved)
            moved = containers[len(assignment.containers) :]
            reused = self._reused(pod, assignment.containers)
            held = Holding(key, containers, since, bound=True, settled=settled, **self._seen(pod, current))
            self._put(NodeName(node), replace(held, reserved=None if reused is None else reused + moved))

    def _reused(
        self, pod: Obj, containers: tuple[ContainerAssignment, ...]
    ) -> tuple[ContainerAssignment, ...] | None:
        """What a pod with init containers holds (their slices are reused), None for a plain pod."""
        spec = pod.get("spec")
        if not isinstance(spec, Mapping) or not spec.get("initContainers"):
            return None
        try:
            request = parse_pod_request(pod, self.names)
        except ContractError:
            return None
        return None if plain(request.containers) else net_charges(request.containers, containers)

    def _keep_or_charge(self, key: PodKey, node: NodeName, pod: Obj) -> None:
        """A bound pod without a valid assignment: keep what it last held here, or charge it unplaced."""
        current = self.holding(key)
        if current is not None and self._where.get(key) == node:
            kept = replace(current, bound=True, **self._seen(pod, current))
            if kept != current:
                self._put(node, kept)
            return
        charges = self._charges(key, pod)
        if charges:
            log.warning(
                "a bound GPU pod has no valid assignment: charging its request on every GPU of its node",
                extra={"pod": key, "node": node},
            )
            seen = self._seen(pod, None)
            self._put(
                node, Holding(key, (), self.clock(), bound=True, settled=True, unplaced=charges, **seen)
            )

    @staticmethod
    def _seen(pod: Obj, current: Holding | None) -> dict[str, Any]:
        """The pod's namespace and whether its kubelet admitted it (once admitted, always: a later copy
        that lacks the status does not unsee it). Only the kubelet writes the status: the API server clears
        it on create, and tenants rarely hold ``pods/status``."""
        status = pod.get("status")
        admitted = isinstance(status, Mapping) and bool(
            status.get("startTime") or status.get("containerStatuses")
        )
        namespace = str(_meta(pod).get("namespace") or "default")
        return {"admitted": admitted or (current is not None and current.admitted), "namespace": namespace}

    def _charges(self, key: PodKey, pod: Obj) -> tuple[Charge, ...]:
        if not wants_gpu(pod, self.names):
            return ()
        try:
            request = parse_pod_request(pod, self.names)
        except ContractError as err:
            # The tenant may break its own annotations on a running pod; the containers' resources are
            # immutable and were valid at creation. Charge them alone, or, unreadable, the whole node.
            log.warning("a bound pod's GPU request is invalid", extra={"pod": key, "error": str(err)})
            try:
                request = parse_pod_request(_without_annotations(pod), self.names)
            except ContractError:
                return ((CORE_PER_GPU, 0),)
        return tuple((c.cores_per_gpu, c.memory_mib) for c in request.containers for _ in range(c.gpu_count))

    def remove_pod(self, pod: Obj) -> None:
        """The pod is deleted (``pod``: the watch's last copy): its GPUs go back, at once if its kubelet
        ended it."""
        key = pod_key(pod)
        status = pod.get("status")
        ended = isinstance(status, Mapping) and status.get("phase") in _TERMINAL
        with self.lock:
            current = self.holding(key)
            if current is not None and current.bound:  # the last copy may be the first the kubelet wrote
                seen = replace(current, **self._seen(pod, current))
                if seen != current:
                    self._put(self._where[key], seen)
            if ended or not self._hold_gone(key):
                self._drop(key)
            self._forged.pop(key, None)
            self._good.pop(key, None)

    def _hold_gone(self, key: PodKey) -> bool:
        """Keep a bound pod's holding, gone, until :meth:`expire` releases it; False if none is kept."""
        holding = self.holding(key)
        if self.gone_hold_s <= 0 or holding is None or not holding.bound:
            return False
        if holding.gone is None and not holding.admitted:
            return False  # its kubelet never admitted it, so counts none of its devices
        if holding.gone is None and gone_in(self._nodes.values(), holding.namespace) >= self.gone_hold_max:
            log.warning(
                "a bound GPU pod left the API server before its kubelet ended it, but its namespace already "
                "has %d such pods held: its GPUs are given back at once",
                self.gone_hold_max,
                extra={"pod": key, "node": self._where[key], "namespace": holding.namespace},
            )
            return False
        if holding.gone is None:
            log.info(
                "a bound GPU pod left the API server before its kubelet ended it: its GPUs stay charged for "
                "%g s, while the kubelet may still count its devices",
                self.gone_hold_s,
                extra={"pod": key, "node": self._where[key]},
            )
            self._put(self._where[key], replace(holding, settled=True, gone=self.clock()))
        return True

    def replace_pods(self, pods: Iterable[Obj]) -> None:
        """A fresh list: apply each pod and drop bound holdings of pods that are gone (reservations of binds
        still in progress stay)."""
        with self.lock:
            seen = set()
            for pod in pods:
                self.apply_pod(pod)
                seen.add(pod_key(pod))
            for key in [k for k in self._where if k not in seen]:
                if not self._hold_gone(key):
                    holding = self.holding(key)
                    if holding is not None and holding.bound:
                        self._drop(key)
            self._good = {k: v for k, v in self._good.items() if k in seen}

    def _verified(self, key: PodKey, pod: Obj) -> PodAssignment | None:
        text = _annotations(pod).get(self.names.assignment)
        if text is None:
            return None
        if not isinstance(text, str):
            self._forgery(key, "assignment annotation is not a string", repr(text))
            return None
        binding = pod_binding(pod, self.names)
        known = self._good.get(key)
        if known is not None and known[0] == text and known[1] == binding:
            return known[2]
        try:
            assignment = decode_assignment(text, binding, self._verifier)
        except AssignmentRefusedError as err:
            self._forgery(key, str(err), text, err.reason)
            return None
        except ContractError as err:
            self._forgery(key, str(err), text, "malformed")
            return None
        self._good[key] = (text, binding, assignment)
        return assignment

    def _forgery(self, key: PodKey, why: str, text: str, reason: str = "other-node") -> None:
        if self._forged.get(key) == text:
            return
        self._forged[key] = text
        log.warning(
            "ignoring an assignment annotation kube-vgpu did not write for this pod",
            extra={"pod": key, "why": why, "reason": reason},
        )
        self.events.forged_assignment(why)

    def _status(self, pod: Obj) -> PodStatus:
        text = _annotations(pod).get(self.names.status)
        try:
            return decode_status(text) if isinstance(text, str) else _NO_STATUS
        except ContractError:
            return _NO_STATUS

    def _settled(self, pod: Obj, status: Obj) -> bool:
        return status.get("phase") == "Running" or self._status(pod).phase in _SETTLED

    # --- reservations (called by the scheduler under ``lock``) ------------------------------------

    def reserve(
        self,
        pod: PodKey,
        node: NodeName,
        containers: tuple[ContainerAssignment, ...],
        reserved: tuple[ContainerAssignment, ...] = (),
    ) -> None:
        """``reserved``: what the pod holds when init containers' slices are reused (placement's)."""
        held = reserved if reserved and reserved != containers else None
        with self.lock:
            self._put(node, Holding(pod, containers, self.clock(), reserved=held))

    def mark_bound(self, pod: PodKey) -> None:
        with self.lock:
            holding = self.holding(pod)
            if holding is not None and not holding.bound:
                self._put(self._where[pod], replace(holding, bound=True, since=self.clock()))

    def rollback(self, pod: PodKey) -> None:
        with self.lock:
            holding = self.holding(pod)
            if holding is not None and not holding.bound:
                self._drop(pod)

    def expire(self) -> Expiry:
        """End in-flight holdings older than the grace (see :func:`extender.core.ledger.expire`) and release
        gone pods' holdings older than ``gone_hold_s`` (:func:`extender.core.ledger.release`)."""
        now, total = self.clock(), Expiry()
        with self.lock:
            for ledger in self._nodes.values():
                if ledger.in_flight:
                    done = expire(ledger, now, self.grace_s)
                    total = Expiry(total.settled + done.settled, total.dropped + done.dropped)
                if ledger.gone:
                    release(ledger, now, self.gone_hold_s)
            for key in [k for k, n in self._where.items() if self._nodes[n].get(k) is None]:
                del self._where[key]
        if total.settled or total.dropped:
            self.events.expired(total)
        return total

    def _put(self, node: NodeName, holding: Holding) -> None:
        old = self._where.get(holding.pod)
        if old is not None and old != node:
            self._drop(holding.pod)
        self._ledger_for(node).hold(holding)
        self._where[holding.pod] = node

    def _drop(self, pod: PodKey) -> None:
        self._good.pop(pod, None)
        node = self._where.pop(pod, None)
        if node is not None and node in self._nodes:
            self._nodes[node].drop(pod)


def _without_annotations(pod: Obj) -> Obj:
    meta = pod.get("metadata")
    return {**pod, "metadata": {**(meta if isinstance(meta, Mapping) else {}), "annotations": {}}}
