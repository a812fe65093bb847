"""The loopback cluster of this tier: the real control plane, the chart applied to it, and the real extender
and kube-schedulers running with the chart's own arguments, configuration and service account.

- kube-apiserver and etcd (:mod:`tests.k8s.controlplane`);
- the chart (``scheduler.mode=second``) applied with server-side apply; its webhooks pointed at the
  extender's HTTPS port (:func:`tests.k8s.chart.point_webhooks_at`);
- ``kube-vgpu-extender`` with the args of the chart's scheduler Deployment (ports mapped to loopback, mounted
  files materialised from the API server: :mod:`tests.k8s.workload`), authenticated as the ServiceAccount the
  chart gives it (a TokenRequest token), so the chart's RBAC is exactly what it gets;
- kube-scheduler ``kube-vgpu-scheduler`` with the chart's ConfigMap and the ServiceAccount of its container
  (second-scheduler mode), calling the extender on loopback as its sidecar would;
- GPU nodes created through the API (the real kubelet's node is :mod:`tests.k8s.kubelet`), with the capacity and
  inventory annotation kube-vgpu's plugin publishes.
"""

import json
from pathlib import Path
from typing import Any, Final

import yaml

from tests.k8s.chart import NAMESPACE, apply, point_webhooks_at, render, served
from tests.k8s.controlplane import ControlPlane
from tests.k8s.processes import Process, free_port, wait_for
from tests.k8s.workload import Mounter, container_of
from vcuda.annotations import encode_inventory
from vcuda.model import NodeInventory
from vcuda.names import Names

__all__ = ["NAMES", "SECOND_SCHEDULER", "K8sCluster", "loopback_listeners"]

SECOND_SCHEDULER: Final = "kube-vgpu-scheduler"
NAMES: Final = Names()

Obj = dict[str, Any]


