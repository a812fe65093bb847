"""etcd, kube-apiserver and kube-scheduler, the upstream binaries, run on 127.0.0.1 for one test session.

The binaries come from ``tests/k8s/controlplane`` (``make k8s-controlplane``), cached under
``~/.cache/kube-vgpu/k8s-<version>/bin`` where ``<version>`` is the ``k8s.io/kubernetes`` release pinned in
its ``go.mod``. The API server runs as a cluster's would: TLS with client-certificate authentication,
``Node,RBAC`` authorization, its default admission plugins plus ``NodeRestriction`` (the defaults include
``ValidatingAdmissionPolicy`` and both admission webhooks) and service-account tokens signed by its own key.
What is left out: kube-controller-manager (so no ``default`` ServiceAccount or namespace clean-up; tests
create what they need) and the endpoints reconciler (its Endpoints would hold 127.0.0.1, which validation
refuses).
"""

import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from tests.k8s.pki import CertPair, Pki
from tests.k8s.processes import Process, free_port, wait_for

__all__ = [
    "BIN_DIR",
    "K8S_VERSION",
    "NODE_COMPONENTS",
    "ControlPlane",
    "binaries_missing",
    "write_kubeconfig",
]

ROOT: Final = Path(__file__).resolve().parents[2]
GO_MOD: Final = ROOT / "tests" / "k8s" / "controlplane" / "go.mod"
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-scheduler")
NODE_COMPONENTS: Final = ("kubelet", "fake-cri")


def _pinned_version() -> str:
    found = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    assert found, f"{GO_MOD} pins no k8s.io/kubernetes"
    return found.group(1)


K8S_VERSION: Final = _pinned_version()
BIN_DIR: Final = Path.home() / ".cache" / "kube-vgpu" / f"k8s-{K8S_VERSION}" / "bin"


def binaries_missing(components: tuple[str, ...] = COMPONENTS) -> list[str]:
    return [c for c in components if not (BIN_DIR / c).exists()]


def write_kubeconfig(path: Path, *, server: str, ca: Path, client: CertPair | None = None,
                     token: str | None = None) -> Path:  # fmt: skip
    """A kubeconfig for a client certificate or a bearer token."""
    user: dict[str, str] = {"token": token} if token else {}
    if client is not None:
        user = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "k8s", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "k8s", "context": {"cluster": "k8s", "user": "user"}}],
        "current-context": "k8s",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True, slots=True)
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int


class ControlPlane:
    """``start()`` brings up etcd and the API server; ``scheduler(...)`` adds kube-schedulers."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pki = Pki(workdir / "pki")
        self.ports = _Ports(free_port(), free_port(), free_port())
        self.url = f"https://127.0.0.1:{self.ports.apiserver}"
        self.admin = self.pki.issue("admin", common_name="kube-vgpu-admin", groups=("system:masters",))
        self.admin_kubeconfig = self.kubeconfig("admin", client=self.admin)
        self.processes: list[Process] = []

    def kubeconfig(self, name: str, *, client: CertPair | None = None, token: str | None = None) -> Path:
        path = self.workdir / f"{name}.kubeconfig"
        return write_kubeconfig(path, server=self.url, ca=self.pki.ca, client=client, token=token)

    def start(self, *, timeout_s: float = 90.0) -> None:
        etcd = self._spawn("etcd", self._etcd_args())
        apiserver = self._spawn("kube-apiserver", self._apiserver_args())

        def ready() -> bool:
            etcd.check_alive()
            apiserver.check_alive()
            return self._get("/readyz") == 200

        try:
            wait_for(ready, timeout_s=timeout_s, what="kube-apiserver /readyz", every_s=0.25)
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- kube-apiserver:\n{apiserver.tail()}") from err

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def scheduler(self, name: str, config: dict[str, object], kubeconfig: Path) -> Process:
        """A kube-scheduler with ``config`` (its ``clientConnection.kubeconfig`` is set to ``kubeconfig``),
        serving its health endpoints on a loopback port."""
        config = {**config, "clientConnection": {"kubeconfig": str(kubeconfig)}}
        election = config.get("leaderElection")
        if isinstance(election, dict) and election.get("leaderElect"):
            # kube-scheduler exits when it cannot renew its Lease within renewDeadline (10 s by default): a
            # loaded test machine (etcd's fsyncs, two cores) misses it now and then, and every later test finds
            # no scheduler. The Lease is still taken and held with the chart's RBAC, only renewed more leniently.
            config["leaderElection"] = {
                "leaseDuration": "60s",
                "renewDeadline": "50s",
                "retryPeriod": "2s",
            } | election
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        args = [
            f"--config={path}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / name}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "-v=2",
        ]
        process = self._spawn(name, args, binary="kube-scheduler")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

        def ready() -> bool:
            process.check_alive()
            return _status(f"https://127.0.0.1:{port}/readyz", context) == 200

        wait_for(ready, timeout_s=60, what=f"{name} /readyz", every_s=0.25)
        return process

    def _spawn(self, name: str, args: list[str], *, binary: str = "") -> Process:
        process = Process(name, [str(BIN_DIR / (binary or name)), *args], self.workdir / f"{name}.log")
        self.processes.append(process.start())
        return process

    def _etcd_args(self) -> list[str]:
        client, peer = (
            f"http://127.0.0.1:{self.ports.etcd_client}",
            f"http://127.0.0.1:{self.ports.etcd_peer}",
        )
        return [
            "--name=k8s",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=k8s={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        serving = self.pki.issue(
            "apiserver",
            common_name="kube-apiserver",
            hosts=("127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default.svc"),
        )
        sa = self.pki.service_account_keys()
        return [
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports.apiserver}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.pki.ca}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
        ]

    def _get(self, path: str) -> int:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return _status(self.url + path, context)


def _status(url: str, context: ssl.SSLContext) -> int:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0
