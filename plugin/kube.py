"""The plugin's Kubernetes API calls, over the official client, with raw JSON bodies.

Pods are read as plain dicts (``_preload_content=False``): the client's model classes cost about a
millisecond per pod to build, and the decision code (:mod:`vcuda.request`) takes dicts anyway. Each call is
blocking and runs in a worker thread (``asyncio.to_thread``) with a bounded ``_request_timeout``, so an API
server that stops answering costs one timeout, never a worker stuck for good. Library errors leave as
:class:`KubeError`.
"""

import asyncio
import contextlib
import datetime
import json
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from plugin.core.errors import PluginError
from plugin.kubeapi import ApiClient, ApiException, CoreV1, selected_items, spec_selector

__all__ = ["ApiCluster", "Cluster", "GoneError", "KubeError"]

log = logging.getLogger(__name__)
Body = dict[str, Any]


class KubeError(PluginError):
    """An API call failed."""


class GoneError(KubeError):
    """410 Gone: the API server no longer has the history a watch asked for; start without a version."""


class Cluster(Protocol):
    """What the plugin asks of the API server (a fake implements it in unit tests)."""

    async def node_pods(self, node: str) -> list[Body]: ...

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None: ...

    async def get_node(self, node: str) -> Body | None: ...

    async def patch_node(self, node: str, body: Body) -> None: ...

    def watch_node(self, node: str, version: str, timeout_s: float) -> AsyncIterator[Body]:
        """This Node's watch events (bookmarks too) from ``version`` ("": the Node as ADDED first) until the
        server ends the watch after about ``timeout_s``; raises :class:`GoneError` on 410."""
        ...

    async def patch_node_status(self, node: str, body: Body) -> None: ...

    async def pod_event(
        self, pod: Mapping[str, str], reason: str, message: str, warning: bool = True
    ) -> None: ...


class ApiCluster:
    """:class:`Cluster` over the real client's ``ApiClient`` (plugin.kubeapi)."""

    def __init__(
        self, api: ApiClient, component: str = "kube-vgpu-plugin", *, timeout_s: float = 10.0
    ) -> None:
        self._core = CoreV1(api)  # CoreV1Api's calls without its 250 model classes (plugin.kubeapi)
        self._component = component
        self._timeout = timeout_s

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self._timeout, **kwargs)
        except Exception as err:  # the client raises ApiException, urllib3 and socket errors alike
            raise KubeError(f"{what}: {err}") from err

    async def node_pods(self, node: str) -> list[Body]:
        fields = {"nodeName": node}
        resp = await self._call(
            "list pods",
            self._core.list_pod_for_all_namespaces,
            field_selector=spec_selector(fields),
            _preload_content=False,
        )
        return selected_items(resp, fields)

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        patch = self._core.patch_namespaced_pod
        await self._call(
            f"patch pod {namespace}/{name}", patch, name, namespace, body, _preload_content=False
        )

    async def get_node(self, node: str) -> Body | None:
        try:
            resp: Any = await asyncio.to_thread(
                self._core.read_node, node, _preload_content=False, _request_timeout=self._timeout
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise KubeError(f"read node {node}: {err}") from err
        except Exception as err:
            raise KubeError(f"read node {node}: {err}") from err
        doc: Body = json.loads(resp.data)
        return doc

    async def patch_node(self, node: str, body: Body) -> None:
        await self._call(f"patch node {node}", self._core.patch_node, node, body, _preload_content=False)

    async def watch_node(self, node: str, version: str, timeout_s: float) -> AsyncIterator[Body]:
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={node}",
            "watch": True,
            "allow_watch_bookmarks": True,
            "timeout_seconds": max(1, round(timeout_s)),
            "_preload_content": False,
            "_request_timeout": (self._timeout, timeout_s + 60.0),  # a silent, half-open connection ends
        }
        if version:
            kwargs["resource_version"] = version
        try:
            response: Any = await asyncio.to_thread(self._core.list_node, **kwargs)
        except ApiException as err:
            raise (GoneError if err.status == 410 else KubeError)(f"watch node {node}: {err}") from err
        except Exception as err:
            raise KubeError(f"watch node {node}: {err}") from err
        try:
            async for event in _events(response, node):
                yield event
        finally:  # a cancelled reader: end the read blocking in its thread, then give the connection up
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            response.close()

    async def patch_node_status(self, node: str, body: Body) -> None:
        await self._call(
            f"patch node {node} status", self._core.patch_node_status, node, body, _preload_content=False
        )

    async def pod_event(
        self, pod: Mapping[str, str], reason: str, message: str, warning: bool = True
    ) -> None:
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {
                "namespace": pod["namespace"],
                "name": f"{pod['name']}.{datetime.datetime.now(tz=datetime.UTC).timestamp():.6f}",
            },
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", **pod},
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": self._component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._call(
                "create event",
                self._core.create_namespaced_event,
                pod["namespace"],
                body,
                _preload_content=False,
            )
        except KubeError as err:  # an event is best effort; the log line already carries the message
            log.warning("could not record event %s on %s/%s: %s", reason, pod["namespace"], pod["name"], err)


async def _events(response: Any, node: str) -> AsyncIterator[Body]:
    from kubernetes.watch.watch import iter_resp_lines

    lines = iter_resp_lines(response)  # type: ignore[no-untyped-call]
    while True:
        try:
            line = await asyncio.to_thread(next, lines, None)
        except Exception as err:  # urllib3 and socket errors while reading
            raise KubeError(f"watch node {node}: {err}") from err
        if line is None:
            return
        event: Body = json.loads(line)
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            error = GoneError if obj.get("code") == 410 else KubeError
            raise error(f"watch node {node}: {obj.get('code')} {obj.get('message', '')}")
        yield event
