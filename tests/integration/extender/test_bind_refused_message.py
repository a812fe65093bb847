"""A Binding the API server refuses: the ``/bind`` answer's ``Error`` (kube-scheduler's ``FailedScheduling``
text) carries the API server's own reason and message, bounded, and not only ``HTTP 403 Forbidden``.

Real loopback HTTP into the extender's app, the real ``kubernetes`` client, kmock as the API server whose
binding subresource answers as the real one does when RBAC or an admission policy refuses (a ``Status``
body); hostile bodies (a huge message, a proxy's HTML page) fall back to the HTTP status alone. Found by
tests/k8s (docs/testing.md).
"""

import json
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp.web
import httpx
import pytest

from extender.app import Deps, create_app
from tests.fakes.extender import pod_obj
from tests.fakes.kmock import KmockCluster
from tests.fixtures.extender_kmock import Extender, api, create_pod, has_inventory, wait_until
from tests.fixtures.extender_server import serving

__all__ = ["api"]  # the fixture, imported

RBAC = (
    'pods "p1" is forbidden: User "system:serviceaccount:kube-system:kube-vgpu-extender" cannot create '
    'resource "pods/binding" in API group "" in the namespace "default"'
)
Handler = Callable[[Any], Coroutine[Any, Any, aiohttp.web.StreamResponse]]


def refusing(status: int, body: str, content_type: str = "application/json") -> Handler:
    async def answer(request: Any) -> aiohttp.web.StreamResponse:
        return aiohttp.web.Response(status=status, text=body, content_type=content_type)

    return answer


def status_body(code: int, reason: str, message: str) -> str:
    """The ``Status`` the real API server answers a refused request with (apimachinery's ``metav1.Status``)."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    return json.dumps({**status, "reason": reason, "details": {"name": "p1", "kind": "pods"}, "code": code})


async def bind_error(api: KmockCluster, refuse: Handler) -> str:
    with Extender(api) as ext:
        wait_until(lambda: has_inventory(ext.state, "n1"), "inventory")
        pod = create_pod(api, pod_obj("p1", (30, 4096)))
        assert api.emulator is not None
        setattr(api.emulator, "_bind", refuse)  # noqa: B010 (the binding subresource refuses)
        deps = Deps(scheduler=ext.scheduler, state=ext.state, metrics=ext.metrics)
        async with (
            serving(create_app(deps)) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
        ):
            body = {
                "PodName": "p1",
                "PodNamespace": "default",
                "PodUID": pod["metadata"]["uid"],
                "Node": "n1",
            }
            reply = await http.post("/scheduler/bind", json=body)
        assert reply.status_code == 200
        error: str = reply.json()["Error"]
        return error


async def test_a_binding_refused_by_rbac_names_the_api_servers_reason_and_message(api):
    error = await bind_error(api, refusing(403, status_body(403, "Forbidden", RBAC)))
    assert error.startswith("binding default/p1 to n1 failed: creating the Binding: HTTP 403 Forbidden (")
    assert f"(Forbidden: {RBAC})" in error


async def test_a_huge_status_message_is_cut_to_a_bounded_length(api):
    message = "denied by policy: " + "x" * 100_000 + "\nsecond line"
    error = await bind_error(api, refusing(403, status_body(403, "Forbidden", message)))
    assert "Forbidden: denied by policy: xxx" in error
    assert len(error) < 600
    assert "\n" not in error
    assert error.endswith("...)")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param("<html><body>403 Forbidden</body></html>", "text/html", id="a proxy's HTML page"),
        pytest.param('{"kind":"Pod","message":"not a Status"}', "application/json", id="JSON, not a Status"),
        pytest.param("", "application/json", id="no body"),
    ],
)
async def test_a_refusal_without_a_status_body_says_the_http_status_alone(api, body, content_type):
    error = await bind_error(api, refusing(403, body, content_type))
    assert error == "binding default/p1 to n1 failed: creating the Binding: HTTP 403 Forbidden"
