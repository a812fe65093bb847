"""The Kubernetes API as the extender needs it: a narrow :class:`Cluster` Protocol, its adapter over the
official client, and the list-and-watch loops that feed :class:`~extender.clusterstate.ClusterState` (one list
per kind at start; afterwards watches resumed from the last resourceVersion, a new list only after 410 Gone).

Raw JSON throughout (``_preload_content=False``): the client's model classes are slow and fail on the
binding subresource's ``Status`` answer (kubernetes-client/python#547). Library errors leave as
:class:`ClusterError`. Tests use a fake implementing the same Protocol, or kmock as the API server.
"""

import asyncio
import collections
import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, TypedDict

from extender.clusterstate import ClusterState

__all__ = [
    "Backoff",
    "Binding",
    "BindingBody",
    "Cluster",
    "ClusterError",
    "KubeCluster",
    "Namespaces",
    "WatchTimings",
    "Watcher",
]

log = logging.getLogger(__name__)


class ClusterError(Exception):
    """A call to the API server failed; the message says which and why."""


class Cluster(Protocol):
    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def bind_pod(self, binding: "Binding") -> None:
        """POST ``pods/<name>/binding`` (:class:`Binding`)."""
        ...


class Namespaces(Protocol):
    async def namespace_labels(self, name: str) -> Mapping[str, str]:
        """The Namespace's labels as the API server holds them (GET, never cached: a label removed stops
        translation at the next pod). Raises :class:`ClusterError` when it cannot be read."""
        ...


class _Meta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    annotations: dict[str, str]


class _Target(TypedDict):
    apiVersion: str
    kind: str
    name: str


class BindingBody(TypedDict):
    apiVersion: str
    kind: str
    metadata: _Meta
    target: _Target


@dataclass(frozen=True, slots=True)
class Binding:
    """A pod's Binding: the API server sets ``spec.nodeName`` to ``node`` and copies ``annotations`` onto the
    pod in the same write, so a pod is never bound without its assignment (or the reverse). ``uid`` and
    ``resource_version`` (when not empty) travel as the Binding's ``metadata.uid`` /
    ``metadata.resourceVersion``: preconditions refusing a replaced or changed pod."""

    namespace: str
    name: str
    node: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""

    def body(self) -> BindingBody:
        meta: _Meta = {"name": self.name, "namespace": self.namespace}
        if self.uid:
            meta["uid"] = self.uid
        if self.resource_version:
            meta["resourceVersion"] = self.resource_version
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        return {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }


def _library_errors() -> tuple[type[BaseException], ...]:
    from kubernetes.client.exceptions import OpenApiException
    from urllib3.exceptions import HTTPError

    return OpenApiException, HTTPError, OSError, ValueError


class KubeCluster:
    """:class:`Cluster` over ``kubernetes.client.CoreV1Api``; each call runs in a worker thread."""

    def __init__(self, api_client: Any, *, timeout_s: float = 10.0) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._timeout = timeout_s
        self._errors = _library_errors()

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self._timeout, **kwargs)
        except self._errors as err:
            raise ClusterError(f"{what}: {_describe(err)}") from err

    async def _send(self, what: str, fn: Callable[..., Any], *args: Any) -> bytes:
        """Call ``fn`` raw and read the whole answer in the worker thread, so that the connection goes back to
        the client's pool: a raw answer left unread keeps its connection, and every later call would open
        (and, in a cluster, TLS-handshake) a new one."""
        data: bytes = await self._call(what, _read_all, fn, *args)
        return data

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        data = await self._send("reading the pod", self._core.read_namespaced_pod, name, namespace)
        pod: dict[str, Any] = json.loads(data)
        return pod

    async def namespace_labels(self, name: str) -> Mapping[str, str]:
        data = await self._send("reading the namespace", self._core.read_namespace, name)
        try:
            labels = json.loads(data).get("metadata", {}).get("labels") or {}
        except (ValueError, AttributeError) as err:
            raise ClusterError(f"reading the namespace: unreadable answer ({err})") from err
        if not isinstance(labels, dict):
            raise ClusterError("reading the namespace: its labels are not a map")
        return {str(k): str(v) for k, v in labels.items()}

    async def bind_pod(self, binding: Binding) -> None:
        await self._send(
            "creating the Binding",
            self._core.create_namespaced_pod_binding,
            binding.name,
            binding.namespace,
            binding.body(),
        )


