"""The SIMULATED cluster: API server, extender, scheduler and GPU nodes, started and stopped together.

    async with SimCluster(ClusterSpec(nodes=DEMO_NODES), workdir) as cluster:
        await cluster.submit(pod)                   # through the extender's validating webhook, then created
        await cluster.wait_settled(["default/p"])   # Running, Failed, or reported unschedulable

Real: ``kube-vgpu-extender`` and one ``kube-vgpu-plugin`` per node, as child processes. Simulated: the API server
(:mod:`tests.sim.apiserver`), kube-scheduler (:mod:`tests.sim.scheduler`), the kubelets (:mod:`tests.sim.kubelet`),
the GPUs (fake NVML), and API-server admission (the sim calls the extender's ``/validate`` before a create, as
a ``ValidatingWebhookConfiguration`` would make the API server do).
"""

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp

from tests.signing_keys import KEYRING, write_private_key, write_public_key
from tests.sim.apiserver import SimApiServer
from tests.sim.dra_scheduler import SimDraScheduler, device_classes
from tests.sim.kubeapi import ApiError, KubeApi, Obj, pod_path
from tests.sim.kubelet import KubeletSettings
from tests.sim.node import NodeSpec, SimNode, free_port
from tests.sim.processes import Child, console_script, write_kubeconfig
from tests.sim.queue import QueueSettings
from tests.sim.schedconfig import SchedulerConfig, load_scheduler_config
from tests.sim.scheduler import SimScheduler, pod_key
from tests.sim.waiting import wait_until
from vcuda.names import Names

_WEBHOOK_TLS = Path(__file__).parents[1] / "integration" / "extender" / "tls"
"""The throwaway webhook certificate (localhost, 127.0.0.1) the simulated API server trusts."""

__all__ = ["DEMO_NODES", "MIXED_CONFIG", "MIXED_NODE", "ClusterSpec", "PodState", "SimCluster", "pod_state"]

log = logging.getLogger(__name__)

DEMO_NODES = (
    NodeSpec("sim-h100-a", "h100x8"),
    NodeSpec("sim-h100-b", "h100x8"),
    NodeSpec("sim-a10", "a10x4"),
)


