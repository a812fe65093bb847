"""A fake Kubernetes API server for tests: ``kmock``'s emulator with the gaps kube-vgpu needs closed.

``SimulatedApiServer`` (a :class:`kmock.KubernetesEmulator` subclass) adds what kmock 0.8 lacks and
kube-vgpu needs:

- on create: ``metadata.uid``, ``resourceVersion``, ``creationTimestamp`` and the namespace from the URL;
- on every merge patch (including ``/status``): a new ``resourceVersion``;
- list and watch filtered by simple label selectors (``k=v``, ``k!=v``, ``k``, comma = and) and field
  selectors (``k=v``/``k==v``/``k!=v`` over dotted paths such as ``spec.nodeName`` or ``metadata.name``);
- ``POST .../pods/<name>/binding``: sets ``spec.nodeName`` and copies the Binding's ``metadata.annotations`` onto
  the pod in one write, through the same store, so watchers see one MODIFIED; a Binding whose ``metadata.uid``
  or ``metadata.resourceVersion`` is not the pod's, or for a pod already bound, is refused with 409, as the API
  server's preconditions do;
- a merge patch carrying ``metadata.resourceVersion`` takes it as a precondition: a stale one is a 409 and
  changes nothing; ``DELETE`` with ``preconditions`` (uid, resourceVersion) the object fails is a 409;
- ``PUT`` (replace, which kmock 0.8 does not route at all): the whole object, with optimistic concurrency as
  the real API server does it: a body whose ``metadata.resourceVersion`` is not the stored one is refused with
  409 Conflict ("the object has been modified"), one without a resourceVersion replaces unconditionally; a
  missing object is 404. Leader election (``coordination.k8s.io/v1`` Leases) relies on exactly this;
- served requests are forgotten (kmock otherwise matches every request against all earlier ones), but
  counted: :attr:`SimulatedApiServer.counts` by ``(verb, plural)`` (``list``, ``watch``, ``get``, ``create``,
  ``patch``, ``delete``), so benchmarks can report API requests per minute.

Watches behave as the real API server's watch cache (``k8s.io/apiserver`` ``pkg/storage/cacher``), which kmock's replay-everything watch
does not:

- ``resourceVersion=N`` (N > 0) resumes: only the events after N are sent, no synthetic ADDED; without one (or
  ``"0"``) the current objects come first as ADDED, as the real server does;
- history is kept per resource for :attr:`~SimulatedApiServer.history` events; a watch from a version older
  than what is kept (or anything before :meth:`~SimulatedApiServer.compact`, which stands for etcd compaction
  or an API server restart) is answered with an ``ERROR`` event carrying a 410 ``Expired`` Status (or, with
  ``gone_as_http``, an HTTP 410): only then must a client list again;
- ``allowWatchBookmarks=true``: a ``BOOKMARK`` event carrying the latest resourceVersion every
  :attr:`~SimulatedApiServer.bookmark_s` and before the server ends the watch;
- ``timeoutSeconds`` is honoured; without it the server ends a watch after 1800-3600 s, as
  ``--min-request-timeout`` makes the real one do; :meth:`~SimulatedApiServer.drop_watches` ends every open
  watch at once (a restart, a load balancer's idle cut). :attr:`~SimulatedApiServer.time_scale` divides
  all of these durations, so that a benchmark lives an hour of watch traffic in seconds;
- a DELETED event carries a new resourceVersion, as deletions bump it.

Hostile, as the real one, in short: concurrent writers are kept apart by 409 Conflict (stale PUT, patch,
Binding or DELETE precondition); a watch from a compacted version gets 410 Gone; watches end on their timeout,
or all at once (:meth:`~SimulatedApiServer.drop_watches`); watches can be refused
(:attr:`~SimulatedApiServer.refuse_watches`); lists can be slow (:attr:`~SimulatedApiServer.list_delay_s`).
Not reproduced: 429 Too Many Requests with ``Retry-After`` (no priority and fairness), paged lists and expired
``continue`` tokens.

What stays fake, on purpose: patches are plain recursive JSON merges (no strategic merge: lists are replaced),
there is no admission, no validation, no defaulting, no garbage collection, no real scheduler or kubelet.
JSON-patch (list) bodies are stored and their MODIFIED event gets a new ``resourceVersion``; lists are never
paged (``limit`` is ignored).

:class:`KmockCluster` runs the server in a background thread with its own event loop, so the official
(blocking) ``kubernetes`` client can be used from tests, benchmarks and code under test alike::

    with KmockCluster() as cluster:
        core = cluster.core()                 # kubernetes.client.CoreV1Api pointed at the fake
        core.create_node({"metadata": {"name": "n1"}})
        cluster.bind("default", "p1", "n1")  # the binding subresource, through the client

Call ``create_namespaced_pod_binding`` with ``_preload_content=False`` (kubernetes-client/python#547).
"""

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp.web
import kmock
from kmock._internal import aiobus
from kubernetes import client