def _read_all(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """``fn(*args, _preload_content=False)``'s whole body; its connection is back in the pool afterwards."""
    response = fn(*args, _preload_content=False, **kwargs)
    try:
        return bytes(response.data)
    finally:
        response.release_conn()


def _describe(err: BaseException) -> str:
    status, reason = getattr(err, "status", None), getattr(err, "reason", None)
    return f"HTTP {status} {reason}" if status else str(err) or type(err).__name__


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between failed attempts: ``initial_s`` doubling up to ``max_s``, each stretched by a random
    share up to ``jitter`` (client-go's reflector: 0.8 s to 30 s, jitter 1.0), so that replicas and nodes
    that lost the API server together do not come back in step."""

    initial_s: float = 0.8
    max_s: float = 30.0
    jitter: float = 1.0

    def delay(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        """The wait after ``failures`` failures in a row (1 for the first)."""
        base = min(self.max_s, self.initial_s * 2.0 ** max(0, min(failures - 1, 32)))
        return base * (1.0 + self.jitter * draw())


@dataclass(frozen=True, slots=True)
class WatchTimings:
    timeout_s: tuple[float, float] = (300.0, 600.0)
    """Each watch asks the server to end it after a random time in this range (client-go's 5-10 min), so
    that the watches of many clients do not end together; it is then resumed, never re-listed."""
    backoff: Backoff = field(default_factory=Backoff)
    short_s: float = 1.0
    """A watch that ends sooner than this counts as a failure (backs off): a server that closes every watch
    at once must not be asked again in a tight loop."""


class _GoneError(Exception):
    """The server no longer has the history the watch asked for (410): list again."""


class _StoppedError(Exception):
    """The watcher was stopped while waiting."""


class Watcher:
    """List pods, then nodes, once, then watch each from the last resourceVersion seen (bookmarks keep it
    fresh while nothing changes). Pods come first so that an extender answering before its lists are done
    (a replica taking over) never knows a node without the GPUs its pods hold: a node unknown is refused,
    never over-committed. A watch that ends, times out or breaks is resumed from that version; only
    410 Gone (the version is older than the server keeps) costs a new list. Failures back off with jitter.
    ``lists`` and ``watches`` count the requests made."""

    def __init__(
        self,
        api_client: Any,
        state: ClusterState,
        *,
        retry_s: float | None = None,
        timings: WatchTimings | None = None,
    ) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._state = state
        timings = timings or WatchTimings()
        if retry_s is not None:
            timings = replace(timings, backoff=replace(timings.backoff, initial_s=retry_s, max_s=retry_s * 8))
        self._timings = timings
        self._stop = threading.Event()
        self._pods_listed = threading.Event()
        self._responses: dict[str, Any] = {}
        self._synced: set[str] = set()
        self._errors = _library_errors()
        self.lists: collections.Counter[str] = collections.Counter()
        self.watches: collections.Counter[str] = collections.Counter()
        self.versions: dict[str, str] = {}
        """The last resourceVersion seen per kind; "" until listed and after a 410."""

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True)
            for kind in ("nodes", "pods")
        ]
        for thread in threads:
            thread.start()
        return threads

    def stop(self) -> None:
        """Stop both loops now: shut the watch sockets down under the reading threads (closing a response
        from another thread blocks on its reader's lock)."""
        self._stop.set()
        for response in list(self._responses.values()):
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _run(self, kind: str) -> None:
        failures = gone = 0
        while not self._stop.is_set():
            try:
                if self._step(kind):
                    failures = gone = 0
                else:
                    failures += 1
            except _StoppedError:
                return
            except _GoneError:
                log.info("watch history expired (410): listing again", extra={"kind": kind})
                self.versions[kind] = ""
                gone += 1
                if gone == 1:
                    continue  # the first 410 lists again at once; 410 after 410 backs off
                failures += 1
            except self._errors as err:
                failures += 1
                if not self._stop.is_set():
                    log.warning("watch failed, resuming", extra={"kind": kind, "error": _describe(err)})
            if failures:
                self._stop.wait(self._timings.backoff.delay(failures))

    def _step(self, kind: str) -> bool:
        """List if there is no version to resume from, then watch; False for a watch too short to count."""
        if not self.versions.get(kind):
            self.versions[kind] = self._list(kind)
        started = time.monotonic()
        self._watch(kind)
        return time.monotonic() - started >= self._timings.short_s

    def _list_fn(self, kind: str) -> Callable[..., Any]:
        return self._core.list_node if kind == "nodes" else self._core.list_pod_for_all_namespaces

    def _list(self, kind: str) -> str:
        if kind == "nodes":  # pods first: a node is known only with the load its pods put on it
            while not self._pods_listed.wait(0.5):
                if self._stop.is_set():
                    raise _StoppedError
        self.lists[kind] += 1
        doc = json.loads(self._list_fn(kind)(_preload_content=False).data)
        items = doc.get("items") or []
        (self._state.replace_nodes if kind == "nodes" else self._state.replace_pods)(items)
        self._synced.add(kind)
        if kind == "pods":
            self._pods_listed.set()
        if self._synced == {"nodes", "pods"}:
            self._state.synced.set()
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, kind: str) -> int:
        """Watch from ``versions[kind]`` until the server ends it; the number of events (bookmarks too)."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        timeout = random.uniform(*self._timings.timeout_s)
        kwargs: dict[str, Any] = {
            "watch": True,
            "allow_watch_bookmarks": True,
            "timeout_seconds": max(1, round(timeout)),
            "_preload_content": False,
            "_request_timeout": (10.0, timeout + 60.0),  # a silent, half-open connection ends too
        }
        version = self.versions.get(kind, "")
        if version.isdigit():
            kwargs["resource_version"] = version
        self.watches[kind] += 1
        try:
            response = self._responses[kind] = self._list_fn(kind)(**kwargs)
        except ApiException as err:
            if err.status == 410:
                raise _GoneError from err
            raise
        events = 0
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                self._apply(kind, json.loads(line))
                events += 1
        finally:
            self._responses.pop(kind, None)
            response.close()
        return events

    def _apply(self, kind: str, event: Mapping[str, Any]) -> None:
        """Apply one watch event and remember its version; raises on an ERROR event (410: ``_GoneError``)."""
        kind_of, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {str(event)[:200]}")
        if kind_of == "ERROR":
            if obj.get("code") == 410:
                raise _GoneError(str(obj.get("message", "")))
            raise ValueError(f"watch error: {obj.get('code')} {obj.get('message', '')}")
        if kind_of != "BOOKMARK":
            _APPLY[kind, kind_of == "DELETED"](self._state, obj)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if version:
            self.versions[kind] = version


def _node_name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


_APPLY: Final[Mapping[tuple[str, bool], Callable[[ClusterState, dict[str, Any]], None]]] = {
    ("nodes", False): ClusterState.apply_node,
    ("nodes", True): lambda state, obj: state.remove_node(_node_name(obj)),
    ("pods", False): ClusterState.apply_pod,
    ("pods", True): ClusterState.remove_pod,
}
