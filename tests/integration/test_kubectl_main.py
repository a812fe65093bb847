"""kubectl-vgpu's main() through the real kubernetes client, against a fake API server (a loopback
http.server answering only GET /api/v1/nodes, /api/v1/pods and /api/v1/namespaces/<ns>/pods) and a kubeconfig
written to tmp_path. Checks the kubeconfig namespace default, the read-only requests, and error exits."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from kube_vgpu_kubectl.cli import main
from tests.builders.kubectl import NODES, PODS


class FakeApiServer(BaseHTTPRequestHandler):
    """A fake kube-apiserver: list endpoints only; records every request line."""

    requests: ClassVar[list[str]] = []

    def do_GET(self):
        self.requests.append(f"GET {self.path}")
        path = self.path.split("?")[0]
        if path == "/api/v1/nodes":
            items = NODES
        elif path == "/api/v1/pods":
            items = PODS
        elif path.startswith("/api/v1/namespaces/") and path.endswith("/pods"):
            items = [p for p in PODS if p["metadata"]["namespace"] == path.split("/")[4]]
        else:
            self.send_error(404)
            return
        body = json.dumps({"kind": "List", "apiVersion": "v1", "items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    FakeApiServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def kubeconfig(tmp_path, url: str, namespace: str = "web"):
    path = tmp_path / "config"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": namespace}}
                ],
                "current-context": "ctx",
            }
        )
    )
    return str(path)


def test_pods_default_to_the_kubeconfig_namespace(api, tmp_path, capsys):
    assert main(["pods", "--kubeconfig", kubeconfig(tmp_path, api), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["pod"] for p in doc["pods"]] == ["broken", "forged", "waiting"]
    assert [r.split("?")[0] for r in FakeApiServer.requests] == ["GET /api/v1/namespaces/web/pods"]


def test_nodes_reads_nodes_all_pods_and_claims_only(api, tmp_path, capsys):
    """This fake serves no resource.k8s.io (a cluster before 1.34): the claims' 404 means no claims."""
    assert main(["nodes", "--kubeconfig", kubeconfig(tmp_path, api)]) == 0
    assert "ml/train,web/forged" in capsys.readouterr().out
    assert sorted(r.split("?")[0] for r in FakeApiServer.requests) == [
        "GET /api/v1/nodes",
        "GET /api/v1/pods",
        "GET /apis/resource.k8s.io/v1/resourceclaims",
    ]


def test_missing_kubeconfig_exits_1_with_a_message(tmp_path, capsys):
    assert main(["nodes", "--kubeconfig", str(tmp_path / "absent")]) == 1
    assert "cannot load kubeconfig" in capsys.readouterr().err


def test_api_error_exits_1_with_the_status(api, tmp_path, capsys):
    FakeApiServer.requests = []
    config = kubeconfig(tmp_path, api + "/nowhere")
    assert main(["nodes", "--kubeconfig", config]) == 1
    assert "404" in capsys.readouterr().err
