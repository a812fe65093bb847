"""The default-scheduler extender mode (``scheduler.mode=extender``): the cluster's own kube-scheduler, configured
with ``deploy/scheduler/default-scheduler-extender.yaml``, calls an extender rendered by the chart in that mode,
over HTTPS with client certificates.

Set-up, next to the session's second-scheduler install: the chart rendered as release ``kv`` with
``scheduler.mode=extender`` (its ServiceAccounts, RBAC, Secrets and ConfigMaps applied; its webhooks and policies
left out, the session's already run); its extender process with the Deployment's args (the scheduling, webhook
and metrics listeners on loopback; certificates from the test CA in place of cert-manager's: the serving one
names the file's ``tlsConfig.serverName``; the session's signing key and extender ServiceAccount, as one install
has one: the session's policy lets only that account write assignments); kube-scheduler
``default-scheduler`` as user ``system:kube-scheduler`` with the shipped file, only ``urlPrefix``, the
``tlsConfig`` files and the kubeconfig replaced.

Cases: a GPU pod that keeps ``default-scheduler`` (kube-system is outside the webhooks' selector) is bound
through this extender; the scheduling verbs refuse a client without a certificate.
"""

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Final

import pytest
import yaml

from tests.k8s.chart import NAMESPACE, apply, render, served
from tests.k8s.cluster import NAMES, K8sCluster, loopback_listeners
from tests.k8s.controlplane import ROOT
from tests.k8s.processes import Process, wait_for
from tests.k8s.workload import Mounter, container_of
from tests.sim.processes import console_script

CONFIG: Final = ROOT / "deploy" / "scheduler" / "default-scheduler-extender.yaml"
LEFT_OUT: Final = {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy",
                   "ValidatingAdmissionPolicyBinding", "Job", "DaemonSet"}  # fmt: skip


class ExtenderMode:
    def __init__(self, k8s: K8sCluster) -> None:
        self.k8s = k8s
        self.config = yaml.safe_load(CONFIG.read_text())
        self.processes: list[Process] = []
        self.port = 0
        self.client_pair = k8s.plane.pki.issue("scheduler-client", common_name="system:kube-scheduler")

    def start(self) -> None:
        objects, _ = served(self.k8s.api, render(self.k8s.workdir, "scheduler.mode=extender", release="kv"))
        apply(
            self.k8s.api, [_with_session_extender(o, self.k8s) for o in objects if o["kind"] not in LEFT_OUT]
        )
        extender = Process(
            "extender-mode", self._extender_argv(objects), self.k8s.workdir / "extender-mode.log"
        )
        self.processes.append(extender.start())
        context = self._client()

        def listening() -> bool:
            extender.check_alive()
            return _get(f"https://127.0.0.1:{self.port}/", context) != 0

        wait_for(listening, timeout_s=60, what="the extender's HTTPS scheduling listener")
        self.processes.append(self._scheduler())

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def _extender_argv(self, objects: list[dict[str, Any]]) -> list[str]:
        plane = self.k8s.plane
        container = container_of(objects, "Deployment", "kv-kube-vgpu-scheduler", "extender")
        mounter = Mounter(plane, self.k8s.client("CoreV1Api"), self.k8s.workdir / "mounts-kv")
        server_name = self.config["extenders"][0]["tlsConfig"]["serverName"]
        serving = plane.pki.issue("extender-mode", common_name=server_name, hosts=(server_name, "127.0.0.1"))
        session_keys = self.k8s.workdir / "mounts" / "extender"
        listeners = loopback_listeners()
        self.port = int(listeners["--port"])
        overrides = {
            **listeners,
            "--scheduler-tls-cert-file": str(serving.cert), "--scheduler-tls-key-file": str(serving.key),
            "--scheduler-client-ca-file": str(plane.pki.ca),
            "--tls-cert-file": str(serving.cert), "--tls-key-file": str(serving.key),
            "--assignment-key-file": str(session_keys / "assignment-key" / "key"),
            "--assignment-verify-keys": str(session_keys / "assignment-keys"),
        }  # fmt: skip
        args = mounter.args(container, overrides)
        # The session's identity: its ValidatingAdmissionPolicy lets only its own extender write assignments.
        kubeconfig = mounter.kubeconfig(container, self.k8s.token(self.k8s.account("extender")))
        return [*console_script("kube-vgpu-extender"), *args, f"--kubeconfig={kubeconfig}"]

    def _client(self) -> ssl.SSLContext:
        """kube-scheduler's client certificate (the file's ``certFile``), as a context to probe with."""
        pair = self.client_pair
        context = ssl.create_default_context(cafile=str(self.k8s.plane.pki.ca))
        context.check_hostname = False
        context.load_cert_chain(str(pair.cert), str(pair.key))
        return context

    def _scheduler(self) -> Process:
        plane = self.k8s.plane
        config = json.loads(json.dumps(self.config))
        entry = config["extenders"][0]
        entry["urlPrefix"] = f"https://127.0.0.1:{self.port}/scheduler"
        entry["tlsConfig"].update(certFile=str(self.client_pair.cert), keyFile=str(self.client_pair.key),
                                  caFile=str(plane.pki.ca))  # fmt: skip
        identity = plane.pki.issue("kube-scheduler", common_name="system:kube-scheduler")
        return plane.scheduler(
            "default-scheduler", config, plane.kubeconfig("kube-scheduler", client=identity)
        )


