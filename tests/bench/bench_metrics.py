"""exporter_scrape_ms_200c: one full scrape (read, attribute, render the text format) of a node with
200 GPU containers on 8 GPUs, 300 NVML processes (cgroup v2 systemd), fake /proc under a temporary root."""

import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from plugin.metrics.exporter import NodeCollector
from plugin.metrics.sources import ContainerName, ProcessSample, XidTally
from tests.fakes.node import (
    GIB,
    FakeContainer,
    FakeNodeFs,
    FakePodResources,
    FakeSlot,
    FakeTelemetry,
    cid,
    h100,
    uid,
    v2_systemd,
)
from vcuda.model import GpuUuid

CONTAINERS, GPUS, ROUNDS = 200, 8, 30


def _node(root: Path) -> NodeCollector:
    fs = FakeNodeFs(root)
    live: set[ContainerName] = set()
    samples: list[ProcessSample] = []
    for n in range(CONTAINERS):
        uuids = [f"GPU-h100-{n % GPUS}"] + ([f"GPU-h100-{(n + 1) % GPUS}"] if n % 10 == 0 else [])
        host_pids = [10_000 + 2 * n] + ([10_001 + 2 * n] if n % 2 else [])
        slots = [
            FakeSlot(i + 1, [(GIB, 1000, 10**9, 0)] * len(uuids), host_pid=p) for i, p in enumerate(host_pids)
        ]
        c = FakeContainer(uid(n), "bench", f"pod-{n}", "main", [(u, 4 * GIB, 10, 20) for u in uuids], slots)
        fs.add_container(c)
        live.add(ContainerName(c.namespace, c.pod, c.container))
        for p in host_pids:
            fs.add_process(p, v2_systemd(uid(n), cid(n)))
            samples.append(ProcessSample(GpuUuid(uuids[0]), p, GIB, 0.05))
    telemetry = FakeTelemetry([h100(i, used=30 * GIB, util=0.7) for i in range(GPUS)], samples)
    return NodeCollector(
        node="bench-node",
        state_dir=fs.state_dir,
        root=root,
        telemetry=telemetry,
        pod_resources=FakePodResources(live),
        health=XidTally(),
    )


def run() -> list[tuple[str, float, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_node(Path(tmp)))
        generate_latest(registry)  # warm the config cache, as every scrape after the first
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            body = generate_latest(registry)
            times.append(time.perf_counter() - start)
    times.sort()
    return [
        ("exporter_scrape_ms_200c", times[len(times) // 2] * 1000, "ms"),
        ("exporter_scrape_bytes_200c", float(len(body)), "bytes"),
    ]
