"""A GPU node run by the REAL kubelet: upstream kubelet, Kubernetes' fake CRI runtime, kube-vgpu's real plugin
over the fake NVML. The kubelet's own device manager registers the plugin, calls ``GetPreferredAllocation``,
``Allocate`` and ``PreStartContainer``, and reports the pod Running once the (fake) containers start.

What had to give way on a shared build machine, and how (docs/testing.md, "The kubelet"):

- the kubelet sets ``vm.overcommit_memory``, ``kernel.panic`` and ``kernel.panic_on_oops`` on the host unless
  they already have its values (``protectKernelDefaults: true`` makes it exit instead). It runs in a private
  mount namespace (``unshare --mount``) where files holding its values are bind-mounted over those three
  ``/proc/sys`` entries, so the host's settings are never written;
- the device-plugin socket directory is the constant ``/var/lib/kubelet/device-plugins`` (``--root-dir`` does
  not move it): the same namespace bind-mounts the node's own directory over ``/var/lib``;
- cgroup v1 only here (``failCgroupV1: false``), no QoS cgroups (``cgroupsPerQOS: false``), no node
  allocatable enforcement; the fake runtime runs no process, so nothing needs a cgroup.

The plugin runs with the chart's DaemonSet args (paths mapped to the node's directories) and a token bound to
a Pod object of the DaemonSet's ServiceAccount on this node, as the kubelet would mount it: the chart's
ValidatingAdmissionPolicy only lets a plugin token that names its node touch that node.
"""

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from tests.k8s.cluster import K8sCluster
from tests.k8s.controlplane import BIN_DIR
from tests.k8s.processes import Process, free_port, wait_for
from tests.k8s.workload import Mounter, container_of
from tests.sim.hardware import write_node_hardware
from tests.sim.processes import console_script

__all__ = ["KubeletNode", "kubelet_unavailable"]

KERNEL_DEFAULTS: Final = {
    "/proc/sys/vm/overcommit_memory": "1",
    "/proc/sys/kernel/panic": "10",
    "/proc/sys/kernel/panic_on_oops": "1",
}
"""What the kubelet's container manager insists on (``pkg/kubelet/cm/container_manager_linux.go``)."""


def kubelet_unavailable() -> str | None:
    """Why a kubelet cannot run here, or None."""
    import os

    if os.geteuid() != 0:
        return "the kubelet needs root (cgroups, mounts, its own mount namespace)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed: the kubelet must run in its own mount namespace"
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "no cgroup hierarchy mounted at /sys/fs/cgroup"
    return None


