"""Leader election between extender replicas behind one Service (default-scheduler mode).

A ``coordination.k8s.io/v1`` Lease, taken and renewed as client-go's ``leaderelection`` package does it (the
same record, timings and rules, so ``kubectl get lease`` reads the same):

- a standby reads the Lease every ``retry_s``; it takes it when there is none (create), when its holder is
  empty (released) or when the record has not changed for the holder's ``leaseDurationSeconds`` *as observed
  locally* (no clock is compared across machines). Every write is a replace carrying the read's
  ``resourceVersion``: of two replicas racing for an expired Lease, the API server accepts one and answers
  the other 409 Conflict, which loses;
- the leader renews every ``retry_s``; when it has not renewed for ``renew_s`` (shorter than the lease) it
  stops serving at once (:meth:`Elector.leading` is a deadline, not a flag a stuck thread could leave set),
  so two replicas never answer at the same time unless a clock runs more than ``lease_s - renew_s`` slow;
- on a clean stop the leader releases the Lease (empty holder), so a rolling update does not wait a lease.

A replica that wins is not yet serving: :class:`Leadership` first lists the cluster again (pods, then nodes:
the ledger and the bound-but-unconfirmed pods the old leader placed) and only then answers. Losing the
Lease stops the answers before the next request; the replica stays a standby and may lead again later.
"""

import datetime
import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from extender.clusterstate import ClusterState

__all__ = [
    "Elector",
    "KubeLeases",
    "LeaseConflictError",
    "LeaseTimings",
    "Leadership",
    "default_identity",
    "default_namespace",
    "relist",
]

log = logging.getLogger(__name__)
Lease = dict[str, Any]
_SA_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeaseConflictError(Exception):
    """The Lease changed since it was read (409), or another replica created it first."""


class Leases(Protocol):
    """The Lease's three calls; the real adapter is :class:`KubeLeases`."""

    name: str

    def get(self) -> Lease | None: ...

    def create(self, body: Lease) -> Lease: ...

    def replace(self, body: Lease) -> Lease: ...


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """kube's ``leaderelection`` defaults (kube-scheduler's ``--leader-elect-*`` flags)."""

    lease_s: float = 15.0
    renew_s: float = 10.0
    retry_s: float = 2.0