__all__ = [
    "CORE_RESOURCES",
    "DRA_RESOURCES",
    "KmockCluster",
    "SimulatedApiServer",
    "declare_resources",
    "matches_selectors",
]


class _Versions:
    """The cluster-wide resourceVersion counter (etcd's revision): every write takes the next one."""

    def __init__(self) -> None:
        self.current = 0

    def __next__(self) -> int:
        self.current += 1
        return self.current


_versions = _Versions()
CORE_RESOURCES = ("pods", "nodes", "events", "configmaps", "secrets", "namespaces")
"""Declared up front, so listing a kind with no objects yet answers an empty list instead of 404."""
DRA_RESOURCES = ("resourceslices", "resourceclaims", "resourceclaimtemplates", "deviceclasses")
"""``resource.k8s.io/v1``, declared up front as well."""
GENERATED_NAME_BASE = 58  # the real SimpleNameGenerator: base cut to 63 - 5, then 5 random [a-z0-9]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _field(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return None if value is None else str(value)


def _check(actual: str | None, op: str, want: str | None) -> bool:
    if op in ("exists", "absent"):
        return (actual is not None) == (op == "exists")
    return (actual == want) if op == "=" else (actual != want)


def _terms(selector: str) -> Iterator[tuple[str, str, str | None]]:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            yield key.strip(), "!=", value.strip()
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            yield key.strip(), "=", value.strip()
        else:
            yield term.lstrip("!"), "absent" if term.startswith("!") else "exists", None


def matches_selectors(obj: Mapping[str, Any], labels: str = "", fields: str = "") -> bool:
    """Whether ``obj`` passes a ``labelSelector`` and a ``fieldSelector`` (the simple forms only)."""
    obj_labels = (obj.get("metadata") or {}).get("labels") or {}
    for key, op, want in _terms(labels):
        if not _check(obj_labels.get(key), op, want):
            return False
    return all(_check(_field(obj, key), op, want) for key, op, want in _terms(fields))


