"""The admission webhook over real HTTPS (a throwaway self-signed certificate in ``tls/``), same app as the
extender: AdmissionReview v1 in, AdmissionReview v1 out.

Cases: an invalid vcuda request is denied with the scheduler's sentence and the request's uid; a valid GPU pod
is allowed and, on /mutate, gets a JSONPatch setting schedulerName; a review without a request is a 400.
"""

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from extender.app import create_webhook_app
from tests.fakes.extender import make_deps, pod_obj
from tests.fixtures.extender_server import serving

TLS = Path(__file__).parent / "tls"


@pytest.fixture
async def webhook():
    deps, _ = make_deps(scheduler_name="kube-vgpu-scheduler")
    context = ssl.create_default_context(cafile=str(TLS / "fake-webhook.crt"))
    async with (
        serving(
            create_webhook_app(deps),
            ssl_certfile=str(TLS / "fake-webhook.crt"),
            ssl_keyfile=str(TLS / "fake-webhook.key"),
        ) as port,
        httpx.AsyncClient(base_url=f"https://localhost:{port}", verify=context) as http,
    ):
        yield http


def review(pod) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "rev-1", "operation": "CREATE", "object": pod},
    }


async def test_an_invalid_request_is_denied_at_apply_with_the_schedulers_reason(webhook):
    answer = (await webhook.post("/validate", json=review(pod_obj("p", (150, 4096))))).json()
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "rev-1"
    assert answer["response"]["allowed"] is False
    assert (
        "vcuda-core 150 is invalid, use 1..100 or a multiple of 100"
        in answer["response"]["status"]["message"]
    )


async def test_a_valid_gpu_pod_is_allowed_and_sent_to_kube_vgpus_scheduler(webhook):
    assert (await webhook.post("/validate", json=review(pod_obj("p", (30, 4096))))).json()["response"][
        "allowed"
    ]
    answer = (await webhook.post("/mutate", json=review(pod_obj("p", (30, 4096))))).json()["response"]
    assert answer["allowed"]
    assert answer["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(answer["patch"]))[0]["value"] == "kube-vgpu-scheduler"


async def test_a_review_without_a_request_is_a_400(webhook):
    answer = await webhook.post(
        "/validate", json={"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
    )
    assert answer.status_code == 400
