"""A small async REST client for the SIMULATED cluster's own actors (scheduler, kubelets, demo, tests).

The real components (extender, plugin) use the official ``kubernetes`` client against the same API server;
the simulated actors speak plain HTTP/JSON through ``aiohttp`` (kmock's own HTTP library) so that they need no
thread pool. (``httpx`` is avoided on this hot path: without ``sniffio`` installed, httpcore retries a failing
``import sniffio`` on every request, a full ``sys.path`` scan.)
"""

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

__all__ = ["ApiError", "KubeApi", "Obj", "pod_path"]

Obj = dict[str, Any]


class ApiError(RuntimeError):
    """The simulated API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"API server answered {status}: {message}")
        self.status = status


def pod_path(namespace: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{namespace}/pods"
    return f"{base}/{name}" if name else base


DRA_KINDS = frozenset({"resourceslices", "deviceclasses", "resourceclaims", "resourceclaimtemplates"})
"""``resource.k8s.io/v1`` kinds, served under ``/apis/resource.k8s.io/v1``."""


def _collection(kind: str, namespace: str | None) -> str:
    if kind == "nodes":
        return "/api/v1/nodes"
    if kind in DRA_KINDS:
        base = "/apis/resource.k8s.io/v1"
        return f"{base}/{kind}" if namespace is None else f"{base}/namespaces/{namespace}/{kind}"
    if namespace is None:
        return f"/api/v1/{kind}"
    return f"/api/v1/namespaces/{namespace}/{kind}"


class KubeApi:
    """``get``/``list``/``create``/``patch`` (JSON merge patch)/``delete``/``watch`` on core/v1 objects."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self._url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        """Requests: a bounded pool (created lazily, inside the event loop that uses it)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, read_bufsize=1 << 20
            )
        return self._session

    def _watches(self) -> aiohttp.ClientSession:
        """Watches hold a connection each for their whole life: their own unbounded pool."""
        if self._watch_session is None:
            connector = aiohttp.TCPConnector(limit=0)
            self._watch_session = aiohttp.ClientSession(connector=connector, read_bufsize=1 << 20)
        return self._watch_session

    async def aclose(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()
        self._session = self._watch_session = None

    async def _call(self, method: str, path: str, body: object = None, *, params: Any = None) -> Obj:
        headers = {
            "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"
        }
        data = None if body is None else json.dumps(body)
        try:
            async with self._http().request(
                method, self._url + path, data=data, headers=headers, params=params
            ) as r:
                text = await r.text()
                if r.status >= 300:
                    raise ApiError(r.status, text[:500])
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ApiError(0, f"{method} {path}: {type(err).__name__}: {err}") from err
        result: Obj = json.loads(text)
        return result

    async def get(self, path: str) -> Obj:
        return await self._call("GET", path)

    async def list(self, kind: str, namespace: str | None = None, *, field_selector: str = "") -> list[Obj]:
        params = {"fieldSelector": field_selector} if field_selector else None
        items: list[Obj] = (await self._call("GET", _collection(kind, namespace), params=params))["items"]
        return items

    async def create(self, kind: str, body: Mapping[str, Any]) -> Obj:
        namespace = body.get("metadata", {}).get("namespace") if kind != "nodes" else None
        return await self._call("POST", _collection(kind, namespace), body)

    async def create_at(self, path: str, body: Mapping[str, Any]) -> Obj:
        """POST to an explicit path (a subresource such as ``pods/<name>/binding``)."""
        return await self._call("POST", path, body)

    async def patch(self, path: str, body: Mapping[str, Any]) -> Obj:
        return await self._call("PATCH", path, body)

    async def put(self, path: str, body: Mapping[str, Any]) -> Obj:
        """Replace the whole object; a stale ``metadata.resourceVersion`` is answered 409."""
        return await self._call("PUT", path, body)

    async def delete(self, path: str) -> Obj:
        return await self._call("DELETE", path)

    async def watch(
        self, kind: str, namespace: str | None = None, *, field_selector: str = ""
    ) -> AsyncIterator[Obj]:
        """Watch events (``{"type", "object"}``); the emulator first replays every object as ADDED."""
        path = _collection(kind, namespace)
        params = {"watch": "true", **({"fieldSelector": field_selector} if field_selector else {})}
        forever = aiohttp.ClientTimeout(total=None, sock_read=None)
        try:
            async with self._watches().get(self._url + path, params=params, timeout=forever) as response:
                if response.status >= 300:
                    raise ApiError(response.status, "watch refused")
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except aiohttp.ClientError as err:
            raise ApiError(0, f"watch {path}: {err}") from err
