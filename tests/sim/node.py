"""One SIMULATED GPU node: FAKE GPUs (fake NVML), the REAL plugin as a child process, a simulated kubelet.

The plugin runs exactly as on a node, with the kubelet's directories under the node's work directory
(``device-plugins/``, ``pod-resources/``) and its own state directory, where it writes every container's
shim config file. A DRA node (``front_end="dra"``) runs the plugin with ``--front-end=dra``; its kubelet
gets the DRA side of :class:`tests.fakes.dra_kubelet.FakeDraKubelet` (plugin registration under
``plugins_registry/``, prepare before a pod's containers start, unprepare when it is gone).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.nvml.harness import FakeNvml
from tests.ports import free_port
from tests.sim.hardware import write_node_hardware
from tests.sim.kubeapi import ApiError, KubeApi
from tests.sim.kubelet import KubeletSettings, SimKubelet
from tests.sim.processes import Child, console_script
from tests.sim.waiting import wait_until
from vcuda.names import Names

__all__ = ["NodeSpec", "SimNode", "free_port"]

DEFAULT_KUBELET = KubeletSettings()


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    hardware: str  # a node description of tests/fakes/nvml/nodes, e.g. "h100x8"
    labels: dict[str, str] = field(default_factory=dict)
    metrics: bool = True
    front_end: str = "device-plugin"  # or "dra"
    plugin_config: str = ""
    """The plugin's ``--config-file`` (YAML text: kube-vgpu's or NVIDIA's format, docs/nvidia-plugin.md); a
    node with NVIDIA's config sells some GPUs whole or as replicas of ``nvidia.com/gpu`` (a mixed node)."""
    resources: tuple[str, ...] = ()
    """Device-plugin resources besides ``vcuda-core`` the node must have registered to be ready."""


class SimNode:
    def __init__(self, spec: NodeSpec, root: Path, api: KubeApi, *, kubeconfig: Path, key_file: Path,
                 names: Names, kubelet: KubeletSettings = DEFAULT_KUBELET) -> None:  # fmt: skip
        self.spec, self.name, self.root, self.api, self.names = spec, spec.name, root, api, names
        self.hardware: FakeNvml = write_node_hardware(root / "nvml", spec.name, spec.hardware)
        self.kubelet_settings = kubelet
        self.labels = {"nvidia-device-enable": "enable", **spec.labels}
        self.kubelet = self._new_kubelet()
        self.metrics_port = free_port() if spec.metrics else 0
        self.state_dir = root / "state"
        argv = [
            *console_script("kube-vgpu-plugin"),
            f"--node-name={spec.name}",
            f"--resource-domain={names.domain}",
            f"--device-plugin-dir={self.kubelet.plugin_dir}",
            f"--pod-resources-socket={self.kubelet.pod_resources_socket}",
            f"--state-dir={self.state_dir}",
            f"--shim-dir={root / 'shim'}",
            f"--cdi-dir={root / 'cdi'}",
            f"--assignment-key-file={key_file}",
            f"--metrics-port={self.metrics_port}",
            "--reclaim-interval-seconds=2",
            "--log-level=info",
        ]
        self.dra: Any = None
        self.driver = f"kube-vgpu.{names.domain}"
        self._kubeconfig = kubeconfig
        if spec.front_end == "dra":
            argv += [
                "--front-end=dra",
                f"--dra-registry-dir={root / 'kubelet' / 'plugins_registry'}",
                f"--dra-plugins-dir={root / 'kubelet' / 'plugins'}",
            ]
        if spec.plugin_config:
            config = root / "plugin-config.yaml"
            root.mkdir(parents=True, exist_ok=True)
            config.write_text(spec.plugin_config)
            argv.append(f"--config-file={config}")
        env = {**self.hardware.env(), "KUBECONFIG": str(kubeconfig), "NODE_NAME": spec.name}
        self.plugin = Child(f"plugin-{spec.name}", argv, env, root / "plugin.log")

    def _new_kubelet(self) -> SimKubelet:
        return SimKubelet(
            self.api, self.name, self.root / "kubelet", labels=self.labels, settings=self.kubelet_settings
        )

    def _attach_dra(self) -> None:
        """The kubelet's DRA side, reading claims through the official client as the kubelet does."""
        from kubernetes import config

        from tests.fakes.dra_kubelet import FakeDraKubelet

        api = config.new_client_from_config(config_file=str(self._kubeconfig))  # type: ignore[no-untyped-call]
        self.dra = FakeDraKubelet(self.root / "kubelet" / "plugins_registry", api, poll_s=0.1)
        self.kubelet.dra = self.dra

    async def start(self) -> None:
        if self.spec.front_end == "dra":
            self._attach_dra()
            await self.dra.start()
        await self.kubelet.start()
        await self.plugin.start()

    async def stop(self) -> None:
        await self.plugin.stop()
        await self.kubelet.stop()
        if self.dra is not None:
            await self.dra.stop()

    async def wait_ready(self, timeout_s: float = 30.0, *, resources: tuple[str, ...] | None = None) -> None:
        """The plugin registered both ways: devices with the kubelet (``vcuda-core`` and ``resources``, by
        default the spec's), inventory and memory on the Node."""
        extra = self.spec.resources if resources is None else resources

        async def ready() -> bool:
            if not self.plugin.alive:
                raise AssertionError(f"plugin of {self.name} exited:\n{self.plugin.log_tail()}")
            if self.dra is not None:
                return await self._dra_ready()
            for resource in (self.names.core, *extra):
                endpoint = self.kubelet.devices.endpoints.get(resource)
                if endpoint is None or endpoint.stopped or not endpoint.listed.is_set():
                    return False
            try:
                node = await self.api.get(f"/api/v1/nodes/{self.name}")
            except ApiError:
                return False
            annotations = node["metadata"].get("annotations") or {}
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            return self.names.inventory in annotations and self.names.memory in allocatable

        try:
            await wait_until(ready, timeout_s=timeout_s, what=f"node {self.name} to register its GPUs")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- plugin log:\n{self.plugin.log_tail()}") from err

    async def _dra_ready(self) -> bool:
        """DRA: the kubelet registered the driver and the node's pool is published."""
        if self.driver not in self.dra.plugins:
            return False
        try:
            found = await self.api.list("resourceslices", field_selector=f"spec.nodeName={self.name}")
        except ApiError:
            return False
        return any(s["spec"].get("devices") for s in found)

    async def restart_plugin(self, *, kill: bool = True) -> None:
        await self.plugin.stop(kill=kill)
        await self.plugin.start()

    async def restart_kubelet(self) -> None:
        """Stop the kubelet and start a new one on the same directories (it reloads its checkpoint)."""
        await self.kubelet.stop()
        self.kubelet = self._new_kubelet()
        await self.kubelet.start()

    def config_files(self) -> dict[str, Any]:
        return {str(p.relative_to(self.state_dir)): p for p in self.state_dir.rglob("vcuda.config")}
