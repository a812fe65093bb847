"""The Kubernetes API as the extender needs it: a narrow :class:`Cluster` Protocol, its adapter over the
official client, and the list-and-watch loops that feed :class:`~extender.state.ClusterState`.

Raw JSON throughout (``_preload_content=False``): the client's model classes are slow and fail on the
binding subresource's ``Status`` answer (kubernetes-client/python#547). Library errors leave as
:class:`ClusterError`. Tests use a fake implementing the same Protocol, or kmock as the API server.
"""

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, TypedDict

from extender.state import ClusterState

__all__ = ["BindingBody", "Cluster", "ClusterError", "KubeCluster", "Watcher", "binding_body"]

log = logging.getLogger(__name__)
_WATCH_SECONDS: Final = 300


class ClusterError(Exception):
    """A call to the API server failed; the message says which and why."""


class Cluster(Protocol):
    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def bind_pod(
        self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        """POST ``pods/<name>/binding``; the API server copies the Binding's annotations onto the pod in the
        same write that sets ``spec.nodeName``, so a pod is never bound without its assignment (or the
        reverse)."""
        ...


class _Meta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
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


def binding_body(
    namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str] | None = None
) -> BindingBody:
    meta: _Meta = {"name": name, "namespace": namespace}
    if uid:
        meta["uid"] = uid
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": meta,
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
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

    async def bind_pod(
        self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        body = binding_body(namespace, name, uid, node, annotations)
        await self._send(
            "creating the Binding", self._core.create_namespaced_pod_binding, name, namespace, body
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


class Watcher:
    """List, then watch, nodes and pods into the state; relist after any error or an expired watch."""

    def __init__(self, api_client: Any, state: ClusterState, *, retry_s: float = 2.0) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._state = state
        self._retry = retry_s
        self._stop = threading.Event()
        self._responses: dict[str, Any] = {}
        self._synced: set[str] = set()
        self._errors = _library_errors()

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
        while not self._stop.is_set():
            try:
                self._watch(kind, self._list(kind))
            except self._errors as err:
                if not self._stop.is_set():
                    log.warning("watch failed, listing again", extra={"kind": kind, "error": _describe(err)})
                    self._stop.wait(self._retry)

    def _list_fn(self, kind: str) -> Callable[..., Any]:
        return self._core.list_node if kind == "nodes" else self._core.list_pod_for_all_namespaces

    def _list(self, kind: str) -> str:
        doc = json.loads(self._list_fn(kind)(_preload_content=False).data)
        items = doc.get("items") or []
        (self._state.replace_nodes if kind == "nodes" else self._state.replace_pods)(items)
        self._synced.add(kind)
        if self._synced == {"nodes", "pods"}:
            self._state.synced.set()
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, kind: str, version: str) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        kwargs: dict[str, Any] = {"watch": True, "timeout_seconds": _WATCH_SECONDS, "_preload_content": False}
        if version and version.isdigit():
            kwargs["resource_version"] = version
        response = self._responses[kind] = self._list_fn(kind)(**kwargs)
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set() or not self._apply(kind, json.loads(line)):
                    return
        finally:
            self._responses.pop(kind, None)
            response.close()

    def _apply(self, kind: str, event: Mapping[str, Any]) -> bool:
        """Apply one watch event; False when the watch must end (an ERROR such as 410 Gone)."""
        kind_of, obj = event.get("type"), event.get("object")
        if kind_of == "ERROR" or not isinstance(obj, dict):
            return False
        if kind == "nodes":
            if kind_of == "DELETED":
                self._state.remove_node(str((obj.get("metadata") or {}).get("name", "")))
            else:
                self._state.apply_node(obj)
        elif kind_of == "DELETED":
            self._state.remove_pod(obj)
        elif kind_of != "BOOKMARK":
            self._state.apply_pod(obj)
        return True
