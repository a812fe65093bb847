"""The few core/v1 calls (and one of resource.k8s.io/v1) the node agent makes, under the client's API names,
sent through the real client's ``ApiClient`` (``param_serialize`` then ``call_api``: the same URLs, query
names, headers, bearer token, TLS, timeouts and :class:`ApiException` on a non-2xx answer as
``CoreV1Api(..., _preload_content=False)``).

Why not ``CoreV1Api`` itself: importing it builds about 250 pydantic model classes, 22 MiB of resident
memory on every GPU node, for calls whose answers the plugin reads as JSON anyway. Answers here are the
raw ``urllib3`` responses (``.data``, or streamed for a watch), as ``_preload_content=False`` gives.
"""

from typing import Any, Final

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

__all__ = ["CoreV1", "ResourceV1"]

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
