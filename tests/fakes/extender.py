"""Fakes and builders for the extender's tests: Kubernetes JSON for nodes and pods, and ``FakeCluster``, an
in-memory implementation of ``extender.kube.Cluster`` that plays the API server and (optionally) the watch.

``FakeCluster`` is a fake, not kmock (no socket, no process: safe in the unit tier): a binding sets
``spec.nodeName``, merges the Binding's annotations into the stored pod dict and bumps its ``resourceVersion``
(as the API server does), and with ``state`` given every change is fed to the state as the watch would deliver
it. Real behaviours it reproduces, the unkind ones included:

- as the API server's ``BindingREST``: a Binding whose ``metadata.uid`` or ``metadata.resourceVersion``
  differs from the stored pod's is a 409 conflict, and so is a Binding for a pod that is already bound;
- a binding refused outright (``fail_bind``), or applied with its answer lost (``lose_bind_answer``: the
  client sees an error although the pod is bound, as after a timeout);
- concurrent binds really run together (``bind_gate``), and every call yields to the event loop once;
- ``FakeNamespaces``: a Namespace that does not exist is a 404, not empty labels; ``down`` is an unreachable
  API server; ``gate`` a slow one.

Not reproduced (kmock in ``tests/fakes/kmock.py`` has them): HTTP, watches that end or answer 410 Gone, 409 on
other writes; the state is fed synchronously, in order, with nothing dropped.
"""

import asyncio
import itertools
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extender.app import Deps
from extender.clusterstate import ClusterState
from extender.core.ledger import Holding, NodeLedger, PodKey
from extender.kube import Binding, ClusterError
from extender.metrics import ExtenderMetrics
from extender.scheduling import Scheduler
from extender.signing import Ed25519Signer, Keyring
from tests.builders.vcuda import nvswitch_node
from vcuda.annotations import decode_assignment, encode_inventory
from vcuda.model import NodeInventory, PodAssignment, Policy
from vcuda.names import Names
from vcuda.signing import pod_binding

SIGNER = Ed25519Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
"""A fixed test key (never a deployed one)."""
KEY = Keyring([SIGNER.public])
"""The verifier for :data:`SIGNER` (the name kept from the HMAC days: what states and decoders take)."""
NAMES = Names()
_uids = itertools.count(1)
_versions = itertools.count(100)


def assignment_of(pod: Mapping[str, Any]) -> PodAssignment:
    """The verified assignment on ``pod`` (raises when it is missing or does not verify for this pod)."""
    return decode_assignment(pod["metadata"]["annotations"][NAMES.assignment], pod_binding(pod, NAMES), KEY)


def node_obj(name: str, inventory: NodeInventory | None = None) -> dict[str, Any]:
    annotations = {NAMES.inventory: encode_inventory(inventory)} if inventory is not None else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": annotations}}


def gpu_node(name: str, gpus: int = 8, memory_mib: int = 81920) -> dict[str, Any]:
    return node_obj(name, nvswitch_node(gpus, node=name, memory_mib=memory_mib))


