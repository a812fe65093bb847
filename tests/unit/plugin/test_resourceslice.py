"""ResourceSlices from the node's GPUs (plugin.core.resourceslice).

Cases: 8 x H200 is one slice of 8 shareable devices with the pool's name, generation and count; capacity in
canonical quantities with a request policy whose default is the whole GPU; the API's policy rules hold for
every memory size; attributes use the standard names, semantic versions, no NUMA node when there is none,
the PCIe root only when known; NVLink-joined GPUs share ``nvlinkDomain``; an unhealthy GPU is tainted or
withdrawn; MIG GPUs become partitionable devices (counters in a slice of their own); the device limits of a
slice split large pools; a node without GPUs still publishes one empty slice.
"""

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.core.gpu import Gpu, NodeGpus
from plugin.core.resourceslice import (
    SliceOptions,
    UnhealthyPolicy,
    architecture,
    binary_quantity,
    device_name,
    nvlink_domains,
    pool_specs,
    semver,
)
from tests.builders.mig import a100
from tests.builders.plugin import gpus, h200x8
from vcuda.model import GpuUuid

DRIVER = "kube-vgpu.nvidia.com"


def options(**kwargs: Any) -> SliceOptions:
    return SliceOptions(**({"driver": DRIVER, "node": "node-1", "unhealthy": {}, "pcie_roots": {}} | kwargs))


def devices(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for s in specs for d in s.get("devices", [])]


def parse_binary(q: str) -> int:
    for i, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1):
        if q.endswith(suffix):
            return int(q[:-2]) << (10 * i)
    return int(q)


