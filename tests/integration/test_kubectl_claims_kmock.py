"""``kubectl vgpu claims`` through the official client's ``ResourceV1Api`` against the simulated API server
(kmock, real HTTP); the pure cases are in tests/unit/test_kubectl_claims.py."""

import json
from typing import Any

from kube_vgpu_kubectl.cli import KubeClusterReader, parse_args, run
from tests.builders.dra_claims import allocated, share
from tests.fakes.kmock import KmockCluster


def test_claims_through_the_official_client_from_the_simulated_api_server() -> None:
    with KmockCluster() as cluster:
        from kubernetes.client import ResourceV1Api

        api: Any = ResourceV1Api(cluster.api_client())
        body = allocated("a", share("30", "4Gi"))
        body["apiVersion"], body["kind"] = "resource.k8s.io/v1", "ResourceClaim"
        api.create_namespaced_resource_claim("default", body, _preload_content=False)
        doc = json.loads(
            run(parse_args(["claims", "-A", "-o", "json"]), KubeClusterReader(cluster.api_client()))
        )
    assert [(c["claim"], c["memory_mib"]) for c in doc["claims"]] == [("a", "4096")]
