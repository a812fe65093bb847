"""A fake Kubernetes API server for tests: ``kmock``'s emulator with the gaps kube-vgpu needs closed.

``SimulatedApiServer`` (a :class:`kmock.KubernetesEmulator` subclass) adds what contracts §8.2 lists as
missing from kmock 0.8:

- on create: ``metadata.uid``, ``resourceVersion``, ``creationTimestamp`` and the namespace from the URL;
- on every merge patch (including ``/status``): a new ``resourceVersion``;
- list and watch filtered by simple label selectors (``k=v``, ``k!=v``, ``k``, comma = and) and field
  selectors (``k=v``/``k==v``/``k!=v`` over dotted paths such as ``spec.nodeName`` or ``metadata.name``);
- ``POST .../pods/<name>/binding``: sets ``spec.nodeName`` and copies the Binding's ``metadata.annotations`` onto
  the pod in one write, through the same store, so watchers see one MODIFIED; a Binding whose ``metadata.uid``
  is not the pod's is refused with 409, as the API server's UID precondition does;
- served requests are forgotten (kmock otherwise matches every request against all earlier ones).

What stays fake, on purpose: patches are plain recursive JSON merges (no strategic merge: lists are replaced),
there is no admission, no validation, no defaulting, no garbage collection, no real scheduler or kubelet;
``timeoutSeconds`` on watches is ignored (stop a watch by closing it). JSON-patch (list) bodies are stored
but do not bump ``resourceVersion``.

:class:`KmockCluster` runs the server in a background thread with its own event loop, so the official
(blocking) ``kubernetes`` client can be used from tests, benchmarks and code under test alike::

    with KmockCluster() as cluster:
        core = cluster.core()                 # kubernetes.client.CoreV1Api pointed at the fake
        core.create_node({"metadata": {"name": "n1"}})
        cluster.bind("default", "p1", "n1")  # the binding subresource, through the client

Call ``create_namespaced_pod_binding`` with ``_preload_content=False`` (kubernetes-client/python#547).
"""

import asyncio
import concurrent.futures
import datetime
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp.web
import kmock
from kubernetes import client

__all__ = ["KmockCluster", "SimulatedApiServer", "matches_selectors"]

_versions = itertools.count(1)
CORE_RESOURCES = ("pods", "nodes", "events", "configmaps", "secrets", "namespaces")
"""Declared up front, so listing a kind with no objects yet answers an empty list instead of 404."""


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


class SimulatedApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus uid/resourceVersion/timestamps, selectors and the binding subresource.

    ``forget_requests`` (on by default) drops each request from kmock's history once answered, keeping every
    request O(1); turn it off to assert on ``emulator.requests``.
    """

    forget_requests = True

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.subresource == "binding" and request.name:
            return await self._bind(request)
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                meta["resourceVersion"] = str(next(_versions))
            elif request.action == kmock.action.UPDATE:
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

    async def _serve_list(self, request: Any) -> Any:
        result: Any = await super()._serve_list(request)
        labels, fields = _selectors(request)
        result["items"] = [o for o in result["items"] if matches_selectors(o, labels, fields)]
        result["metadata"]["resourceVersion"] = str(next(_versions))
        return result

    async def _serve_watch(self, request: Any) -> Any:
        labels, fields = _selectors(request)
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not matches_selectors(event.get("object") or {}, labels, fields):
                continue
            yield event


def _selectors(request: Any) -> tuple[str, str]:
    params = request.params or {}
    return params.get("labelSelector", ""), params.get("fieldSelector", "")


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
            for plural in CORE_RESOURCES:
                emulator.resources[f"v1/{plural}"] = {}  # type: ignore[assignment]
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            await self._stop.wait()

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._done is not None:
            try:
                self._done.result(timeout=5)
            except (TimeoutError, concurrent.futures.TimeoutError):  # an open watch keeps the server busy
                self._done.cancel()
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
