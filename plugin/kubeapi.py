"""The few core/v1 calls (and one of resource.k8s.io/v1) the node agent makes, under the client's API names,
sent through the real client's ``ApiClient`` (``param_serialize`` then ``call_api``: the same URLs, query
names, headers, bearer token, TLS, timeouts and :class:`ApiException` on a non-2xx answer as
``CoreV1Api(..., _preload_content=False)``).

Why not ``CoreV1Api`` itself: importing it builds about 250 pydantic model classes, 22 MiB of resident
memory on every GPU node, for calls whose answers the plugin reads as JSON anyway. Answers here are the
raw ``urllib3`` responses (``.data``, or streamed for a watch), as ``_preload_content=False`` gives.

The plugin imports the client through this module only: ``kubernetes/__init__.py`` imports every part of
the client (``dynamic``, ``stream``, ``informer``, ``leaderelection``; with ``kubernetes-validate`` installed,
jsonschema too) and ``kubernetes/config/__init__.py`` the kubeconfig loader (OAuth2, requests), none of which
a node agent in its Pod uses. :func:`defer_init` leaves those package ``__init__`` files until a name
only they define is asked for; the modules used here are the real client's, imported by their full names.
"""

import importlib.util
import json
import sys
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final

__all__ = [
    "ApiClient",
    "ApiException",
    "ConfigException",
    "CoreV1",
    "ResourceV1",
    "defer_init",
    "new_api_client",
    "selected_items",
    "spec_selector",
]

_INIT_LOCK: Final = threading.Lock()


def defer_init(name: str) -> None:
    """Put package ``name`` in ``sys.modules`` without running its ``__init__``: its submodules import as
    usual (``import name.sub``); the first name the package lacks (``name.anything``, ``from name import x``
    for an ``x`` not imported yet) runs the real ``__init__`` and answers from it, so nothing behaves
    differently, it only happens later. Does nothing if the package is already imported or not found."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def finish_init(attr: str) -> object:  # PEP 562: called only for names the module lacks
        with _INIT_LOCK:
            if module.__dict__.pop("__getattr__", None) is not None:
                loader.exec_module(module)
        return _lookup(module, attr)

    module.__dict__["__getattr__"] = finish_init
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def _lookup(module: ModuleType, attr: str) -> object:
    try:
        return module.__dict__[attr]
    except KeyError:
        raise AttributeError(f"module {module.__name__!r} has no attribute {attr!r}") from None


defer_init("kubernetes")
defer_init("kubernetes.config")

from kubernetes.client.api_client import ApiClient  # noqa: E402  (after defer_init)
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402
from kubernetes.config.incluster_config import load_incluster_config  # noqa: E402


def new_api_client() -> ApiClient:
    """The client for the API server: the Pod's service account, or else the kubeconfig (``KUBECONFIG``,
    ``~/.kube/config``), whose loader (OAuth2, requests) is imported only then."""
    try:
        load_incluster_config()  # type: ignore[no-untyped-call]
    except ConfigException:
        from kubernetes.config.kube_config import load_kube_config

        load_kube_config()  # type: ignore[no-untyped-call]
    return ApiClient()


_QUERY: Final = {  # CoreV1Api's keyword -> the API server's query parameter
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "field_selector": "fieldSelector",
    "label_selector": "labelSelector",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "watch": "watch",
}
_JSON: Final = "application/json"
_PATCH: Final = "application/strategic-merge-patch+json"  # CoreV1Api's choice for an object body


class _RawApi:
    """Calls through the client's ``ApiClient``, answered as raw responses."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    def _call(
        self,
        method: str,
        path: str,
        path_params: dict[str, str] | None = None,
        body: object = None,
        *,
        _preload_content: bool = False,
        _request_timeout: Any = None,
        **query: Any,
    ) -> Any:
        if _preload_content:
            raise ValueError("CoreV1 answers raw responses only: pass _preload_content=False")
        headers = {"Accept": _JSON}
        if body is not None:
            headers["Content-Type"] = _PATCH if method == "PATCH" else _JSON
        params = [(_QUERY[k], v) for k, v in query.items() if v is not None]
        request = self._api.param_serialize(
            method, path, path_params, params, headers, body, auth_settings=["BearerToken"]
        )
        response = self._api.call_api(*request, _request_timeout=_request_timeout)
        if not 200 <= response.status <= 299:
            response.read()  # type: ignore[no-untyped-call]
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response


class CoreV1(_RawApi):
    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any:
        return self._call("GET", "/api/v1/pods", **kwargs)

    def patch_namespaced_pod(self, name: str, namespace: str, body: object, **kwargs: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/pods/{name}"
        return self._call("PATCH", path, {"namespace": namespace, "name": name}, body, **kwargs)

    def create_namespaced_pod_eviction(self, name: str, namespace: str, body: object, **kwargs: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
        return self._call("POST", path, {"namespace": namespace, "name": name}, body, **kwargs)

    def create_namespaced_event(self, namespace: str, body: object, **kwargs: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/events"
        return self._call("POST", path, {"namespace": namespace}, body, **kwargs)

    def list_node(self, **kwargs: Any) -> Any:
        return self._call("GET", "/api/v1/nodes", **kwargs)

    def read_node(self, name: str, **kwargs: Any) -> Any:
        return self._call("GET", "/api/v1/nodes/{name}", {"name": name}, **kwargs)

    def patch_node(self, name: str, body: object, **kwargs: Any) -> Any:
        return self._call("PATCH", "/api/v1/nodes/{name}", {"name": name}, body, **kwargs)

    def patch_node_status(self, name: str, body: object, **kwargs: Any) -> Any:
        return self._call("PATCH", "/api/v1/nodes/{name}/status", {"name": name}, body, **kwargs)


class ResourceV1(_RawApi):
    """``ResourceV1Api``'s one call the DRA driver makes (``resource.k8s.io/v1``)."""

    def read_namespaced_resource_claim(self, name: str, namespace: str, **kwargs: Any) -> Any:
        path = "/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}"
        return self._call("GET", path, {"namespace": namespace, "name": name}, **kwargs)


def spec_selector(fields: Mapping[str, str]) -> str:
    """The field selector for objects whose ``spec`` holds ``fields`` (``spec.nodeName=n,spec.driver=d``)."""
    return ",".join(f"spec.{k}={v}" for k, v in fields.items())


def selected_items(response: Any, fields: Mapping[str, str]) -> list[dict[str, Any]]:
    """The items of a raw list answer, asked with :func:`spec_selector`, whose ``spec`` holds ``fields``:
    what the API server (or a proxy in front of it) answers to a selector is checked again, not trusted."""
    items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
    return [i for i in items if all((i.get("spec") or {}).get(k) == v for k, v in fields.items())]
