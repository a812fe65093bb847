"""Attacks on the extender's listeners over real sockets, with the listeners ``__main__`` builds.

Threat: any client that can reach a kube-vgpu port (docs/security.md). Cases:
- sidecar mode: the scheduling verbs listen on loopback only; a non-loopback address without client-cert TLS
  is refused at start (exit code 2, nothing served);
- default-scheduler mode (HTTPS, client certificates): a client without a certificate, or with one from
  another CA, never completes the handshake; kube-scheduler's certificate gets answers;
- wrong port for each verb: the scheduling port serves no webhook, metrics or health; the webhook port no
  verb and no metrics; the metrics port no verb and no webhook (all 404/405);
- certificates follow their files: a renewed webhook or scheduling certificate is served to new connections
  without a restart; an unreadable renewal keeps the old one.
"""

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extender.__main__ import main
from extender.listeners import Listener, is_loopback, listeners
from extender.settings import Settings, SettingsError
from tests.fakes.extender import gpu_node, make_deps, pod_obj
from tests.fixtures.certs import Ca
from tests.fixtures.extender_server import serving_listeners
from tests.ports import free_port

FILTER = {"Pod": pod_obj("p", (30, 4096)), "Nodes": None, "NodeNames": ["n1"]}
REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
          "request": {"uid": "r", "operation": "CREATE", "object": pod_obj("p", (30, 4096))}}  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = Ca(tmp_path / "ca", "cluster-ca")
    return {
        "ca": ca,
        "server": ca.issue("server"),
        "scheduler": ca.issue("kube-scheduler", client=True),
        "stranger": Ca(tmp_path / "other", "other-ca").issue("stranger", client=True),
    }


def https_settings(pki: dict[str, Any], **extra: Any) -> Settings:
    server = pki["server"]
    return Settings(
        host="0.0.0.0",
        port=free_port(),
        scheduler_tls_cert_file=server.cert,
        scheduler_tls_key_file=server.key,
        scheduler_client_ca_file=pki["ca"].path,
        metrics_port=free_port(),
        webhook_port=free_port(),
        tls_cert_file=server.cert,
        tls_key_file=server.key,
        **extra,
    )


def client_context(ca: Ca, client: Any | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def by_name(served: list[Listener]) -> dict[str, Listener]:
    return {item.name: item for item in served}


def test_the_sidecar_mode_listens_for_the_verbs_on_loopback_only():
    deps, _ = make_deps([gpu_node("n1")])
    scheduling = by_name(listeners(Settings(metrics_port=free_port()), deps))["scheduling"]
    assert scheduling.config.host == "127.0.0.1"
    assert scheduling.tls is None
    assert is_loopback("::1")
    assert not is_loopback("10.0.0.1")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_verbs_on_a_reachable_address_without_client_certificates_are_refused_at_start(host):
    deps, _ = make_deps()
    with pytest.raises(SettingsError, match="not loopback"):
        listeners(Settings(host=host, metrics_port=free_port()), deps)


def test_https_for_the_verbs_needs_the_client_ca_too(pki):
    deps, _ = make_deps()
    server = pki["server"]
    half = Settings(
        host="0.0.0.0",
        scheduler_tls_cert_file=server.cert,
        scheduler_tls_key_file=server.key,
        metrics_port=free_port(),
    )
    with pytest.raises(SettingsError, match="needs all of"):
        listeners(half, deps)


def test_two_listeners_on_one_port_are_refused():
    deps, _ = make_deps()
    with pytest.raises(SettingsError, match="distinct ports"):
        listeners(Settings(port=9999, metrics_port=9999), deps)


def test_the_binary_exits_2_instead_of_serving_verbs_to_the_network(tmp_path, capsys):
    key = tmp_path / "key.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n"
        "    server: https://127.0.0.1:1\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n"
        "  context:\n    cluster: c\n    user: u\n"
    )
    argv = ["--host=0.0.0.0", f"--assignment-key-file={key}", f"--kubeconfig={kubeconfig}"]
    assert main(argv) == 2
    assert "not loopback" in capsys.readouterr().err


async def test_a_client_without_a_certificate_cannot_reach_the_verbs(pki):
    deps, _ = make_deps([gpu_node("n1")])
    settings = https_settings(pki)
    async with serving_listeners(listeners(settings, deps)):
        url = f"https://localhost:{settings.port}/scheduler/filter"
        for client in (None, pki["stranger"]):
            async with httpx.AsyncClient(verify=client_context(pki["ca"], client)) as http:
                with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                    await http.post(url, json=FILTER)
        async with httpx.AsyncClient(verify=client_context(pki["ca"], pki["scheduler"])) as http:
            answer = await http.post(url, json=FILTER)
        assert answer.status_code == 200
        assert answer.json()["NodeNames"] == ["n1"]


