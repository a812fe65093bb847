"""The generated bindings carry exactly the field numbers and types of k8s.io/kubelet's
``pkg/apis/deviceplugin/v1beta1/api.proto`` and ``pkg/apis/podresources/v1/api.proto``."""

import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from plugin.api.deviceplugin.v1beta1 import api_pb2 as dp
from plugin.api.podresources.v1 import api_pb2 as pr

S, B, I64, I32, U64, M = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_INT64, F.TYPE_INT32, F.TYPE_UINT64, F.TYPE_MESSAGE

TABLE = [
    (dp, "DevicePluginOptions", [("pre_start_required", 1, B), ("get_preferred_allocation_available", 2, B)]),
    (dp, "RegisterRequest", [("version", 1, S), ("endpoint", 2, S), ("resource_name", 3, S), ("options", 4, M)]),
    (dp, "ListAndWatchResponse", [("devices", 1, M)]),
    (dp, "TopologyInfo", [("nodes", 1, M)]),
    (dp, "NUMANode", [("ID", 1, I64)]),
    (dp, "Device", [("ID", 1, S), ("health", 2, S), ("topology", 3, M)]),
    (dp, "PreStartContainerRequest", [("devices_ids", 1, S)]),
    (dp, "PreferredAllocationRequest", [("container_requests", 1, M)]),
    (dp, "ContainerPreferredAllocationRequest",
     [("available_deviceIDs", 1, S), ("must_include_deviceIDs", 2, S), ("allocation_size", 3, I32)]),
    (dp, "PreferredAllocationResponse", [("container_responses", 1, M)]),
    (dp, "ContainerPreferredAllocationResponse", [("deviceIDs", 1, S)]),
    (dp, "AllocateRequest", [("container_requests", 1, M)]),
    (dp, "ContainerAllocateRequest", [("devices_ids", 1, S)]),
    (dp, "CDIDevice", [("name", 1, S)]),
    (dp, "AllocateResponse", [("container_responses", 1, M)]),
    (dp, "ContainerAllocateResponse",
     [("envs", 1, M), ("mounts", 2, M), ("devices", 3, M), ("annotations", 4, M), ("cdi_devices", 5, M)]),
    (dp, "Mount", [("container_path", 1, S), ("host_path", 2, S), ("read_only", 3, B)]),
    (dp, "DeviceSpec", [("container_path", 1, S), ("host_path", 2, S), ("permissions", 3, S)]),
    (pr, "ListPodResourcesResponse", [("pod_resources", 1, M)]),
    (pr, "PodResources", [("name", 1, S), ("namespace", 2, S), ("containers", 3, M), ("cpu_ids", 4, I64),
                          ("memory", 5, M)]),
    (pr, "ContainerResources", [("name", 1, S), ("devices", 2, M), ("cpu_ids", 3, I64), ("memory", 4, M),
                                ("dynamic_resources", 5, M)]),
    (pr, "ContainerMemory", [("memory_type", 1, S), ("size", 2, U64), ("topology", 3, M)]),
    (pr, "ContainerDevices", [("resource_name", 1, S), ("device_ids", 2, S), ("topology", 3, M)]),
    (pr, "DynamicResource", [("claim_name", 2, S), ("claim_namespace", 3, S), ("claim_resources", 4, M)]),
    (pr, "ClaimResource", [("cdi_devices", 1, M), ("driver_name", 2, S), ("pool_name", 3, S),
                           ("device_name", 4, S), ("share_id", 5, S)]),
    (pr, "GetPodResourcesRequest", [("pod_name", 1, S), ("pod_namespace", 2, S)]),
    (pr, "AllocatableResourcesResponse", [("devices", 1, M), ("cpu_ids", 2, I64), ("memory", 3, M)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("module", "message", "fields"), TABLE, ids=[f"{m.__name__.split('.')[2]} {n}" for m, n, _ in TABLE]
)
def test_message_fields_match_the_contract_table(module, message, fields):
    descriptor = module.DESCRIPTOR.message_types_by_name[message]
    assert [(f.name, f.number, f.type) for f in descriptor.fields] == fields


def test_packages_and_services_give_the_kubelet_method_paths():
    assert dp.DESCRIPTOR.package == "v1beta1"
    assert pr.DESCRIPTOR.package == "v1"
    methods = {f"/{s.full_name}/{m.name}" for s in dp.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert methods == {
        "/v1beta1.Registration/Register",
        "/v1beta1.DevicePlugin/GetDevicePluginOptions",
        "/v1beta1.DevicePlugin/ListAndWatch",
        "/v1beta1.DevicePlugin/GetPreferredAllocation",
        "/v1beta1.DevicePlugin/Allocate",
        "/v1beta1.DevicePlugin/PreStartContainer",
    }
    listed = {f"/{s.full_name}/{m.name}" for s in pr.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert listed == {"/v1.PodResourcesLister/List", "/v1.PodResourcesLister/GetAllocatableResources",
                      "/v1.PodResourcesLister/Get"}  # fmt: skip