_T = TypeVar("_T")
_VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "UPDATE": "patch"}
_DEFAULT_WATCH_S = (1800.0, 3600.0)
"""Without ``timeoutSeconds`` the real server ends a watch after ``--min-request-timeout`` (1800 s) times
a random factor in [1, 2)."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _version_of(obj: Mapping[str, Any]) -> int:
    text = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else 0


class _History:
    """One resource's recent events by resourceVersion, as the watch cache keeps them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.events: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self.oldest = 0
        """Watches from a version below this one are too old (410 Gone)."""
        self.tick = asyncio.Event()
        """Set (and replaced) on every event: what a waiting watch waits on."""

    async def record(self, event: dict[str, Any]) -> dict[str, Any]:
        """Store ``event`` with the version it made; a delete (or a write that took no version) takes a new one."""
        obj = event.get("object") or {}
        version = _version_of(obj)
        if event.get("type") == "DELETED" or version <= (self.events[-1][0] if self.events else self.oldest):
            version = next(_versions)
            meta = {**(obj.get("metadata") or {}), "resourceVersion": str(version)}
            if event.get("type") == "DELETED":
                obj = {**obj, "metadata": meta}
            else:  # the stored object is this dict (shallowly): the store takes the version too
                obj.setdefault("metadata", {})["resourceVersion"] = str(version)
            event = {"type": event["type"], "object": obj}
        self.events.append((version, event))
        while len(self.events) > self.capacity:
            self.oldest = self.events.popleft()[0]
        self.tick.set()
        self.tick = asyncio.Event()
        return event

    def after(self, version: int) -> list[tuple[int, dict[str, Any]]]:
        return [(v, e) for v, e in self.events if v > version]

    def compact(self, version: int) -> None:
        while self.events and self.events[0][0] <= version:
            self.events.popleft()
        self.oldest = max(self.oldest, version)


class _RecordingBus(aiobus.Bus[Any]):
    """kmock's event bus for one resource, each event also kept in its :class:`_History`."""

    history: _History

    async def put(self, item: Any) -> None:
        await super().put(await self.history.record(item))


class SimulatedApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus uid/resourceVersion/timestamps, selectors and the binding subresource.

    ``forget_requests`` (on by default) drops each request from kmock's history once answered, keeping every
    request O(1); turn it off to assert on ``emulator.requests``.
    """

    forget_requests = True
    history = 10_000
    """Events kept per resource; a watch resuming from before them gets 410 Gone."""
    bookmark_s = 60.0
    """How often a watch with ``allowWatchBookmarks`` gets a BOOKMARK (the real server: about a minute)."""
    time_scale = 1.0
    """Divides every server-side duration (watch timeouts, bookmark period): 60 lives an hour in a minute."""
    list_delay_s: Mapping[str, float] = {}
    """Extra seconds a list of a kind takes (a real server lists 100,000 pods in seconds)."""
    refuse_watches = 0
    """When not 0, the HTTP status every watch is answered with (403: RBAC without ``watch``; 500)."""
    gone_as_http = False
    """Answer a too-old watch with HTTP 410 instead of a 410 ERROR event (the real server does both)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = collections.defaultdict(self._new_bus)
        self._histories: dict[Any, _History] = {}
        self._open_watches: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def _new_bus(self) -> _RecordingBus:
        bus = _RecordingBus()
        bus.history = _History(self.history)
        return bus

    def _history(self, resource: Any) -> _History:
        bus = self._buses[resource]
        assert isinstance(bus, _RecordingBus)
        return bus.history

    @staticmethod
    def version() -> int:
        """The cluster's current resourceVersion."""
        return _versions.current

    def compact(self, version: int | None = None) -> None:
        """Forget the events up to ``version`` (default: every event so far; etcd compaction, or an API server
        restart): a watch resuming from an older version is answered 410 Gone. Callable from any thread."""
        upto = _versions.current if version is None else version

        def compact() -> None:
            for resource in list(self._buses):
                self._history(resource).compact(upto)

        self._in_loop(compact)

    def drop_watches(self) -> int:
        """End every open watch now (normal end of stream); returns how many there were. Callable from any
        thread."""

        def drop() -> int:
            for stop in self._open_watches:
                stop.set()
            return len(self._open_watches)

        return self._in_loop(drop)

    def _in_loop(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in the server's event loop (its objects are not thread-safe) and return its result."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            return fn()

        async def call() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    @property
    def open_watches(self) -> int:
        return len(self._open_watches)

    def _count(self, request: Any) -> None:
        verb = _VERBS.get(str(getattr(request.action, "value", request.action)), "delete")
        plural = request.resource.plural if request.resource is not None else str(request.url.path)
        self.counts[verb, plural] += 1

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        self._loop = asyncio.get_running_loop()
        if request.action is not None:
            self._count(request)
        if request.resource is not None and request.action == kmock.action.WATCH and self.refuse_watches:
            code = self.refuse_watches
            return aiohttp.web.json_response(_status(code, "Refused", "watch refused"), status=code)
        if request.resource is not None and request.action == kmock.action.WATCH and self.gone_as_http:
            version = str((request.params or {}).get("resourceVersion") or "")
            if version.isdigit() and 0 < int(version) < self._history(request.resource).oldest:
                return aiohttp.web.json_response(_gone(version), status=410)
        if request.resource is not None and request.subresource == "binding" and request.name:
            return await self._bind(request)
        if request.resource is not None and request.method.value == "PUT" and request.name:
            return await self._replace(request)
        if request.resource is not None and request.action == kmock.action.DELETE and request.name:
            refused = await self._precondition_failed(request)
            if refused is not None:
                return refused
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
                    meta["name"] = str(meta["generateName"])[:GENERATED_NAME_BASE] + suffix
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                meta["resourceVersion"] = str(next(_versions))
            elif request.action == kmock.action.UPDATE:
                refused = self._stale_patch(request, str(meta.get("resourceVersion") or ""))
                if refused is not None:
                    return refused
                meta["resourceVersion"] = str(next(_versions))
        try:
            response: aiohttp.web.StreamResponse = await super()._handle(request)
        finally:
            if self.forget_requests:  # kmock matches each request against all served ones: O(n) each
                self._requests[:] = [r for r in self._requests if r is not request]
        return response

    async def _bind(self, request: Any) -> aiohttp.web.StreamResponse:
        node = ((request.data or {}).get("target") or {}).get("name")
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return aiohttp.web.json_response(
                    _status(404, "NotFound", f"pod {request.name} not found"), status=404
                )
            pod = self._objects[key].raw
            meta = (request.data or {}).get("metadata") or {}
            if meta.get("uid") and meta["uid"] != (pod.get("metadata") or {}).get("uid"):
                return aiohttp.web.json_response(
                    _status(409, "Conflict", "Precondition failed: UID in precondition"), status=409
                )
            sent, stored = (
                str(meta.get("resourceVersion") or ""),
                str((pod.get("metadata") or {}).get("resourceVersion")),
            )
            if sent and sent != stored:
                message = f"Precondition failed: ResourceVersion in precondition: {sent}, ResourceVersion in object meta: {stored}"
                return aiohttp.web.json_response(_status(409, "Conflict", message), status=409)
            if (pod.get("spec") or {}).get("nodeName"):
                return aiohttp.web.json_response(_status(409, "Conflict", "pod is already bound"), status=409)
            # As the API server's BindingREST: the Binding's annotations land on the pod in the same write.
            annotations = meta.get("annotations") or {}
            patch = {
                "spec": {"nodeName": node},
                "metadata": {"resourceVersion": str(next(_versions)), "annotations": annotations},
            }
            self._objects[key].patch(patch)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": self._objects[key].raw})
        return aiohttp.web.json_response(_status(201, "", "bound"), status=201)

    async def _precondition_failed(self, request: Any) -> aiohttp.web.StreamResponse | None:
        """DELETE with ``preconditions`` (uid, resourceVersion) that the stored object fails: 409, as the real
        server answers; a missing object is 404."""
        body = request.data if isinstance(request.data, dict) else {}
        wanted = body.get("preconditions") or {}
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return aiohttp.web.json_response(
                    _status(404, "NotFound", f"{request.name} not found"), status=404
                )
            stored = self._objects[key].raw.get("metadata") or {}
        for field in ("uid", "resourceVersion"):
            if wanted.get(field) and str(wanted[field]) != str(stored.get(field)):
                message = f"Precondition failed: {field} in precondition: {wanted[field]}, {field} in object meta: {stored.get(field)}"
                return aiohttp.web.json_response(_status(409, "Conflict", message), status=409)
        return None

    def _stale_patch(self, request: Any, sent: str) -> aiohttp.web.StreamResponse | None:
        """A merge patch carrying ``metadata.resourceVersion`` makes it a precondition, as on the real server: a
        stale one is a 409 and nothing changes (what keeps two concurrent read-modify-patch writers apart)."""
        key = (request.resource, request.namespace, request.name)
        if not sent or key not in self._objects or self._objects[key].deleted:
            return None
        stored = str((self._objects[key].raw.get("metadata") or {}).get("resourceVersion"))
        if sent == stored:
            return None
        return aiohttp.web.json_response(_status(409, "Conflict", _modified(request)), status=409)

    async def _replace(self, request: Any) -> aiohttp.web.StreamResponse:
        """PUT: replace the whole object; a stale ``metadata.resourceVersion`` is a 409, as on the real server."""
        key = (request.resource, request.namespace, request.name)
        body = request.data if isinstance(request.data, dict) else {}
        meta = body.setdefault("metadata", {})
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return aiohttp.web.json_response(
                    _status(404, "NotFound", f"{request.name} not found"), status=404
                )
            stored = self._objects[key].raw.get("metadata") or {}
            sent = str(meta.get("resourceVersion") or "")
            if sent and sent != str(stored.get("resourceVersion")):
                return aiohttp.web.json_response(_status(409, "Conflict", _modified(request)), status=409)
            for kept in ("uid", "creationTimestamp", "namespace", "name"):
                if kept in stored:
                    meta[kept] = stored[kept]
            meta["resourceVersion"] = str(next(_versions))
            self._objects[key].create(body)  # a new version, whole: no merge with the stored one
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        self.counts["update", request.resource.plural] += 1
        return aiohttp.web.json_response(raw, status=200)

    async def _serve_list(self, request: Any) -> Any:
        delay = self.list_delay_s.get(request.resource.plural, 0.0)
        if delay and request.action == kmock.action.LIST:
            await asyncio.sleep(delay)
        result: Any = await super()._serve_list(request)
        labels, fields = _selectors(request)
        result["items"] = [o for o in result["items"] if matches_selectors(o, labels, fields)]
        result["metadata"]["resourceVersion"] = str(_versions.current)
        return result

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        yield b""  # headers now, as the real server sends them before the first event
        params = request.params or {}
        version = str(params.get("resourceVersion") or "")
        history = self._history(request.resource)
        if version.isdigit() and 0 < int(version) < history.oldest:
            yield {"type": "ERROR", "object": _gone(version)}
            return
        stop = asyncio.Event()
        self._open_watches.add(stop)
        try:
            async for event in self._events(request, history, version, stop):
                yield event
        finally:
            self._open_watches.discard(stop)

    async def _events(
        self, request: Any, history: _History, version: str, stop: asyncio.Event
    ) -> AsyncIterator[dict[str, Any]]:
        params = request.params or {}
        labels, fields = _selectors(request)
        since = int(version) if version.isdigit() else 0
        if since == 0:  # no version: the current objects as ADDED, then what follows
            since = _versions.current
            for event in await self._current(request):
                yield event
        bookmarks = str(params.get("allowWatchBookmarks", "")).lower() == "true"
        timeout = float(params.get("timeoutSeconds") or random.uniform(*_DEFAULT_WATCH_S))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout / self.time_scale
        next_mark = loop.time() + self.bookmark_s / self.time_scale
        while not stop.is_set() and loop.time() < deadline:
            tick = history.tick
            if since < history.oldest:  # fell behind what is kept: the real cache ends such watchers
                return
            events = history.after(since)
            for version_of_event, event in events:
                since = version_of_event
                if self._visible(request, event, labels, fields):
                    yield event
            if bookmarks and loop.time() >= next_mark:
                next_mark = loop.time() + self.bookmark_s / self.time_scale
                yield _bookmark(request, _versions.current)
            await _wait(tick, stop, min(deadline, next_mark if bookmarks else deadline) - loop.time())
        if bookmarks and not stop.is_set():
            yield _bookmark(request, _versions.current)

    async def _current(self, request: Any) -> list[dict[str, Any]]:
        listed = await self._serve_list(request)
        return [{"type": "ADDED", "object": obj} for obj in listed["items"]]

    def _visible(self, request: Any, event: Mapping[str, Any], labels: str, fields: str) -> bool:
        obj = event.get("object") or {}
        namespace = (obj.get("metadata") or {}).get("namespace")
        if request.namespace and namespace != request.namespace:
            return False
        return matches_selectors(obj, labels, fields)


async def _end_remaining_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def _selectors(request: Any) -> tuple[str, str]:
    params = request.params or {}
    return params.get("labelSelector", ""), params.get("fieldSelector", "")


async def _wait(tick: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0 or tick.is_set() or stop.is_set():
        return
    waiters = {asyncio.ensure_future(tick.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()


def _gone(version: str) -> dict[str, Any]:
    return _status(410, "Expired", f"too old resource version: {version} ({_versions.current})")


def _bookmark(request: Any, version: int) -> dict[str, Any]:
    kind = "Node" if request.resource.plural == "nodes" else request.resource.plural.rstrip("s").capitalize()
    meta = {"resourceVersion": str(version)}
    return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1", "metadata": meta}}


def _modified(request: Any) -> str:
    return (
        f'Operation cannot be fulfilled on {request.resource.plural} "{request.name}": the object '
        "has been modified; please apply your changes to the latest version and try again"
    )


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    status = "Success" if code < 400 else "Failure"
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": status,
        "code": code,
        "reason": reason,
        "message": message,
    }


def declare_resources(emulator: Any) -> None:
    """Core and ``resource.k8s.io/v1`` kinds known before any object exists, so empty lists answer 200."""
    for plural in CORE_RESOURCES:
        emulator.resources[kmock.resource("", "v1", plural)] = {}
    for plural in DRA_RESOURCES:
        emulator.resources[kmock.resource("resource.k8s.io", "v1", plural)] = {}


class KmockCluster:
    """Runs :class:`SimulatedApiServer` on 127.0.0.1 in a background thread; a context manager."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kmock", daemon=True)
        self._stop: asyncio.Event | None = None
        self._done: Any = None
        self.emulator: SimulatedApiServer | None = None
        self.url = ""

    def __enter__(self) -> "KmockCluster":
        self._thread.start()
        ready: Any = asyncio.run_coroutine_threadsafe(self._serve_until_stopped(), self._loop)
        self._done = ready
        deadline = 10.0
        while not self.url:
            if ready.done():
                ready.result()
            deadline -= 0.01
            if deadline <= 0:
                raise TimeoutError("kmock did not start within 10 s")
            threading.Event().wait(0.01)
        return self

    async def _serve_until_stopped(self) -> None:
        self._stop = asyncio.Event()
        async with SimulatedApiServer() as emulator, kmock.Server(emulator) as server:
            declare_resources(emulator)
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            await self._stop.wait()
            emulator.drop_watches()  # open watches end now instead of holding the shutdown

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._done is not None:
            try:
                self._done.result(timeout=5)
            except (TimeoutError, concurrent.futures.TimeoutError):  # an open watch keeps the server busy
                self._done.cancel()
        if self._loop.is_running():  # handlers still finishing (a client that went away): end them first
            with contextlib.suppress(TimeoutError, concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(_end_remaining_tasks(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def core(self) -> Any:
        """A ``CoreV1Api``, typed ``Any``: tests pass raw dict bodies and read ``_preload_content=False`` replies."""
        return client.CoreV1Api(self.api_client())

    def bind(self, namespace: str, pod: str, node: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod},
            "target": {"kind": "Node", "name": node},
        }
        self.core().create_namespaced_pod_binding(pod, namespace, body, _preload_content=False)