async def test_plain_http_to_the_https_verbs_gets_nothing(pki):
    deps, _ = make_deps([gpu_node("n1")])
    settings = https_settings(pki)
    async with serving_listeners(listeners(settings, deps)), httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):
            await http.post(f"http://127.0.0.1:{settings.port}/scheduler/filter", json=FILTER)


WRONG_PORT = [
    pytest.param("scheduling", "POST", "/validate", id="scheduling port: no webhook"),
    pytest.param("scheduling", "POST", "/mutate", id="scheduling port: no mutating webhook"),
    pytest.param("scheduling", "GET", "/metrics", id="scheduling port: no metrics"),
    pytest.param("scheduling", "GET", "/healthz", id="scheduling port: no health"),
    pytest.param("webhook", "POST", "/scheduler/filter", id="webhook port: no filter"),
    pytest.param("webhook", "POST", "/scheduler/bind", id="webhook port: no bind"),
    pytest.param("webhook", "POST", "/bind", id="webhook port: no bind at the root"),
    pytest.param("webhook", "GET", "/metrics", id="webhook port: no metrics"),
    pytest.param("metrics", "POST", "/scheduler/bind", id="metrics port: no bind"),
    pytest.param("metrics", "POST", "/filter", id="metrics port: no filter"),
    pytest.param("metrics", "POST", "/validate", id="metrics port: no webhook"),
    pytest.param("metrics", "POST", "/metrics", id="metrics port: read-only"),
]


@pytest.mark.parametrize(("listener", "method", "path"), WRONG_PORT)
async def test_each_port_serves_only_its_own_paths(pki, listener, method, path):
    deps, cluster = make_deps([gpu_node("n1")])
    pod = pod_obj("victim", (30, 4096), uid="v1")
    cluster.add(pod)
    settings = https_settings(pki)
    port = {"scheduling": settings.port, "webhook": settings.webhook_port, "metrics": settings.metrics_port}
    scheme = "http" if listener == "metrics" else "https"
    bind: dict[str, Any] = {"PodName": "victim", "PodNamespace": "default", "PodUID": "v1", "Node": "n1"}
    body = bind if "bind" in path else (REVIEW if "/validate" in path else FILTER)
    async with (
        serving_listeners(listeners(settings, deps)),
        httpx.AsyncClient(verify=client_context(pki["ca"], pki["scheduler"])) as http,
    ):
        answer = await http.request(method, f"{scheme}://localhost:{port[listener]}{path}", json=body)
    assert answer.status_code in (404, 405)
    assert cluster.bindings == []


async def test_each_port_serves_its_own_paths(pki):
    deps, _ = make_deps([gpu_node("n1")])
    settings = https_settings(pki)
    async with (
        serving_listeners(listeners(settings, deps)),
        httpx.AsyncClient(verify=client_context(pki["ca"], pki["scheduler"])) as http,
    ):
        verbs = await http.post(f"https://localhost:{settings.port}/scheduler/filter", json=FILTER)
        hook = await http.post(f"https://localhost:{settings.webhook_port}/validate", json=REVIEW)
        metrics = await http.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
        ready = await http.get(f"http://127.0.0.1:{settings.metrics_port}/readyz")
    assert (verbs.status_code, hook.status_code, metrics.status_code, ready.status_code) == (200,) * 4
    assert hook.json()["response"]["allowed"] is True
    assert "kube_vgpu_extender_request_duration_seconds" in metrics.text


def served_serial(port: int, ca: Ca, client: Any | None = None) -> int:
    """The serial number of the certificate a new TLS connection to ``port`` is served."""
    context = client_context(ca, client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("listener", ["webhook", "scheduling"])
async def test_a_renewed_certificate_is_served_without_a_restart(pki, listener):
    deps, _ = make_deps([gpu_node("n1")])
    settings = https_settings(pki)
    served = listeners(settings, deps)
    tls = by_name(served)[listener].tls
    assert tls is not None
    port = settings.webhook_port if listener == "webhook" else settings.port
    assert port is not None
    client = pki["scheduler"] if listener == "scheduling" else None
    async with serving_listeners(served):
        first = await asyncio.to_thread(served_serial, port, pki["ca"], client)
        assert first == pki["server"].serial
        renewed = pki["ca"].issue("server")  # same files, new content (a cert-manager renewal)
        assert tls.reload_if_changed()
        assert await asyncio.to_thread(served_serial, port, pki["ca"], client) == renewed.serial != first
        assert not tls.reload_if_changed()  # nothing changed since


async def test_an_unreadable_renewal_keeps_the_old_certificate(pki):
    deps, _ = make_deps([gpu_node("n1")])
    settings = https_settings(pki)
    served = listeners(settings, deps)
    tls = by_name(served)["webhook"].tls
    assert tls is not None
    async with serving_listeners(served):
        pki["server"].cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
        assert not tls.reload_if_changed()
        assert settings.webhook_port is not None
        assert (
            await asyncio.to_thread(served_serial, settings.webhook_port, pki["ca"]) == pki["server"].serial
        )