def default_identity() -> str:
    """The pod's name (its host name) and a random suffix, as client-go's callers make it."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def default_namespace(path: Path = _SA_NAMESPACE) -> str:
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def _micro_time(at: datetime.datetime) -> str:
    """Kubernetes ``MicroTime``: RFC 3339 with microseconds."""
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeases:
    """One Lease through the official client: get, create and replace (never patch: the replace carries the
    read's ``resourceVersion``, so the API server refuses a write over a change this replica has not seen)."""

    def __init__(self, api_client: Any, namespace: str, name: str, *, timeout_s: float = 5.0) -> None:
        from kubernetes import client

        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self._timeout_s = namespace, name, timeout_s

    def _call(self, fn: Callable[..., Any], *args: Any) -> Lease:
        from kubernetes.client.exceptions import ApiException

        try:
            response = fn(*args, _preload_content=False, _request_timeout=self._timeout_s)
        except ApiException as err:
            if err.status == 409:
                raise LeaseConflictError(f"lease {self.namespace}/{self.name}: {err.reason}") from err
            raise
        doc = json.loads(response.data)
        assert isinstance(doc, dict)
        return doc

    def get(self) -> Lease | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(self._api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create(self, body: Lease) -> Lease:
        return self._call(self._api.create_namespaced_lease, self.namespace, body)

    def replace(self, body: Lease) -> Lease:
        return self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body)


def _spec(lease: Lease) -> dict[str, Any]:
    spec = lease.get("spec")
    return spec if isinstance(spec, dict) else {}


def _version(lease: Lease) -> str:
    meta = lease.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


class Elector:
    """client-go's ``tryAcquireOrRenew`` and its two loops, over :class:`Leases`. ``clock`` is monotonic
    (expiry is judged by local observation), ``wall`` only stamps the record for people reading it."""

    def __init__(
        self,
        leases: Leases,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.leases, self.identity, self.timings = leases, identity, timings
        self._clock, self._wall = clock, wall
        self._observed: tuple[str, float] = ("", -math.inf)  # (resourceVersion, when first seen)
        self._renewed_at = -math.inf
        self.term = 0
        """Incremented on every acquisition: a rebuild done for an older term does not serve a newer one."""

    def leading(self) -> bool:
        """Whether this replica holds the Lease now: renewed within ``renew_s``."""
        return self._clock() < self._renewed_at + self.timings.renew_s

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards. Raises on API errors."""
        now, was_leading = self._clock(), self.leading()
        current = self.leases.get()
        if current is None:
            return self._won(self.leases.create(self._body(None, 0, None)), now, was_leading)
        spec, version = _spec(current), _version(current)
        if version != self._observed[0]:
            self._observed = (version, now)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.timings.lease_s)
        if holder and holder != self.identity and now < self._observed[1] + duration:
            self._renewed_at = -math.inf  # another replica holds it: stop answering now, not at the deadline
            return False
        ours = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours or not holder else 1)
        acquired = spec.get("acquireTime") if ours else None
        body = self._body(current, transitions, acquired)
        return self._won(self.leases.replace(body), now, was_leading and ours)

    def _won(self, lease: Lease, now: float, renewed: bool) -> bool:
        self._observed = (_version(lease), now)
        self._renewed_at = now
        if not renewed:
            self.term += 1
        return True

    def _body(self, current: Lease | None, transitions: int, acquired: str | None) -> Lease:
        stamp = _micro_time(self._wall())
        meta: dict[str, Any] = {"name": self.leases.name}
        if current is not None:
            meta = {**(current.get("metadata") or {}), **meta}
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, math.ceil(self.timings.lease_s)),
                "acquireTime": acquired or stamp,
                "renewTime": stamp,
                "leaseTransitions": transitions,
            },
        }

    def release(self) -> None:
        """Give the Lease up now (a clean stop): an empty holder, which a standby takes at its next try."""
        if not self.leading():
            return
        self._renewed_at = -math.inf
        current = self.leases.get()
        if current is None or _spec(current).get("holderIdentity") != self.identity:
            return
        body = self._body(current, int(_spec(current).get("leaseTransitions") or 0), None)
        body["spec"].update(holderIdentity="", leaseDurationSeconds=1)
        self.leases.replace(body)

    def step(self) -> bool:
        """:meth:`try_acquire_or_renew`, with a conflict or an API error counted as a failed attempt."""
        try:
            return self.try_acquire_or_renew()
        except LeaseConflictError:
            return False
        except Exception as err:  # any API failure is a failed attempt, retried
            log.warning("leader election: lease request failed", extra={"error": str(err)})
            return False

    def run(self, stop: threading.Event, on_change: Callable[[bool], None]) -> None:
        """Acquire, renew, and on losing go back to acquiring, every ``retry_s`` (with client-go's 1.2 jitter
        while waiting), until ``stop``; ``on_change(True)`` after each acquisition, ``(False)`` on a loss."""
        held = False
        while not stop.is_set():
            ok = self.step()
            if ok and not held:
                log.info("leader election: acquired the lease", extra={"identity": self.identity})
                held = True
                on_change(True)
            elif held and not self.leading():
                held = False
                on_change(False)
            wait = self.timings.retry_s * (1.0 if held else 1.0 + 0.2 * random.random())
            stop.wait(wait)
        try:
            self.release()
        except Exception as err:  # the Lease expires by itself
            log.warning("leader election: could not release the lease", extra={"error": str(err)})


def relist(api_client: Any, state: ClusterState) -> None:
    """A fresh list of pods, then nodes (the Watcher's order: a node is known only with its pods' load),
    replacing what the state holds: the ledger and the bound pods not yet confirmed by their plugin."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)
    pods = json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)
    state.replace_pods(pods.get("items") or [])
    nodes = json.loads(core.list_node(_preload_content=False).data)
    state.replace_nodes(nodes.get("items") or [])


class Leadership:
    """Whether this replica answers the scheduling verbs: it holds the Lease and has rebuilt its state for
    the current term. Runs the elector in a thread; a rebuild runs in another, so renewals never wait on a
    list of a large cluster."""

    def __init__(self, elector: Elector, rebuild: Callable[[], None]) -> None:
        self.elector, self._rebuild = elector, rebuild
        self._ready_term = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def serving(self) -> bool:
        return self._ready_term == self.elector.term and self.elector.leading()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        self.elector.run(self._stop, self._changed)

    def _changed(self, held: bool) -> None:
        if not held:
            log.warning(
                "leader election: lost the lease; standing by", extra={"identity": self.elector.identity}
            )
            return
        term = self.elector.term
        threading.Thread(target=self._rebuild_for, args=(term,), name="leader-rebuild", daemon=True).start()

    def _rebuild_for(self, term: int) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and self.elector.term == term:
            try:
                self._rebuild()
            except Exception as err:  # not serving until a list succeeds
                log.warning("leader: rebuilding the state failed, retrying", extra={"error": str(err)})
                self._stop.wait(self.elector.timings.retry_s)
                continue
            self._ready_term = term
            log.info(
                "leader: state rebuilt from the API server, serving",
                extra={"identity": self.elector.identity, "seconds": round(time.monotonic() - started, 3)},
            )
            return
