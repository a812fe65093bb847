# mypy: disable-error-code="no-untyped-call"
"""The plugin under test, wired to fakes over real transports: a FakeKubelet on Unix sockets (gRPC), kmock as
the API server (HTTP) and a FakeGpuSource (or the fake NVML), all in a short temporary directory."""

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from plugin.agent import Agent
from plugin.core.gpu import GpuSource
from plugin.kubelet import PodResourcesClient
from plugin.settings import Settings
from plugin.wiring import Timings, build_agent
from tests.fakes.kubelet import Admitted, FakeKubelet
from tests.kmock_cluster import KmockCluster
from tests.signing_keys import decode_for
from tests.unit.plugin.builders import NAMES, VERIFIER, FakeGpuSource, Share, assignment, h100x8, pod_body
from vcuda import names as vnames
from vcuda.annotations import apply_moves, decode_status
from vcuda.shimfile import ShimConfig, decode_config

NODE = "node-1"
STOP_S = 10.0


@pytest.fixture
def kmock_cluster():
    """A fresh API server per test: kmock keeps every version of every object, so a shared one slows down."""
    with KmockCluster() as cluster:
        yield cluster


@pytest.fixture
def short_dir():
    """Unix socket paths must stay under 108 bytes, so not tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="kv-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class PluginEnv:
    """One node: the agent running, a FakeKubelet, kmock with the Node object; helpers read like a story."""

    def __init__(self, root: Path, cluster: KmockCluster, source: GpuSource, settings: Settings) -> None:
        self.root = root
        self.cluster = cluster
        self.core = cluster.core()
        self.source = source
        self.settings = settings
        self.kubelet = FakeKubelet(settings.device_plugin_dir, settings.pod_resources_socket)
        self.pod_resources = PodResourcesClient(settings.pod_resources_socket, NAMES.core)
        self.agent: Agent | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from plugin.kube import ApiCluster

        await self.kubelet.start()
        api = ApiCluster(self.cluster.api_client())
        self.agent = build_agent(
            self.settings,
            source=self.source,
            cluster=api,
            pod_resources=self.pod_resources.held,
            verifier=VERIFIER,
            timings=Timings(kubelet_poll_s=0.05, node_resync_s=0.2),
        )
        self.task = asyncio.get_running_loop().create_task(self.agent.run())
        await self.kubelet.wait_registered(NAMES.core, timeout=5)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            done, _ = await asyncio.wait([self.task], timeout=STOP_S)
            assert done, f"the agent did not stop within {STOP_S} s of being cancelled"
            if not self.task.cancelled():
                self.task.exception()  # retrieved: a test that expects the agent to fail checks it itself
        await self.kubelet.stop()
        await self.pod_resources.close()

    # --- API objects ---

    def create_pod(
        self,
        name: str,
        containers: Sequence[tuple[str, int, int]],
        shares: Mapping[str, Iterable[Share]],
        *,
        namespace: str = "default",
        annotations: Mapping[str, str] | None = None,
        core_limit: Mapping[str, int] | None = None,
        bind: bool = True,
        init: Sequence[tuple[str, int, int]] = (),
    ) -> dict[str, Any]:
        body = pod_body(name, containers, namespace=namespace, annotations=annotations, init=init)
        body["metadata"]["annotations"][NAMES.assignment] = assignment(NODE, shares, core_limit, pod=body)
        self.core.create_namespaced_pod(namespace, body, _preload_content=False)
        if bind:
            self.cluster.bind(namespace, name, NODE)
        return self.pod(name, namespace)

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            self.core.read_namespaced_pod(name, namespace, _preload_content=False).data
        )
        return doc

    def node(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.core.read_node(NODE, _preload_content=False).data)
        return doc

    def status(self, name: str, namespace: str = "default"):
        text = self.pod(name, namespace)["metadata"]["annotations"].get(NAMES.status)
        return decode_status(text) if text else None

    def recorded(self, name: str, namespace: str = "default"):
        """The pod's assignment as the plugin placed it: the extender's signed record with the swaps the
        plugin recorded in its status (it never re-signs)."""
        pod, status = self.pod(name, namespace), self.status(name, namespace)
        return apply_moves(decode_for(pod, NAMES), status.moved if status else ())

    # --- kubelet side ---

    async def admit(
        self, name: str, containers: Sequence[tuple[str, int]], namespace: str = "default", **kw: Any
    ) -> list[Admitted]:
        return await self.kubelet.admit(namespace, name, containers, NAMES.core, **kw)

    async def start_container(self, name: str, container: str, namespace: str = "default") -> None:
        await self.kubelet.start_container(namespace, name, container, NAMES.core)

    def config_of(self, admitted: Admitted) -> ShimConfig:
        """The shim config the container would read: the file behind its CONTAINER_CONFIG_PATH mount."""
        assert admitted.response is not None
        mount = next(m for m in admitted.response.mounts if m.container_path == vnames.CONTAINER_CONFIG_PATH)
        return decode_config(Path(mount.host_path).read_bytes())


async def eventually(predicate: Any, timeout: float = 10.0) -> None:
    """Re-check ``predicate`` (an API read) until it holds; bounded by ``timeout``. The API server has no
    push channel to the test, so this bounded poll is the only way to observe a patch."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def make_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "node_name": NODE,
        "device_plugin_dir": root / "dp",
        "pod_resources_socket": root / "pr" / "kubelet.sock",
        "state_dir": root / "state",
        "cdi_dir": root / "cdi",
        "shim_dir": root / "shim",
        "nvidia_driver_root": root / "driver",
        "reclaim_grace_seconds": 0.0,
        "reclaim_interval_seconds": 3600.0,
        "health_probe_seconds": 0.05,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def env_factory(short_dir: Path, kmock_cluster: KmockCluster) -> AsyncIterator[Any]:
    """``env = await env_factory(source=None, **settings)``: a running plugin on a fresh Node."""
    created: list[PluginEnv] = []

    async def make(source: GpuSource | None = None, **overrides: Any) -> PluginEnv:
        root = short_dir / str(len(created))
        _reset_cluster(kmock_cluster)
        env = PluginEnv(
            root, kmock_cluster, source or FakeGpuSource(h100x8()), make_settings(root, **overrides)
        )
        created.append(env)
        await env.start()
        return env

    yield make
    for env in created:
        await env.stop()


def _reset_cluster(cluster: KmockCluster) -> None:
    core = cluster.core()
    for pod in json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]:
        core.delete_namespaced_pod(
            pod["metadata"]["name"], pod["metadata"]["namespace"], _preload_content=False
        )
    with contextlib.suppress(Exception):
        core.delete_node(NODE, _preload_content=False)
    core.create_node(
        {"metadata": {"name": NODE}, "status": {"capacity": {"cpu": "64"}}}, _preload_content=False
    )
