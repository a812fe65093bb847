"""kubectl-vgpu's KubeClusterReader through the official client against the simulated API server
(tests/fakes/kmock.py, a kmock emulator): the same tables as the fake-API tests, from real HTTP lists."""

import json

import pytest

from kube_vgpu_kubectl.cli import KubeClusterReader, parse_args, run
from tests.builders.kubectl import NODES, PODS

fake_kmock = pytest.importorskip("tests.fakes.kmock")


@pytest.fixture(scope="module")
def cluster():
    with fake_kmock.KmockCluster() as running:
        core = running.core()
        for node in NODES:
            core.create_node(node)
        for pod in PODS:
            core.create_namespaced_pod(pod["metadata"]["namespace"], pod)
        yield running


def test_nodes_from_the_simulated_api_server(cluster):
    doc = json.loads(run(parse_args(["nodes", "-o", "json"]), KubeClusterReader(cluster.api_client())))
    got = [
        (g["node"], g["index"], g["cores_allocated"], g["memory_allocated_mib"], g["pods"])
        for g in doc["gpus"]
    ]
    assert got == [
        ("a", 0, 60, 20992, ["ml/train", "web/forged"]),
        ("a", 1, 80, 30720, ["ml/serve", "ml/train"]),
        ("b", 0, 0, 0, []),
    ]


def test_pods_of_one_namespace_from_the_simulated_api_server(cluster):
    doc = json.loads(
        run(parse_args(["pods", "-n", "ml", "-o", "json"]), KubeClusterReader(cluster.api_client()))
    )
    assert [(p["pod"], p["phase"]) for p in doc["pods"]] == [
        ("done", "assumed"),
        ("oops", "failed"),
        ("serve", "assumed"),
        ("train", "allocated"),
    ]