def test_eight_h200_are_one_slice_of_eight_shareable_devices() -> None:
    specs = pool_specs(h200x8(), options(), generation=3)
    assert len(specs) == 1
    spec = specs[0]
    assert spec["driver"] == DRIVER
    assert spec["nodeName"] == "node-1"
    assert spec["pool"] == {"name": "node-1", "generation": 3, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == [f"gpu-node-1-{i:04d}" for i in range(8)]
    assert all(d["allowMultipleAllocations"] is True for d in spec["devices"])


def test_capacity_is_canonical_and_its_default_is_the_whole_gpu() -> None:
    device = pool_specs(h200x8(), options(), 1)[0]["devices"][0]
    memory, cores = device["capacity"]["memory"], device["capacity"]["cores"]
    assert memory["value"] == "143771Mi"
    assert memory["requestPolicy"] == {
        "default": "143771Mi",
        "validRange": {"min": "256Mi", "max": "143771Mi", "step": "1Mi"},
    }
    assert cores == {
        "value": "100",
        "requestPolicy": {"default": "100", "validRange": {"min": "1", "max": "100", "step": "1"}},
    }


@given(st.integers(min_value=1, max_value=1 << 22))
def test_the_memory_policy_passes_the_api_servers_rules_for_any_size(memory_mib: int) -> None:
    node = gpus(1, memory_mib=memory_mib)
    memory = pool_specs(node, options(), 1)[0]["devices"][0]["capacity"]["memory"]
    value = parse_binary(memory["value"])
    policy = memory["requestPolicy"]
    low, high, step = (parse_binary(policy["validRange"][k]) for k in ("min", "max", "step"))
    default = parse_binary(policy["default"])
    assert value == memory_mib << 20
    assert 0 <= low <= default <= high <= value
    assert (default - low) % step == 0
    assert (high - low) % step == 0
    assert low + step <= value or value == low


def test_attributes_use_standard_names_and_semantic_versions() -> None:
    node = h200x8()
    roots = {node.gpus[0].uuid: "pci0000:00"}
    attrs = pool_specs(node, options(pcie_roots=roots), 1)[0]["devices"][0]["attributes"]
    assert attrs["uuid"] == {"string": "GPU-node-1-0000"}
    assert attrs["productName"] == {"string": "NVIDIA H200"}
    assert attrs["architecture"] == {"string": "Hopper"}
    assert attrs["computeCapability"] == {"version": "9.0.0"}
    assert attrs["driverVersion"] == {"version": "580.65.6"}
    assert attrs["cudaVersion"] == {"version": "13.0.0"}
    assert attrs["index"] == {"int": 0}
    assert attrs["resource.kubernetes.io/pciBusID"] == {"string": "0000:00:00.0"}
    assert attrs["resource.kubernetes.io/pcieRoot"] == {"string": "pci0000:00"}
    assert attrs["resource.kubernetes.io/numaNode"] == {"int": 0}
    assert len(attrs) + 2 <= 32  # attributes + capacities per device


def test_no_numa_node_and_no_pcie_root_when_unknown() -> None:
    node = gpus(1)
    lone = dataclasses.replace(node, gpus=(dataclasses.replace(node.gpus[0], numa_node=-1),))
    attrs = pool_specs(lone, options(), 1)[0]["devices"][0]["attributes"]
    assert "resource.kubernetes.io/numaNode" not in attrs
    assert "resource.kubernetes.io/pcieRoot" not in attrs


@pytest.mark.parametrize(
    ("raw", "bdf"),
    [
        pytest.param("00000000:1B:00.0", "0000:1b:00.0", id="NVML's 8-digit domain"),
        pytest.param("0001:3a:00.0", "0001:3a:00.0", id="already extended BDF"),
        pytest.param("1b:00.0", "0000:1b:00.0", id="no domain"),
    ],
)
def test_pci_bus_ids_are_extended_bdf(raw: str, bdf: str) -> None:
    node = gpus(1)
    one = dataclasses.replace(node, gpus=(dataclasses.replace(node.gpus[0], pci_bus_id=raw),))
    attrs = pool_specs(one, options(), 1)[0]["devices"][0]["attributes"]
    assert attrs["resource.kubernetes.io/pciBusID"] == {"string": bdf}


def test_nvlink_joined_gpus_share_a_domain_and_lone_gpus_have_none() -> None:
    node = gpus(4)
    a, b, c, _ = (g.uuid for g in node.gpus)
    joined = dataclasses.replace(
        node, links=tuple(lk for lk in node.links if {lk.a, lk.b} in ({a, b}, {b, c}))
    )
    found = [d["attributes"] for d in devices(pool_specs(joined, options(), 1))]
    assert {found[i]["nvlinkDomain"]["string"] for i in range(3)} == {a}
    assert "nvlinkDomain" not in found[3]


def test_nvlink_domains_join_transitively_and_ignore_pcie_only_links() -> None:
    node = gpus(3, nvlinks=0)
    assert nvlink_domains(node.links) == {}


def test_an_unhealthy_gpu_is_tainted_no_schedule() -> None:
    node = h200x8()
    bad = {str(node.gpus[2].uuid): "xid 79"}
    found = devices(pool_specs(node, options(unhealthy=bad), 1))
    assert len(found) == 8
    assert found[2]["taints"] == [{"key": f"{DRIVER}/unhealthy", "value": "xid-79", "effect": "NoSchedule"}]
    assert all("taints" not in d for i, d in enumerate(found) if i != 2)


def test_an_unhealthy_gpu_is_withdrawn_under_the_withdraw_policy() -> None:
    node = h200x8()
    bad = {str(node.gpus[2].uuid): "unreachable"}
    found = devices(pool_specs(node, options(unhealthy=bad, policy=UnhealthyPolicy.WITHDRAW), 1))
    assert [d["attributes"]["index"]["int"] for d in found] == [i for i in range(8) if i != 2]


def test_mig_gpus_are_partitionable_devices_with_counters_in_their_own_slice() -> None:
    mig_gpu = a100(0, "3g.20gb", "2g.10gb")
    plain = dataclasses.replace(a100(1), mig_enabled=False, mig_pending=False)
    node = NodeGpus((mig_gpu, plain), (), "580.95.05", "13.0")
    specs = pool_specs(node, options(), 5)
    assert [s["pool"]["resourceSliceCount"] for s in specs] == [2, 2]
    assert "devices" not in specs[0]
    assert specs[0]["sharedCounters"] == [
        {"name": "gpu-0-counters", "counters": {"memory": {"value": "40Gi"}}}
    ]
    found = {d["name"]: d for d in devices(specs)}
    assert sorted(found) == ["gpu-a1000001-0000", "mig-a1000000-1-0", "mig-a1000000-2-0"]
    mig = found["mig-a1000000-1-0"]
    assert mig["consumesCounters"] == [
        {"counterSet": "gpu-0-counters", "counters": {"memory": {"value": "19968Mi"}}}
    ]
    assert mig["attributes"]["profile"] == {"string": "3g.20gb"}
    assert mig["attributes"]["parentUUID"] == {"string": str(mig_gpu.uuid)}
    assert "allowMultipleAllocations" not in mig


def test_mig_device_names_are_the_node_sides() -> None:
    from plugin.core.dra import node_devices

    node = NodeGpus(
        (a100(0, "3g.20gb", "1g.5gb"), a100(1, mig_enabled=False, pending=False)),
        (),
        "5",
        "13.0",
    )
    published = [d["name"] for d in devices(pool_specs(node, options(), 1))]
    assert sorted(published) == sorted(node_devices(node.gpus))


def test_gpu_device_names_are_the_node_sides() -> None:
    from plugin.core.dra import device_name as node_side

    node = h200x8()
    assert [d["name"] for d in devices(pool_specs(node, options(), 1))] == [node_side(g) for g in node.gpus]


@pytest.mark.parametrize(
    "gpu",
    [
        pytest.param(a100(0, "1g.5gb", pending=False), id="MIG on, off after the next reset"),
        pytest.param(a100(0, mig_enabled=False, pending=True), id="MIG off, on after the next reset"),
    ],
)
def test_a_gpu_whose_mig_mode_is_pending_is_not_published(gpu: Gpu) -> None:
    """NVML's pending mode is the mode after the next reset: a GPU is served only when the two agree."""
    node = NodeGpus((gpu,), (), "580.95.05", "13.0")
    assert devices(pool_specs(node, options(), 1)) == []


def test_an_unhealthy_mig_parent_taints_every_instance() -> None:
    mig_gpu = a100(0, "1g.5gb", "1g.5gb")
    node = NodeGpus((mig_gpu,), (), "580.95.05", "13.0")
    sick = options(unhealthy={str(mig_gpu.uuid): "unreachable"})
    found = devices(pool_specs(node, sick, 1))
    assert [d["taints"][0]["value"] for d in found] == ["unreachable", "unreachable"]


@pytest.mark.parametrize(
    ("count", "unhealthy", "sizes"),
    [
        pytest.param(128, 0, [128], id="128 plain devices fit one slice"),
        pytest.param(130, 0, [128, 2], id="130 plain devices: two slices"),
        pytest.param(100, 1, [64, 36], id="one tainted device: 64 per slice"),
    ],
)
def test_large_pools_are_split_at_the_apis_device_limits(
    count: int, unhealthy: int, sizes: list[int]
) -> None:
    node = gpus(count, nvlinks=0)
    bad = {str(g.uuid): "lost" for g in node.gpus[:unhealthy]}
    specs = pool_specs(node, options(unhealthy=bad), 2)
    assert [len(s["devices"]) for s in specs] == sizes
    assert {s["pool"]["resourceSliceCount"] for s in specs} == {len(sizes)}


def test_a_node_without_gpus_publishes_one_empty_slice() -> None:
    specs = pool_specs(NodeGpus((), (), "580.65.06", "13.0"), options(), 1)
    assert specs == [
        {
            "driver": DRIVER,
            "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
            "nodeName": "node-1",
        }
    ]


@pytest.mark.parametrize(
    ("value", "quantity"),
    [(100, "100"), (1 << 20, "1Mi"), (81920 << 20, "80Gi"), (143771 << 20, "143771Mi"), (1536, "1536")],
)
def test_binary_quantities_are_canonical(value: int, quantity: str) -> None:
    assert binary_quantity(value) == quantity


@given(st.integers(min_value=0, max_value=1 << 62))
def test_binary_quantities_read_back_exactly(value: int) -> None:
    assert parse_binary(binary_quantity(value)) == value


@pytest.mark.parametrize(
    ("version", "expected"),
    [("580.65.06", "580.65.6"), ("13.0", "13.0.0"), ("9", "9.0.0"), ("550.54.15.1", "550.54.15")],
)
def test_versions_become_semantic_versions(version: str, expected: str) -> None:
    assert semver(version) == expected


@pytest.mark.parametrize(
    ("cc", "name"), [((9, 0), "Hopper"), ((8, 0), "Ampere"), ((8, 9), "Ada Lovelace"), ((10, 0), "Blackwell")]
)
def test_architecture_follows_the_compute_capability(cc: tuple[int, int], name: str) -> None:
    assert architecture(cc) == name


@pytest.mark.parametrize(
    ("uuid", "name"),
    [
        ("GPU-5f0c3f5e-8A53-4a5e-9d7e-0d4a4e0a9f11", "gpu-5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11"),
        ("MIG-5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11", "mig-5f0c3f5e-8a53-4a5e-9d7e-0d4a4e0a9f11"),
        ("GPU-" + "a" * 80, "gpu-" + "a" * 59),
        ("GPU-x_y/z", "gpu-x-y-z"),
    ],
)
def test_device_names_are_dns_labels_from_the_uuid(uuid: str, name: str) -> None:
    assert device_name(uuid) == name


def test_uuid_keys_are_gpu_uuids() -> None:
    assert nvlink_domains(gpus(2).links) == {
        GpuUuid("GPU-node-1-0000"): "GPU-node-1-0000",
        GpuUuid("GPU-node-1-0001"): "GPU-node-1-0000",
    }