def pod_obj(
    name: str,
    *containers: tuple[int, int],
    namespace: str = "default",
    uid: str | None = None,
    annotations: Mapping[str, str] | None = None,
    node: str | None = None,
    phase: str = "Pending",
    version: str = "1",
) -> dict[str, Any]:
    """A pod with one container per (vcuda-core, vcuda-memory MiB) pair, named c0, c1, ..."""
    specs = []
    for i, (cores, mib) in enumerate(containers):
        limits = {NAMES.core: str(cores)}
        if mib:
            limits[NAMES.memory] = str(mib)
        specs.append({"name": f"c{i}", "image": "cuda", "resources": {"limits": limits}})
    spec: dict[str, Any] = {"containers": specs or [{"name": "c0", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    meta = {"name": name, "namespace": namespace, "uid": uid or f"uid-{next(_uids)}", "resourceVersion": version,
            "annotations": dict(annotations or {})}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


class FakeClock:
    """A settable clock (seconds) for grace and expiry tests."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeNamespaces:
    """In-memory :class:`extender.kube.Namespaces`: the labels of each Namespace as the API server holds them.

    As the API server does: a namespace that does not exist is an error (404), not an empty label set, and
    ``down`` makes every read fail as an unreachable API server would. ``reads`` counts the reads (the webhook
    must read the Namespace for every pod it translates, never trust a cache or the pod)."""

    def __init__(self, labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.labels = {k: dict(v) for k, v in (labels or {}).items()}
        self.down = False
        self.reads: list[str] = []
        self.gate: asyncio.Event | None = None
        """When set, every read waits on it (a slow API server), counting ``in_flight`` / ``most_in_flight``."""
        self.in_flight = self.most_in_flight = 0

    async def namespace_labels(self, name: str) -> Mapping[str, str]:
        await asyncio.sleep(0)
        self.reads.append(name)
        if self.gate is not None:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await self.gate.wait()
            finally:
                self.in_flight -= 1
        if self.down:
            raise ClusterError("reading the namespace: connection refused (fake)")
        if name not in self.labels:
            raise ClusterError("reading the namespace: HTTP 404 Not Found (fake)")
        return dict(self.labels[name])


class FakeCluster:
    """In-memory ``Cluster``: stores pods, records every binding, feeds ``state`` like a watch.

    ``fail_bind``: pod names whose binding raises ``ClusterError`` and changes nothing; ``lose_bind_answer``: pod
    names whose binding is applied but whose answer is lost (the call raises after binding). ``bind_gate``: when set,
    every bind waits on it, and it opens once ``release_at`` binds wait together (proof that they run in
    parallel: serialised binds would never get there). Every call yields to the event loop once, as real I/O
    would."""

    def __init__(self, state: ClusterState | None = None) -> None:
        self.state = state
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.bindings: list[tuple[str, str, str, str]] = []
        self.fail_bind: set[str] = set()
        self.lose_bind_answer: set[str] = set()
        self.bind_gate: asyncio.Event | None = None
        self.release_at = 0
        self.binds_waiting = 0

    def add(self, *pods: dict[str, Any]) -> None:
        for pod in pods:
            self.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = pod
            self._feed(pod)

    def _feed(self, pod: dict[str, Any]) -> None:
        if self.state is not None:
            self.state.apply_pod(pod)

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.pods[(namespace, name)]
        except KeyError:
            raise ClusterError(f"pod {namespace}/{name} not found (fake)") from None

    async def bind_pod(self, binding: Binding) -> None:
        namespace, name, uid, node = binding.namespace, binding.name, binding.uid, binding.node
        await asyncio.sleep(0)
        if self.bind_gate is not None:
            self.binds_waiting += 1
            if self.binds_waiting >= self.release_at:
                self.bind_gate.set()
            await self.bind_gate.wait()
        if name in self.fail_bind:
            raise ClusterError("binding refused (fake)")
        pod = await self.read_pod(namespace, name)
        meta = pod["metadata"]
        if uid and uid != meta.get("uid"):
            raise ClusterError("HTTP 409 Conflict: Precondition failed: UID in precondition (fake)")
        if binding.resource_version and binding.resource_version != meta.get("resourceVersion"):
            raise ClusterError("HTTP 409 Conflict: Precondition failed: ResourceVersion (fake)")
        if pod["spec"].get("nodeName"):
            raise ClusterError(f"HTTP 409 Conflict: pod {name} is already assigned to a node (fake)")
        self.bindings.append((namespace, name, uid, node))
        pod["spec"]["nodeName"] = node
        meta.setdefault("annotations", {}).update(binding.annotations)
        meta["resourceVersion"] = str(next(_versions))
        self._feed(pod)
        if name in self.lose_bind_answer:
            raise ClusterError("timed out waiting for the answer (fake: the binding was applied)")


def ledger_of(state: ClusterState, name: str) -> NodeLedger:
    found = state.ledger(name)
    assert found is not None, f"no ledger for {name}"
    return found


def holding_of(state: ClusterState, pod: str) -> Holding:
    found = state.holding(PodKey(pod))
    assert found is not None, f"no holding for {pod}"
    return found


def make_deps(
    nodes: Iterable[dict[str, Any]] = (),
    *,
    clock: FakeClock | None = None,
    grace_s: float = 60.0,
    gone_hold_s: float = 0.0,
    node_policy: Policy = Policy.BINPACK,
    gpu_policy: Policy = Policy.SPREAD,
    node_cache_capable: bool = True,
    scheduler_name: str | None = None,
    scheduler_names: tuple[str, ...] = ("default-scheduler", "kube-vgpu-scheduler"),
    namespaces: FakeNamespaces | None = None,
) -> tuple[Deps, FakeCluster]:
    metrics = ExtenderMetrics()
    state = ClusterState(
        NAMES, KEY, grace_s=grace_s, clock=clock or time.monotonic, events=metrics, gone_hold_s=gone_hold_s
    )
    metrics.watch(state)
    state.replace_nodes(list(nodes))
    state.synced.set()
    cluster = FakeCluster(state)
    scheduler = Scheduler(
        state,
        cluster,
        signer=SIGNER,
        gpu_policy=gpu_policy,
        node_policy=node_policy,
        scheduler_names=scheduler_names,
        recorder=metrics,
    )
    deps = Deps(
        scheduler,
        state,
        metrics,
        node_cache_capable=node_cache_capable,
        webhook_scheduler_name=scheduler_name,
        namespaces=namespaces,
    )
    return deps, cluster