class KubeletNode:
    plugin_args: Mapping[str, str] = {}
    """Plugin flags set on top of the chart's (a subclass's mode, e.g. ``--front-end=dra``)."""

    def __init__(self, cluster: K8sCluster, name: str, hardware: str) -> None:
        self.cluster, self.name, self.hardware = cluster, name, hardware
        self.root = cluster.workdir / "nodes" / name
        self.var_lib = self.root / "var-lib"
        self.kubelet_dir = self.var_lib / "kubelet"
        self.cri_socket = f"unix://{self.root / 'cri.sock'}"
        self.processes: list[Process] = []
        self.kubelet: Process | None = None
        self.plugin: Process | None = None

    def start(self) -> None:
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        cri = Process(
            "fake-cri", [str(BIN_DIR / "fake-cri"), f"--endpoint={self.cri_socket}"], self.root / "cri.log"
        )
        self.processes.append(cri.start())
        self.kubelet = self._kubelet()
        self.processes.append(self.kubelet.start())
        core = self.cluster.client("CoreV1Api")

        def registered() -> bool:
            for process in self.processes:
                process.check_alive()
            return bool(core.list_node(field_selector=f"metadata.name={self.name}").items)

        self._wait(registered, f"the kubelet to register node {self.name}")
        core.patch_node(self.name, {"spec": {"taints": None}})  # the node lifecycle controller's part
        self.plugin = self._plugin()
        self.processes.append(self.plugin.start())
        self.wait_ready()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def restart_kubelet(self) -> None:
        """Stop and start the kubelet; return once the plugin has registered with the new one (a pod admitted
        before that fails with ``UnexpectedAdmissionError`` upstream)."""
        assert self.kubelet is not None
        assert self.plugin is not None
        before = self._registrations()
        self.kubelet.stop()
        self.kubelet.start()
        self._wait(
            lambda: self._registrations() > before, "the plugin to register with the restarted kubelet"
        )

    def _registrations(self) -> int:
        assert self.plugin is not None
        return self.plugin.tail(10_000).count("with the kubelet at")

    def wait_ready(self) -> None:
        """Both ways registered: the kubelet advertises vcuda-core, the plugin published memory and inventory."""
        from tests.k8s.cluster import NAMES

        core = self.cluster.client("CoreV1Api")

        def ready() -> bool:
            for process in self.processes:
                process.check_alive()
            node = core.read_node(self.name)
            allocatable = node.status.allocatable or {}
            return (NAMES.core in allocatable and NAMES.memory in allocatable
                    and NAMES.inventory in (node.metadata.annotations or {}))  # fmt: skip

        self._wait(ready, f"node {self.name}: plugin registered with the kubelet")

    def _wait(self, probe: Any, what: str) -> None:
        try:
            wait_for(probe, timeout_s=60, what=what, every_s=0.25)
        except AssertionError as err:
            tails = "\n".join(f"--- {p.name}:\n{p.tail(25)}" for p in self.processes)
            raise AssertionError(f"{err}\n{tails}") from err

    def _kubelet(self) -> Process:
        plane = self.cluster.plane
        identity = plane.pki.issue(f"kubelet-{self.name}", common_name=f"system:node:{self.name}",
                                   groups=("system:nodes",))  # fmt: skip
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "failSwapOn": False, "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [], "localStorageCapacityIsolation": False, "makeIPTablesUtilChains": False,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(plane.pki.ca)}},
            "authorization": {"mode": "AlwaysAllow"},
            "address": "127.0.0.1", "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "containerRuntimeEndpoint": self.cri_socket, "imageServiceEndpoint": self.cri_socket,
            "evictionHard": {"memory.available": "1Mi"},
        }  # fmt: skip
        config_file = self.root / "kubelet.yaml"
        config_file.write_text(yaml.safe_dump(config))
        kubelet = [
            str(BIN_DIR / "kubelet"), f"--config={config_file}",
            f"--kubeconfig={plane.kubeconfig(f'kubelet-{self.name}', client=identity)}",
            "--root-dir=/var/lib/kubelet", f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--hostname-override={self.name}", "-v=2",
        ]  # fmt: skip
        return Process("kubelet", [shutil.which("unshare") or "/usr/bin/unshare", "--mount", "--propagation", "private", "sh", "-c",
                                   self._namespace_script(), "kubelet", *kubelet], self.root / "kubelet.log")  # fmt: skip

    def _namespace_script(self) -> str:
        binds = []
        for path, value in KERNEL_DEFAULTS.items():
            overlay = self.root / ("sysctl" + path.replace("/", "_"))
            overlay.write_text(value + "\n")
            binds.append(f"mount --bind {overlay} {path}")
        return "set -e; " + "; ".join([*binds, f"mount --bind {self.var_lib} /var/lib"]) + '; exec "$@"'

    def _plugin(self) -> Process:
        container = container_of(self.cluster.objects, "DaemonSet", "kube-vgpu-plugin", "plugin")
        mounter = Mounter(self.cluster.plane, self.cluster.client("CoreV1Api"), self.root / "mounts")
        token = self._bound_token(mounter.identity(container))
        overrides = {
            "--node-name": self.name,
            "--device-plugin-dir": str(self.kubelet_dir / "device-plugins"),
            "--pod-resources-socket": str(self.kubelet_dir / "pod-resources" / "kubelet.sock"),
            "--nvidia-driver-root": "/", "--nvidia-driver-host-root": "/",
            "--state-dir": str(self.root / "state"), "--shim-dir": str(self.root / "shim"),
            "--cdi-dir": str(self.root / "cdi"),
            "--metrics-port": str(free_port()), "--health-port": str(free_port()),
            **self.plugin_args,
        }  # fmt: skip
        args = mounter.args(container, overrides)
        args += [
            f"{flag}={value}"
            for flag, value in overrides.items()
            if not any(a.startswith(flag + "=") for a in args)
        ]
        hardware = write_node_hardware(self.root / "nvml", self.name, self.hardware)
        env = {**hardware.env(), "NODE_NAME": self.name,
               "KUBECONFIG": str(mounter.kubeconfig(container, token))}  # fmt: skip
        return Process("plugin", [*console_script("kube-vgpu-plugin"), *args], self.root / "plugin.log", env)

    def _bound_token(self, service_account: str) -> str:
        """A token bound to a Pod of the DaemonSet on this node (the kubelet's projected token carries the node)."""
        core = self.cluster.client("CoreV1Api")
        spec = {"nodeName": self.name, "serviceAccountName": service_account,
                "containers": [{"name": "plugin", "image": "kube-vgpu-plugin"}]}  # fmt: skip
        pod = core.create_namespaced_pod("kube-system", {"metadata": {"name": f"kube-vgpu-plugin-{self.name}"},
                                                         "spec": spec})  # fmt: skip
        bound: Any = {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid}
        request = {"spec": {"audiences": ["https://kubernetes.default.svc"], "boundObjectRef": bound}}
        answer = core.create_namespaced_service_account_token(service_account, "kube-system", request)
        return str(answer.status.token)
