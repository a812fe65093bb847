"""DRA driver benchmarks (docs/dra.md "Node side").

- ``dra_prepare_p99``: the ``NodePrepareResources`` round trip as the (fake) kubelet sees it, over real gRPC on
  Unix sockets (``v1``), one claim per call as the kubelet sends a pod's claims: the agent in DRA mode on an
  8 x H100 node, ``CLAIMS`` claims of a 10 % / 1 GiB share each (spread over the GPUs), allocated in kmock and
  read by the driver through the real client. Each prepare reads the claim, plans it, writes the shim config,
  usage file, node record directory, placement lists, the CDI spec and the checkpoint (twice, fsynced).
- ``dra_unprepare_p99``: the matching ``NodeUnprepareResources`` round trips, in reverse order.
"""

import asyncio
import contextlib
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from plugin.dra.claims import ApiClaims
from plugin.kube import ApiCluster
from plugin.podresources import Listing
from plugin.wiring import Timings, build_agent
from tests.bench.bench_plugin import _node
from tests.builders.dra import DRIVER, GIB, claim, dev, result
from tests.builders.plugin import VERIFIER
from tests.fakes.dra_kubelet import ClaimInfo, FakeDraKubelet
from tests.fakes.gpu_source import FakeGpuSource
from tests.fakes.kmock import KmockCluster
from tests.fixtures.plugin_env import make_settings

CLAIMS = 80


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def _no_pod_resources() -> Listing:
    return Listing(())


async def _latencies(cluster: KmockCluster, root: Path) -> tuple[list[float], list[float]]:
    node = _node(8, "NVIDIA H100 80GB HBM3", 81559)
    resource: Any = client.ResourceV1Api(cluster.api_client())
    refs = []
    for i in range(CLAIMS):
        body = claim(f"bench-{i:03d}", pods=[(f"p{i}", f"pod-{i:04d}")])
        body["status"]["allocation"]["devices"]["results"] = [
            result(dev(node.gpus[i % 8]), memory=GIB, cores=10)
        ]
        del body["metadata"]["uid"]
        resource.create_namespaced_resource_claim("default", body, _preload_content=False)
        got = json.loads(
            resource.read_namespaced_resource_claim(f"bench-{i:03d}", "default", _preload_content=False).data
        )
        refs.append(
            ClaimInfo("default", got["metadata"]["name"], got["metadata"]["uid"], frozenset({DRIVER}))
        )
    settings = make_settings(
        root, front_end="dra", dra_registry_dir=root / "reg", dra_plugins_dir=root / "plugins"
    )
    kubelet = FakeDraKubelet(settings.dra_registry_dir, cluster.api_client())
    await kubelet.start()
    agent = build_agent(
        settings,
        source=FakeGpuSource(node),
        cluster=ApiCluster(cluster.api_client()),
        pod_resources=_no_pod_resources,
        verifier=VERIFIER,
        timings=Timings(kubelet_poll_s=0.05),
        claims=ApiClaims(cluster.api_client()),
    )
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await kubelet.wait_registered(DRIVER, timeout=10)
        prepare = [await _timed(kubelet.call_prepare(DRIVER, [r])) for r in refs]
        unprepare = [await _timed(kubelet.call_unprepare(DRIVER, [r])) for r in reversed(refs)]
        return prepare, unprepare
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await kubelet.stop()


async def _timed(call: Any) -> float:
    started = time.perf_counter()
    reply = await call
    elapsed = (time.perf_counter() - started) * 1000
    errors = [getattr(r, "error", "") for r in reply.claims.values()]
    assert errors == [""], errors
    return elapsed


def run() -> list[tuple[str, float, str]]:
    root = Path(tempfile.mkdtemp(prefix="kvd-", dir="/tmp"))
    try:
        with KmockCluster() as cluster:
            prepare, unprepare = asyncio.run(_latencies(cluster, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [
        ("dra_prepare_p99", round(_p99(prepare), 2), "ms"),
        ("dra_unprepare_p99", round(_p99(unprepare), 2), "ms"),
    ]
