"""The DRA and plugin-registration bindings carry the field numbers and method paths of k8s.io/kubelet v0.37.2
(``pkg/apis/dra/v1``, ``dra/v1beta1``, ``pluginregistration/v1``): the wire contract with the kubelet."""

from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from plugin.api.dra.v1 import api_pb2 as v1
from plugin.api.dra.v1beta1 import api_pb2 as v1beta1
from plugin.api.pluginregistration.v1 import api_pb2 as reg

S, B, M = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_MESSAGE
DEVICE = [("request_names", 1, S), ("pool_name", 2, S), ("device_name", 3, S), ("cdi_device_ids", 4, S)]
COMMON = [
    ("NodePrepareResourcesRequest", [("claims", 1, M)]),
    ("NodePrepareResourcesResponse", [("claims", 1, M)]),
    ("NodePrepareResourceResponse", [("devices", 1, M), ("error", 2, S)]),
    ("NodeUnprepareResourcesRequest", [("claims", 1, M)]),
    ("NodeUnprepareResourcesResponse", [("claims", 1, M)]),
    ("NodeUnprepareResourceResponse", [("error", 1, S)]),
    ("Claim", [("namespace", 1, S), ("uid", 2, S), ("name", 3, S)]),
]
TABLE = [
    *[(v1, name, fields) for name, fields in COMMON],
    (v1, "Device", [*DEVICE, ("share_id", 5, S)]),
    *[(v1beta1, name, fields) for name, fields in COMMON],
    (v1beta1, "Device", DEVICE),
    (reg, "PluginInfo", [("type", 1, S), ("name", 2, S), ("endpoint", 3, S), ("supported_versions", 4, S)]),
    (reg, "RegistrationStatus", [("plugin_registered", 1, B), ("error", 2, S)]),
]


@pytest.mark.parametrize(
    ("module", "message", "fields"), TABLE, ids=[f"{m.DESCRIPTOR.package} {n}" for m, n, _ in TABLE]
)
def test_message_fields_match_the_kubelets(
    module: Any, message: str, fields: list[tuple[str, int, int]]
) -> None:
    descriptor = module.DESCRIPTOR.message_types_by_name[message]
    assert [(f.name, f.number, f.type) for f in descriptor.fields] == fields


def test_the_services_have_the_method_paths_the_kubelet_calls() -> None:
    def paths(module: Any) -> set[str]:
        return {
            f"/{s.full_name}/{m.name}" for s in module.DESCRIPTOR.services_by_name.values() for m in s.methods
        }

    assert paths(v1) == {
        "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources",
        "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeUnprepareResources",
    }
    assert paths(v1beta1) == {
        "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodePrepareResources",
        "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodeUnprepareResources",
    }
    assert paths(reg) == {
        "/pluginregistration.Registration/GetInfo",
        "/pluginregistration.Registration/NotifyRegistrationStatus",
    }
