"""PodResources adapter: response conversion. The gRPC round trip, TTL cache and failures are in
tests/integration/test_metrics_podresources.py (a fake kubelet on a tmp_path Unix socket)."""

from types import SimpleNamespace
from typing import Any

import pytest

from plugin.metrics.podresources import claims_from_response, live_from_response
from plugin.metrics.sources import ContainerName


def pod(ns: str, name: str, *containers: str) -> SimpleNamespace:
    return SimpleNamespace(namespace=ns, name=name, containers=[SimpleNamespace(name=c) for c in containers])


def test_every_container_of_every_pod_is_live():
    live = live_from_response([pod("a", "p", "c1", "c2"), pod("b", "q"), pod("b", "r", "c")])
    assert live == {
        ContainerName("a", "p", "c1"),
        ContainerName("a", "p", "c2"),
        ContainerName("b", "r", "c"),
    }


def _dra_pod(ns: str, name: str, containers: dict[str, list[str]]) -> Any:
    """containers: name -> CDI device names of its dynamic resources, as real protobuf messages."""
    from plugin.api.podresources.v1 import api_pb2

    return api_pb2.PodResources(
        name=name,
        namespace=ns,
        containers=[
            api_pb2.ContainerResources(
                name=c,
                dynamic_resources=[
                    api_pb2.DynamicResource(
                        claim_name="claim",
                        claim_namespace=ns,
                        claim_resources=[
                            api_pb2.ClaimResource(cdi_devices=[api_pb2.CDIDevice(name=n) for n in names])
                        ],
                    )
                ],
            )
            for c, names in containers.items()
        ],
    )


UID = "5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11"


def test_dra_containers_name_the_kube_vgpu_claims_they_use():
    ours = f"kube-vgpu.nvidia.com/claim={UID}-gpu-5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11"
    found = claims_from_response(
        [_dra_pod("a", "p", {"cuda": [ours, "gpu.nvidia.com/gpu=gpu-0"], "log": [], "other": ["k8s.io/x=y"]})]
    )
    assert found == {ContainerName("a", "p", "cuda"): frozenset({UID})}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("gpu.nvidia.com/claim=u-gpu-x", id="another driver"),
        pytest.param("kube-vgpu.nvidia.com/gpu=gpu-0", id="our device-plugin CDI kind"),
        pytest.param("kube-vgpu.nvidia.com/claim=../../etc-gpu-x", id="a path in the UID"),
        pytest.param("kube-vgpu.nvidia.com/claim=" + "u" * 80 + "-gpu-x", id="a UID too long"),
    ],
)
def test_other_cdi_devices_name_no_claim(name: str):
    assert claims_from_response([_dra_pod("a", "p", {"cuda": [name]})]) == {}
