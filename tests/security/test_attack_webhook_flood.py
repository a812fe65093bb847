"""Attack: exhaust the extender's memory or hold its webhook through the admission port.

Threat: any in-cluster client (docs/security.md). The webhook port is open to the whole pod network (the
API server's source address cannot be named in a NetworkPolicy) and asks for no client certificate, and the
webhook shares its process (memory limit 512 MiB in the chart) and event loop with the scheduling verbs.
Before: every review body up to 64 MiB was buffered and parsed, for as many clients as connected, so five
concurrent 60 MB posts took the extender past its memory limit (measured: 486 MB peak RSS for four), and a
client trickling a body kept its buffer forever. Now: a review past :data:`extender.app.MAX_REVIEW_BYTES`
(what the API server can send: a 3 MiB object, twice on UPDATE) is refused unread with a 400, at most
:data:`extender.app.REVIEWS_AT_ONCE` bodies are read at a time (others wait briefly, then get a 503), and a body
not complete within :data:`extender.app.REVIEW_DEADLINE_S` is a 400. The scheduling verbs answer throughout.
"""

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

import extender.app as app_module
from extender.app import MAX_REVIEW_BYTES, REVIEWS_AT_ONCE, create_app, create_webhook_app
from tests.fakes.extender import gpu_node, make_deps, pod_obj
from tests.fixtures.extender_server import serving

FILTER = {"Pod": pod_obj("p", (30, 4096)), "NodeNames": ["n1"]}


def review(pod: dict[str, Any]) -> dict[str, Any]:
    request = {"uid": "r", "operation": "CREATE", "object": pod}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def padded_review(size: int) -> bytes:
    pod = pod_obj("big", (30, 4096))
    body = json.dumps(review(pod)).encode()
    pod["metadata"]["annotations"]["pad"] = "x" * (size - len(body) - 9)  # 9: `"pad": ""`
    padded = json.dumps(review(pod)).encode()
    assert len(padded) == size
    return padded


@pytest.mark.parametrize("size", [MAX_REVIEW_BYTES + 1, 40 * 1024 * 1024])
async def test_a_review_larger_than_the_api_server_sends_is_refused(size):
    deps, _ = make_deps([gpu_node("n1")])
    body = padded_review(size)
    async with serving(create_webhook_app(deps)) as port, httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(f"http://127.0.0.1:{port}/validate", content=body)
        honest = await http.post(f"http://127.0.0.1:{port}/validate", content=padded_review(3 * 1024 * 1024))
    assert answer.status_code == 400
    assert "larger than" in answer.json()["Error"]
    assert honest.status_code == 200, "a review the API server could send (a 3 MiB pod) is answered"


async def _trickle(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that announces a 7 MiB review and sends its first bytes only."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /validate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 7340032\r\n\r\n{"apiVersion": '
    )
    await writer.drain()
    return reader, writer


async def test_trickling_clients_hold_no_more_than_a_few_review_slots_and_only_for_a_while(monkeypatch):
    monkeypatch.setattr(app_module, "REVIEW_DEADLINE_S", 2.0)
    deps, _ = make_deps([gpu_node("n1")])
    ok = json.dumps(review(pod_obj("p", (30, 4096)))).encode()
    async with (
        serving(create_webhook_app(deps)) as hook,
        serving(create_app(deps)) as verbs,
        httpx.AsyncClient(timeout=30) as http,
    ):
        slow = [await _trickle(hook) for _ in range(REVIEWS_AT_ONCE)]
        await asyncio.sleep(0.2)
        start = time.perf_counter()
        busy = await http.post(f"http://127.0.0.1:{hook}/validate", content=ok)
        waited = time.perf_counter() - start
        scheduling = await http.post(f"http://127.0.0.1:{verbs}/scheduler/filter", json=FILTER)
        cut = [await asyncio.wait_for(reader.read(4096), 10) for reader, _ in slow]
        for _, writer in slow:
            writer.close()
        later = await http.post(f"http://127.0.0.1:{hook}/validate", content=ok)
    assert busy.status_code == 503, "no slot: refused after a short wait, not queued behind the trickle"
    assert waited < 2.0
    assert scheduling.status_code == 200, "the scheduling verbs answer meanwhile"
    assert all(b" 400 " in answer.split(b"\r\n")[0] for answer in cut), cut
    assert later.status_code == 200, "slots come back once the deadline cut the trickling clients"