MIXED_CONFIG = """\
# NVIDIA's device-plugin config with kube-vgpu's section (docs/nvidia-plugin.md): one GPU, one mode.
version: v1
flags:
  migStrategy: none
sharing:
  timeSlicing:
    resources:
      - name: nvidia.com/gpu
        rename: nvidia.com/gpu.shared
        replicas: 4
        devices: [3]
kubeVgpu:
  vcudaDevices: [0, 1]
  defaultMode: whole
  timeSlicing:
    isolation: true       # each replica gets the shim: a quarter of the GPU's memory and compute
"""
"""GPUs 0-1 as vcuda shares, GPU 2 whole (``nvidia.com/gpu``), GPU 3 as four time-sliced replicas
(``nvidia.com/gpu.shared``), isolated by the shim."""
MIXED_NODE = NodeSpec(
    "sim-mixed", "a10x4", plugin_config=MIXED_CONFIG, resources=("nvidia.com/gpu", "nvidia.com/gpu.shared")
)
"""A mixed node: shares, a whole GPU and time-sliced replicas on one node (4 x A10)."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: tuple[NodeSpec, ...] = DEMO_NODES
    gpu_policy: str = "spread"
    node_policy: str = "binpack"
    domain: str = "nvidia.com"
    kubelet: KubeletSettings = field(default_factory=KubeletSettings)
    queue: QueueSettings = field(
        default_factory=lambda: QueueSettings(initial_backoff_s=0.2, max_backoff_s=2.0)
    )
    extender_log_level: str = "info"
    default_scheduler: bool = False
    """Also run a plain ``default-scheduler`` (no extender), as a second-scheduler cluster has: it places pods
    that name no scheduler, such as stock ``nvidia.com/gpu`` pods (whole GPUs and replicas, counted by
    ``NodeResourcesFit`` against the node's allocatable)."""
    ready_timeout_s: float = 0.0
    """How long start-up waits for every node; 0 scales with the node count (plugins start in parallel)."""


@dataclass(frozen=True, slots=True)
class PodState:
    """Where a pod stands: ``running``, ``failed``, ``unschedulable``, ``rejected`` (webhook), ``blocked`` (a
    container cannot start: PreStartContainer refused) or ``pending``."""

    phase: str
    node: str = ""
    message: str = ""


def pod_state(pod: Obj) -> PodState:
    status, node = pod.get("status") or {}, (pod.get("spec") or {}).get("nodeName") or ""
    phase = status.get("phase") or "Pending"
    if phase == "Running":
        return PodState("running", node)
    if phase == "Failed":
        return PodState("failed", node, f"{status.get('reason', '')}: {status.get('message', '')}")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" and not node:
            # A scheduling error (a refused bind, an extender error) is retried after backoff: still pending.
            kind = "unschedulable" if condition.get("reason") == "Unschedulable" else "pending"
            return PodState(kind, "", condition.get("message", ""))
    waiting = [
        c["state"]["waiting"]
        for c in status.get("containerStatuses") or []
        if "waiting" in c.get("state", {})
    ]
    message = "; ".join(f"{w.get('reason')}: {w.get('message')}" for w in waiting)
    if any(w.get("reason") == "CreateContainerError" for w in waiting):
        return PodState(
            "blocked", node, message
        )  # PreStartContainer refused; the kubelet retries with backoff
    return PodState("pending", node, message)


class SimCluster:
    def __init__(self, spec: ClusterSpec, workdir: Path) -> None:
        self.spec, self.workdir = spec, workdir
        self.names = Names(spec.domain)
        self.key = KEYRING  # verifies what the extender signs with the private key in key_file
        self.key_file = workdir / "assignment.key"
        self.public_key_file = workdir / "assignment-public.pem"  # what the nodes get
        self.apiserver = SimApiServer()
        self.api: KubeApi | None = None
        self.nodes: dict[str, SimNode] = {}
        self.extender_port = free_port()
        self.extender_metrics_port, self.extender_webhook_port = free_port(), free_port()
        self.extender: Child | None = None
        self.scheduler: SimScheduler | None = None
        self.dra_scheduler: SimDraScheduler | None = None
        self._dra_task: asyncio.Task[None] | None = None
        self.default_scheduler: SimScheduler | None = None
        self.rejected: dict[str, str] = {}
        self._scheduler_task: asyncio.Task[None] | None = None
        self._default_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def extender_url(self) -> str:
        """The scheduling verbs (loopback, as the sidecar's); health and metrics are on
        :attr:`extender_metrics_url`, the webhook on :attr:`extender_webhook_url` (HTTPS)."""
        return f"http://127.0.0.1:{self.extender_port}"

    @property
    def extender_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.extender_metrics_port}"

    @property
    def extender_webhook_url(self) -> str:
        return f"https://localhost:{self.extender_webhook_port}"

    @property
    def kube(self) -> KubeApi:
        assert self.api is not None, "cluster not started"
        return self.api

    async def __aenter__(self) -> "SimCluster":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_private_key(self.key_file)
        write_public_key(self.public_key_file)
        await asyncio.to_thread(self.apiserver.start)
        self.api = KubeApi(self.apiserver.url)
        kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", self.apiserver.url)
        self.extender = self._extender_child(kubeconfig)
        for spec in self.spec.nodes:
            self.nodes[spec.name] = self._new_node(spec, kubeconfig)
        await asyncio.gather(self.extender.start(), *(n.start() for n in self.nodes.values()))
        timeout = self.spec.ready_timeout_s or max(30.0, 3.0 * len(self.nodes))
        await asyncio.gather(
            self.wait_extender_ready(timeout), *(n.wait_ready(timeout) for n in self.nodes.values())
        )
        await self._start_scheduler()
        await self._start_dra()

    async def _start_dra(self) -> None:
        """DRA nodes: the chart's DeviceClasses, and the default scheduler's DRA path for their pods."""
        dra_nodes = [s.name for s in self.spec.nodes if s.front_end == "dra"]
        if not dra_nodes:
            return
        for device_class in device_classes(self.spec.domain):
            await self.kube.create("deviceclasses", device_class)
        self.dra_scheduler = SimDraScheduler(self.kube, dra_nodes)
        self._dra_task = asyncio.create_task(self.dra_scheduler.run())

    def _new_node(self, spec: NodeSpec, kubeconfig: Path) -> SimNode:
        return SimNode(spec, self.workdir / "nodes" / spec.name, self.kube, kubeconfig=kubeconfig,
                       key_file=self.public_key_file, names=self.names, kubelet=self.spec.kubelet)  # fmt: skip

    def _extender_child(self, kubeconfig: Path) -> Child:
        argv = [
            *console_script("kube-vgpu-extender"),
            "--host=127.0.0.1",
            f"--port={self.extender_port}",
            f"--metrics-port={self.extender_metrics_port}",
            f"--webhook-port={self.extender_webhook_port}",
            f"--tls-cert-file={_WEBHOOK_TLS / 'fake-webhook.crt'}",
            f"--tls-key-file={_WEBHOOK_TLS / 'fake-webhook.key'}",
            f"--resource-domain={self.spec.domain}",
            f"--assignment-key-file={self.key_file}",
            f"--gpu-policy={self.spec.gpu_policy}",
            f"--node-policy={self.spec.node_policy}",
            f"--kubeconfig={kubeconfig}",
            f"--log-level={self.spec.extender_log_level}",
        ]
        return Child("extender", argv, {"KUBECONFIG": str(kubeconfig)}, self.workdir / "extender.log")

    async def _start_scheduler(self) -> None:
        config = load_scheduler_config(url_prefix=f"{self.extender_url}/scheduler")
        self.scheduler = SimScheduler(self.kube, config, queue=self.spec.queue)
        self._scheduler_task = asyncio.create_task(self.scheduler.run())
        if self.spec.default_scheduler:
            plain = SchedulerConfig(scheduler_name="default-scheduler", extenders=())
            self.default_scheduler = SimScheduler(self.kube, plain, queue=self.spec.queue, seed=1)
            self._default_task = asyncio.create_task(self.default_scheduler.run())

    async def stop(self) -> None:
        for task in (self._dra_task, self._scheduler_task, self._default_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for scheduler in (self.scheduler, self.default_scheduler):
            if scheduler is not None:
                await scheduler.aclose()
        await asyncio.gather(*(n.stop() for n in self.nodes.values()), return_exceptions=True)
        if self.extender is not None:
            await self.extender.stop()
        if self._session is not None:
            await self._session.close()
        if self.api is not None:
            await self.api.aclose()
        await asyncio.to_thread(self.apiserver.stop)

    # --- components ---------------------------------------------------------------------------------

    async def http(self, method: str, url: str, body: bytes | None = None) -> tuple[int, str]:
        """A plain HTTP call to a component (status, body); status 0 when it cannot be reached."""
        if self._session is None:
            trust = ssl.create_default_context(cafile=str(_WEBHOOK_TLS / "fake-webhook.crt"))
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(ssl=trust)
            )
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            async with self._session.request(method, url, data=body, headers=headers) as reply:
                return reply.status, await reply.text()
        except (aiohttp.ClientError, TimeoutError) as err:
            return 0, str(err)

    async def wait_extender_ready(self, timeout_s: float = 30.0) -> None:
        async def ready() -> bool:
            assert self.extender is not None
            if not self.extender.alive:
                raise AssertionError(f"extender exited:\n{self.extender.log_tail()}")
            status, _ = await self.http("GET", f"{self.extender_metrics_url}/readyz")
            return status == 200

        await wait_until(ready, timeout_s=timeout_s, what="the extender to list the cluster")

    async def restart_extender(self, *, kill: bool = True) -> None:
        assert self.extender is not None
        await self.extender.stop(kill=kill)
        await self.extender.start()
        await self.wait_extender_ready()

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    async def remove_node(self, name: str) -> list[str]:
        """The node disappears: its plugin and kubelet stop, the Node object is deleted, and (as the pod
        garbage collector would) every pod bound to it is deleted. Returns those pods' keys."""
        node = self.nodes.pop(name)
        await node.stop()
        with contextlib.suppress(ApiError):
            await self.kube.delete(f"/api/v1/nodes/{name}")
        orphans = [p for p in await self.kube.list("pods") if (p.get("spec") or {}).get("nodeName") == name]
        for pod in orphans:
            with contextlib.suppress(ApiError):
                await self.kube.delete(
                    pod_path(pod["metadata"].get("namespace", "default"), pod["metadata"]["name"])
                )
        return [pod_key(p) for p in orphans]

    # --- pods -----------------------------------------------------------------------------------------

    async def admission_review(self, pod: Obj) -> tuple[bool, str]:
        """The extender's validating webhook on a CREATE, as the API server would call it."""
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": {"uid": str(uuid.uuid4()), "operation": "CREATE", "object": pod,
                              "kind": {"group": "", "version": "v1", "kind": "Pod"},
                              "resource": {"group": "", "version": "v1", "resource": "pods"},
                              "namespace": pod["metadata"].get("namespace", "default")}}  # fmt: skip
        body = json.dumps(review).encode()
        status, text = await self.http("POST", f"{self.extender_webhook_url}/validate", body)
        if status != 200:
            raise AssertionError(f"the extender's webhook answered {status}: {text[:300]}")
        response = json.loads(text)["response"]
        return bool(response.get("allowed")), str((response.get("status") or {}).get("message", ""))

    async def submit(self, pod: Obj, *, webhook: bool = True) -> bool:
        """Create the pod unless the webhook denies it (then the denial is in :attr:`rejected`)."""
        pod = json.loads(json.dumps(pod))
        pod.setdefault("metadata", {}).setdefault("namespace", "default")
        if webhook:
            allowed, message = await self.admission_review(pod)
            if not allowed:
                self.rejected[pod_key(pod)] = message
                return False
        await self.kube.create("pods", pod)
        return True

    async def delete_pod(self, key: str, *, force: bool = False) -> None:
        """``kubectl delete``: as the real kubelet does for a graceful deletion, the pod's end is reported
        first (phase ``Failed``: its containers were killed), then the object goes. ``force``: the object goes
        at once (``--force --grace-period=0``), nothing reported."""
        namespace, name = key.split("/", 1)
        if not force:
            ended = {"status": {"phase": "Failed", "reason": "Terminated", "message": "deleted (sim)"}}
            await self.kube.patch(pod_path(namespace, name) + "/status", ended)
        await self.kube.delete(pod_path(namespace, name))

    async def pods(self) -> dict[str, Obj]:
        return {pod_key(p): p for p in await self.kube.list("pods")}

    async def states(self) -> dict[str, PodState]:
        out = {key: pod_state(p) for key, p in (await self.pods()).items()}
        out.update({key: PodState("rejected", "", msg) for key, msg in self.rejected.items()})
        return out

    async def wait_settled(self, keys: list[str], *, timeout_s: float = 30.0,
                           settled: tuple[str, ...] = ("running", "failed", "unschedulable", "rejected", "blocked")) -> dict[str, PodState]:  # fmt: skip
        """Wait until each pod is in one of the ``settled`` states; return every pod's state."""

        async def done() -> dict[str, PodState] | None:
            states = await self.states()
            return states if all(k in states and states[k].phase in settled for k in keys) else None

        try:
            return await wait_until(
                done, timeout_s=timeout_s, what=f"{len(keys)} pods to settle", every_s=0.1
            )
        except AssertionError as err:
            states = await self.states()
            stuck = {k: states.get(k) for k in keys if k not in states or states[k].phase not in settled}
            raise AssertionError(f"{err}; not settled: {dict(list(stuck.items())[:10])}") from err

    def logs(self) -> dict[str, str]:
        out = {"extender": self.extender.log_tail(80) if self.extender else ""}
        out.update({f"plugin-{n}": node.plugin.log_tail(80) for n, node in self.nodes.items()})
        return out
