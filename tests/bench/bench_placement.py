"""placement_node_8gpu_p99: place_pod on one node of 8 H100s holding 50 existing allocations."""

import random
import time

from extender.core.load import NodeLoad, reserve
from extender.core.placement import Placement, place_pod
from tests.builders.vcuda import nvswitch_node, request
from vcuda.model import Policy

ROUNDS = 5000


def _busy_node_load() -> NodeLoad:
    node = nvswitch_node(8)
    rng = random.Random(7)
    load: NodeLoad = {}
    placed = 0
    while placed < 50:
        result = place_pod(node, load, request((rng.randint(1, 10), rng.randint(64, 1500))),
                           gpu_policy=Policy.BINPACK, node_policy=Policy.BINPACK)  # fmt: skip
        if isinstance(result, Placement):
            load = reserve(load, result.containers)
            placed += 1
    return load


def run() -> list[tuple[str, float, str]]:
    node, load = nvswitch_node(8), _busy_node_load()
    pods = [request((30, 4096)), request((10, 1024), (20, 2048)), request((200, 0))]
    samples = []
    for i in range(ROUNDS):
        req = pods[i % len(pods)]
        start = time.perf_counter_ns()
        place_pod(node, load, req, gpu_policy=Policy.BINPACK, node_policy=Policy.BINPACK)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return [
        ("placement_node_8gpu_p99", samples[int(len(samples) * 0.99)] / 1000, "us"),
        ("placement_node_8gpu_p50", samples[len(samples) // 2] / 1000, "us"),
    ]