def _with_session_extender(obj: dict[str, Any], k8s: K8sCluster) -> dict[str, Any]:
    """The extender runs as the session's extender account (see the module docstring), so the chart's
    leader-election RoleBinding names that account too: the replicas elect a leader with the chart's Role."""
    if obj["kind"] != "RoleBinding" or not obj["metadata"]["name"].endswith("-leader-election"):
        return obj
    session = {"kind": "ServiceAccount", "name": k8s.account("extender"), "namespace": NAMESPACE}
    return {**obj, "subjects": [*obj["subjects"], session]}


def _get(url: str, context: ssl.SSLContext | None) -> int:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


@pytest.fixture(scope="module")
def mode(k8s: K8sCluster) -> Iterator[ExtenderMode]:
    started = ExtenderMode(k8s)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def test_default_scheduler_binds_a_gpu_pod_through_the_https_extender(mode: ExtenderMode, core: Any) -> None:
    limits = {NAMES.core: "100"}
    pod = {"metadata": {"name": "default-mode"},
           "spec": {"containers": [{"name": "c0", "image": "cuda", "resources": {"limits": limits}}]}}  # fmt: skip
    created = core.create_namespaced_pod("kube-system", pod)
    assert created.spec.scheduler_name == "default-scheduler"
    try:
        try:
            bound = wait_for(lambda: core.read_namespaced_pod("default-mode", "kube-system").spec.node_name,
                             timeout_s=60, what="default-scheduler to bind the pod")  # fmt: skip
        except AssertionError as err:
            events = core.list_namespaced_event(
                "kube-system", field_selector="involvedObject.name=default-mode"
            )
            tails = "\n".join(f"--- {p.name}:\n{p.tail(15)}" for p in mode.processes)
            raise AssertionError(f"{err}: {[e.message for e in events.items]}\n{tails}") from err
        annotations = core.read_namespaced_pod("default-mode", "kube-system").metadata.annotations
        assert NAMES.assignment in annotations
        assert bound
    finally:
        core.delete_namespaced_pod("default-mode", "kube-system", grace_period_seconds=0)


def test_the_scheduling_verbs_refuse_a_client_without_a_certificate(mode: ExtenderMode) -> None:
    anonymous = ssl.create_default_context(cafile=str(mode.k8s.plane.pki.ca))
    anonymous.check_hostname = False
    assert _get(f"https://127.0.0.1:{mode.port}/scheduler/filter", anonymous) == 0  # the TLS handshake fails