def _by_kind(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"the chart renders no {kind} {name}"
    return found[0]


def _with_extender_url(config: Obj, url_prefix: str) -> Obj:
    config = json.loads(json.dumps(config))
    for extender in config.get("extenders") or []:
        extender["urlPrefix"] = url_prefix
    return config


def loopback_listeners() -> dict[str, str]:
    """Every ``--*-host`` of the extender on 127.0.0.1 and its other ports free, so sessions never collide."""
    from extender.settings import Settings

    fields = Settings.model_fields
    hosts = {f"--{n.replace('_', '-')}": "127.0.0.1" for n in fields if n == "host" or n.endswith("_host")}
    ports = {
        f"--{n.replace('_', '-')}": str(free_port()) for n in fields if n == "port" or n.endswith("_port")
    }
    return {**hosts, **ports}


class K8sCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.plane = ControlPlane(workdir)
        self.webhook_port = free_port()
        self.extender_port = self.extender_health_port = 0
        self.objects: list[Obj] = []
        self.api: Any = None
        self.extender: Process | None = None
        self.schedulers: dict[str, Process] = {}
        self.extender_account = self.scheduler_account = ""

    @property
    def extender_url(self) -> str:
        return f"http://127.0.0.1:{self.extender_port}"

    def start(self) -> None:
        from kubernetes import config

        self.plane.start()
        self.api = config.new_client_from_config(config_file=str(self.plane.admin_kubeconfig))  # type: ignore[no-untyped-call]
        self.objects, _operators = served(self.api, render(self.workdir, "dra.enabled=true"))
        point_webhooks_at(
            self.objects, f"https://127.0.0.1:{self.webhook_port}", self.plane.pki.ca.read_bytes()
        )
        apply(self.api, self.objects)
        self.fill_namespace("kube-system")
        self.make_keys()
        self.start_extender()
        self._start_schedulers()

    def stop(self) -> None:
        for process in [*self.schedulers.values(), self.extender]:
            if process is not None:
                process.stop()
        self.plane.stop()
        if self.api is not None:
            self.api.close()

    def client(self, kind: str, api: Any = None) -> Any:
        """``kubernetes.client.<kind>`` (``CoreV1Api``, ...) on the admin client or ``api``; raw dict bodies."""
        from kubernetes import client

        return getattr(client, kind)(api or self.api)

    # --- credentials -------------------------------------------------------------------------------------
    def token(self, service_account: str, namespace: str = NAMESPACE) -> str:

        request = {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 7200}}
        answer = self.client("CoreV1Api").create_namespaced_service_account_token(
            service_account, namespace, request
        )
        token: str = answer.status.token
        return token

    # --- components ---------------------------------------------------------------------------------------
    def make_keys(self) -> None:
        """The chart's assignment-key hook Job (no kube-controller-manager here, so nothing runs it): its container's
        args through the real ``kube-vgpu-extender keygen``, as the Job's own ServiceAccount (the Role is tested)."""
        from extender.__main__ import main

        jobs = [
            o["metadata"]["name"]
            for o in self.objects
            if o["kind"] == "Job" and "keygen" in o["metadata"]["name"]
        ]
        assert len(jobs) == 1, f"the chart renders keygen Jobs {jobs}"
        container = container_of(self.objects, "Job", jobs[0], "keygen")
        mounter = Mounter(self.plane, self.client("CoreV1Api"), self.workdir / "mounts")
        kubeconfig = mounter.kubeconfig(container, self.token(mounter.identity(container)))
        assert main([*mounter.args(container, {}), f"--kubeconfig={kubeconfig}"]) == 0, "keygen failed"

    def _extender_argv(self) -> list[str]:
        """The chart's extender: its args with loopback ports, its mounts from the API server, its identity."""
        from tests.sim.processes import console_script

        container = container_of(self.objects, "Deployment", SECOND_SCHEDULER, "extender")
        mounter = Mounter(self.plane, self.client("CoreV1Api"), self.workdir / "mounts")
        self.extender_account = mounter.identity(container)
        kubeconfig = mounter.kubeconfig(container, self.token(self.extender_account))
        serving = self.plane.pki.issue(
            "extender-webhook", common_name="kube-vgpu-extender", hosts=("127.0.0.1",)
        )
        listeners = loopback_listeners()
        self.extender_port = int(listeners["--port"])
        self.extender_health_port = int(listeners.get("--metrics-port", self.extender_port))
        overrides = {
            **listeners,
            "--webhook-port": str(self.webhook_port),
            "--tls-cert-file": str(serving.cert),  # the chart's certificate names the Service, not 127.0.0.1
            "--tls-key-file": str(serving.key),
        }
        args = mounter.args(container, overrides)
        missing = [
            f"{flag}={value}"
            for flag, value in overrides.items()
            if not any(a.startswith(flag + "=") for a in args)
        ]
        return [
            *console_script("kube-vgpu-extender"),
            *args,
            *missing,
            f"--kubeconfig={kubeconfig}",
        ]

    def start_extender(self) -> Process:
        self.extender = Process("extender", self._extender_argv(), self.workdir / "extender.log").start()
        self.wait_extender_ready()
        return self.extender

    def wait_extender_ready(self) -> None:
        import urllib.error
        import urllib.request

        def ready() -> bool:
            assert self.extender is not None
            self.extender.check_alive()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.extender_health_port}/readyz", timeout=2
                ) as answer:
                    return bool(answer.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, timeout_s=60, what="the extender to list the cluster", every_s=0.2)

    def restart_extender(self) -> None:
        assert self.extender is not None
        self.extender.stop(kill=True)
        self.extender.start()
        self.wait_extender_ready()

    def _start_schedulers(self) -> None:
        container = container_of(self.objects, "Deployment", SECOND_SCHEDULER, "kube-scheduler")
        mounter = Mounter(self.plane, self.client("CoreV1Api"), self.workdir / "mounts")
        self.scheduler_account = mounter.identity(container)
        sa_kubeconfig = mounter.kubeconfig(container, self.token(self.scheduler_account))
        config_map = _by_kind(self.objects, "ConfigMap", SECOND_SCHEDULER)
        second = _with_extender_url(
            yaml.safe_load(config_map["data"]["config.yaml"]), self.extender_url + "/scheduler"
        )
        self.schedulers[SECOND_SCHEDULER] = self.plane.scheduler(SECOND_SCHEDULER, second, sa_kubeconfig)

    def account(self, component: str) -> str:
        """The ServiceAccount the chart gives ``extender``, ``scheduler`` or ``plugin``."""
        if component == "plugin":
            container = container_of(self.objects, "DaemonSet", "kube-vgpu-plugin", "plugin")
            return Mounter(self.plane, self.client("CoreV1Api"), self.workdir / "mounts").identity(container)
        return self.extender_account if component == "extender" else self.scheduler_account

    # --- objects ------------------------------------------------------------------------------------------
    def add_gpu_node(self, name: str, inventory: NodeInventory) -> None:
        """A Node as kubelet and plugin leave it: cpu/memory/pods, vcuda-core (100 per GPU), vcuda-memory
        (MiB) and the inventory annotation, Ready. The API server's ``TaintNodesByCondition`` admission taints a
        new Node ``node.kubernetes.io/not-ready``; the node lifecycle controller (kube-controller-manager, not
        run here) lifts it once the Node is Ready, so this does."""
        core = self.client("CoreV1Api")
        capacity = {
            "cpu": "64", "memory": "512Gi", "pods": "110",
            NAMES.core: str(100 * len(inventory.gpus)),
            NAMES.memory: str(sum(g.memory_mib for g in inventory.gpus)),
        }  # fmt: skip
        meta = {"name": name, "labels": {"kubernetes.io/hostname": name, "nvidia-device-enable": "enable"},
                "annotations": {NAMES.inventory: encode_inventory(inventory)}}  # fmt: skip
        core.create_node({"metadata": meta})
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated"}
        core.patch_node_status(name, {"status": {"capacity": capacity, "allocatable": capacity,
                                                 "conditions": [ready]}})  # fmt: skip
        core.patch_node(name, {"spec": {"taints": None}})

    def add_namespace(self, name: str) -> None:
        """A namespace as kube-controller-manager leaves it (:meth:`fill_namespace`)."""

        core = self.client("CoreV1Api")
        core.create_namespace({"metadata": {"name": name}})
        self.fill_namespace(name)

    def fill_namespace(self, name: str) -> None:
        """What kube-controller-manager puts in every namespace: the ``default`` ServiceAccount and the
        ``kube-root-ca.crt`` ConfigMap (pods' projected token volumes need it)."""
        core = self.client("CoreV1Api")
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        ca = {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": self.plane.pki.ca.read_text()}}
        core.create_namespaced_config_map(name, ca)
