"""NVIDIA's config file (plugin.core.nvconfig, plugin.core.nvflags) and the mode plan (plugin.core.gpumodes).

Matrix: format detection; every ``flags`` key mapped, accepted neutral or refused; ``sharing.timeSlicing``
and ``sharing.mps`` fields (name, replicas, rename, devices, renameByDefault, failRequestsGreaterThanOne);
the ``kubeVgpu`` section; errors table-driven, each naming its key; a property over generated sharing
sections; GPU selection per mode; mode switches held back while a GPU is held.
"""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.core.errors import ConfigError
from plugin.core.gpumodes import (
    GpuPlan,
    decode_modes,
    encode_modes,
    hold_switches,
    plan_modes,
    sharing_labels,
)
from plugin.core.nvconfig import (
    DeviceSelector,
    SharingStrategy,
    is_nvidia_config,
    parse_nvidia_config,
)
from plugin.core.nvflags import AllocationPolicy
from tests.builders.plugin import h100x8
from vcuda.model import GpuMode

UUID = "GPU-8b7e6f2a-1c3d-4e5f-9a0b-1c2d3e4f5a6b"


def ts(*resources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": "v1", "sharing": {"timeSlicing": {"resources": list(resources), **extra}}}


def test_a_file_with_nvidia_keys_is_nvidias_and_kube_vgpus_own_file_is_not() -> None:
    assert is_nvidia_config({"version": "v1", "flags": {}})
    assert is_nvidia_config({"sharing": {}})
    assert not is_nvidia_config({"version": "v1", "migStrategy": "mixed", "nodeConfig": []})


def test_time_slicing_resource_is_read_as_nvidia_documents_it() -> None:
    config = parse_nvidia_config(ts({"name": "gpu", "replicas": 4}))
    (res,) = config.sharing.resources
    assert (res.name, res.replicas, res.devices, res.rename) == ("nvidia.com/gpu", 4, DeviceSelector(), "")
    assert config.sharing.strategy is SharingStrategy.TIME_SLICING
    assert config.sharing.fail_requests_greater_than_one is False


def test_mps_fails_requests_greater_than_one_by_default_as_nvidia() -> None:
    doc = {"sharing": {"mps": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]}}}
    config = parse_nvidia_config(doc)
    assert config.sharing.strategy is SharingStrategy.MPS
    assert config.sharing.fail_requests_greater_than_one is True


def test_rename_by_default_appends_shared_and_an_explicit_rename_wins() -> None:
    doc = ts(
        {"name": "gpu", "replicas": 2, "devices": [0]},
        {"name": "gpu", "replicas": 3, "devices": [1], "rename": "gpu.small"},
        renameByDefault=True,
        failRequestsGreaterThanOne=True,
    )
    first, second = parse_nvidia_config(doc).sharing.resources
    assert (first.served_as, second.served_as) == ("nvidia.com/gpu.shared", "nvidia.com/gpu.small")
    assert parse_nvidia_config(doc).sharing.fail_requests_greater_than_one


@pytest.mark.parametrize(
    ("devices", "selector"),
    [
        pytest.param("all", DeviceSelector(), id="all"),
        pytest.param(2, DeviceSelector(all=False, count=2), id="a count"),
        pytest.param(
            [0, "3", UUID], DeviceSelector(all=False, refs=("0", "3", UUID)), id="indexes and UUIDs"
        ),
    ],
)
def test_devices_take_every_form_nvidia_allows(devices: object, selector: DeviceSelector) -> None:
    (res,) = parse_nvidia_config(ts({"name": "gpu", "replicas": 2, "devices": devices})).sharing.resources
    assert res.devices == selector


@pytest.mark.parametrize(
    ("flags", "settings"),
    [
        pytest.param({"migStrategy": "mixed"}, {"mig_strategy": "mixed"}, id="migStrategy"),
        pytest.param({"failOnInitError": False}, {"fail_on_init_error": False}, id="failOnInitError"),
        pytest.param(
            {"nvidiaDriverRoot": "/run/nvidia/driver"},
            {"nvidia_driver_host_root": "/run/nvidia/driver"},
            id="nvidiaDriverRoot is the host path",
        ),
        pytest.param(
            {"plugin": {"containerDriverRoot": "/driver-root"}},
            {"nvidia_driver_root": "/driver-root"},
            id="containerDriverRoot",
        ),
        pytest.param({"mpsRoot": "/run/nvidia/mps"}, {"mps_root": "/run/nvidia/mps"}, id="mpsRoot"),
        pytest.param(
            {"plugin": {"deviceListStrategy": "envvar"}}, {"device_list_strategy": "envvar"}, id="envvar"
        ),
        pytest.param(
            {"plugin": {"deviceListStrategy": ["cdi-cri", "cdi-annotations"]}},
            {"device_list_strategy": "cdi"},
            id="the cdi strategies",
        ),
        pytest.param(
            {"plugin": {"passDeviceSpecs": True}},
            {"device_list_strategy": "device-specs"},
            id="passDeviceSpecs",
        ),
        pytest.param(
            {"plugin": {"deviceIDStrategy": "index"}}, {"device_id_strategy": "index"}, id="deviceIDStrategy"
        ),
        pytest.param(
            {"gdsEnabled": False, "gfd": {"oneshot": True}, "deviceDiscoveryStrategy": "nvml"},
            {},
            id="neutral and GFD flags",
        ),
    ],
)
def test_flags_map_to_kube_vgpu_settings(flags: dict[str, Any], settings: dict[str, Any]) -> None:
    assert dict(parse_nvidia_config({"version": "v1", "flags": flags}).settings) == settings


def test_packed_allocation_policy_is_read() -> None:
    doc = {"flags": {"plugin": {"sharedDevicesAllocationPolicy": "packed"}}}
    assert parse_nvidia_config(doc).policy is AllocationPolicy.PACKED


def test_the_kube_vgpu_section_is_read() -> None:
    doc = {
        "flags": {},
        "kubeVgpu": {
            "defaultMode": "vcuda",
            "vcudaDevices": [0],
            "timeSlicing": {"isolation": True, "memoryMiB": 4096},
        },
    }
    ext = parse_nvidia_config(doc).extension
    assert (ext.default_mode, ext.vcuda_devices, ext.isolation, ext.memory_mib) == (
        GpuMode.VCUDA,
        DeviceSelector(all=False, refs=("0",)),
        True,
        4096,
    )


R = {"name": "gpu", "replicas": 2}
ERRORS = [
    ({"version": "v2", "flags": {}}, "version"),
    ({"flags": {}, "extra": 1}, "extra"),
    ({"flags": {"migStrategy": "both"}}, "flags.migStrategy"),
    ({"flags": {"failOnInitError": "yes"}}, "flags.failOnInitError"),
    ({"flags": {"unknownFlag": 1}}, "flags.unknownFlag"),
    ({"flags": {"plugin": {"deviceListStrategy": "volume-mounts"}}}, "flags.plugin.deviceListStrategy"),
    ({"flags": {"plugin": {"deviceListStrategy": ["envvar", "cdi-cri"]}}}, "flags.plugin.deviceListStrategy"),
    ({"flags": {"plugin": {"deviceIDStrategy": "serial"}}}, "flags.plugin.deviceIDStrategy"),
    ({"flags": {"plugin": {"cdiAnnotationPrefix": "x/"}}}, "flags.plugin.cdiAnnotationPrefix"),
    ({"flags": {"plugin": {"nvidiaCTKPath": "/opt/ctk"}}}, "flags.plugin.nvidiaCTKPath"),
    (
        {"flags": {"plugin": {"sharedDevicesAllocationPolicy": "random"}}},
        "flags.plugin.sharedDevicesAllocationPolicy",
    ),
    (
        {"flags": {"plugin": {"deviceListStrategy": "cdi-cri", "passDeviceSpecs": True}}},
        "flags.plugin.passDeviceSpecs",
    ),
    ({"flags": {"plugin": {"bogus": 1}}}, "flags.plugin.bogus"),
    ({"flags": {"gdrcopyEnabled": True}}, "flags.gdrcopyEnabled"),
    ({"flags": {"mofedEnabled": True}}, "flags.mofedEnabled"),
    ({"flags": {"useNodeFeatureAPI": True}}, "flags.useNodeFeatureAPI"),
    ({"flags": {"deviceDiscoveryStrategy": "tegra"}}, "flags.deviceDiscoveryStrategy"),
    ({"flags": {"nvidiaDevRoot": "/dev-root"}}, "flags.nvidiaDevRoot"),
    ({"flags": {"gfd": {"nope": 1}}}, "flags.gfd.nope"),
    ({"resources": {"gpus": [{"pattern": "*", "name": "x"}]}}, "resources.gpus[0]"),
    ({"resources": {"gpus": [{"pattern": "A100*", "name": "gpu"}]}}, "resources.gpus[0]"),
    ({"resources": {"mig": [{"pattern": "1g.10gb", "name": "small"}]}}, "resources.mig[0]"),
    ({"resources": {"cpus": []}}, "resources.cpus"),
    ({"imex": {"channelIDs": [0]}}, "imex"),
    ({"imex": {"required": True}}, "imex"),
    (ts({"name": "gpu", "replicas": 1025}), "sharing.timeSlicing.resources[0].replicas"),
    (ts({"name": "gpu", "replicas": 10**9}), "sharing.timeSlicing.resources[0].replicas"),
    ({"sharing": {"timeSlicing": {"resources": [R]}, "mps": {"resources": [R]}}}, "sharing"),
    ({"sharing": {"spatial": {}}}, "sharing.spatial"),
    (ts(), "sharing.timeSlicing.resources"),
    (ts(R, extra=True), "sharing.timeSlicing.extra"),
    (ts(R, renameByDefault="yes"), "sharing.timeSlicing.renameByDefault"),
    (ts(R, failRequestsGreaterThanOne=1), "sharing.timeSlicing.failRequestsGreaterThanOne"),
    (ts({"replicas": 2}), "sharing.timeSlicing.resources[0].name"),
    (ts({"name": "gpu"}), "sharing.timeSlicing.resources[0].replicas"),
    (ts({"name": "gpu", "replicas": 1}), "sharing.timeSlicing.resources[0].replicas"),
    (ts({"name": "gpu", "replicas": 0}), "sharing.timeSlicing.resources[0].replicas"),
    (ts({"name": "gpu", "replicas": "4"}), "sharing.timeSlicing.resources[0].replicas"),
    (ts({"name": "mig-1g.10gb", "replicas": 2}), "sharing.timeSlicing.resources[0].name"),
    (ts({"name": "Bad_Name", "replicas": 2}), "sharing.timeSlicing.resources[0].name"),
    (ts({"name": "gpu", "replicas": 2, "rename": "x" * 60}), "sharing.timeSlicing.resources[0].rename"),
    (ts({"name": "gpu", "replicas": 2, "rename": "vcuda-core"}), "sharing.timeSlicing.resources[0].rename"),
    (
        ts({**R, "rename": "a", "devices": [0]}, {**R, "rename": "a", "devices": [1]}),
        "sharing.timeSlicing.resources[1].rename",
    ),
    (ts({**R, "devices": "some"}), "sharing.timeSlicing.resources[0].devices"),
    (ts({**R, "devices": 0}), "sharing.timeSlicing.resources[0].devices"),
    (ts({**R, "devices": []}), "sharing.timeSlicing.resources[0].devices"),
    (ts({**R, "devices": [0, 0]}), "sharing.timeSlicing.resources[0].devices"),
    (ts({**R, "devices": ["MIG-1234"]}), "sharing.timeSlicing.resources[0].devices[0]"),
    (ts({**R, "devices": ["gpu0"]}), "sharing.timeSlicing.resources[0].devices[0]"),
    (ts({**R, "other": 1}), "sharing.timeSlicing.resources[0].other"),
    ({"flags": {}, "kubeVgpu": {"defaultMode": "mig"}}, "kubeVgpu.defaultMode"),
    ({"flags": {}, "kubeVgpu": {"nope": 1}}, "kubeVgpu.nope"),
    ({"flags": {}, "kubeVgpu": {"timeSlicing": {"memoryMiB": -1}}}, "kubeVgpu.timeSlicing.memoryMiB"),
    ({"flags": {}, "kubeVgpu": {"timeSlicing": {"isolate": True}}}, "kubeVgpu.timeSlicing.isolate"),
    (
        {"sharing": {"mps": {"resources": [R]}}, "kubeVgpu": {"timeSlicing": {"isolation": True}}},
        "kubeVgpu.timeSlicing.isolation",
    ),
]


@pytest.mark.parametrize(("doc", "key"), [pytest.param(d, k, id=k) for d, k in ERRORS])
def test_a_bad_config_is_refused_naming_the_key(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_nvidia_config(doc)
    assert str(err.value).startswith(f"{key}:") or str(err.value).startswith(f"{key}.")


resources = st.fixed_dictionaries(
    {"name": st.sampled_from(["gpu", "nvidia.com/gpu"]), "replicas": st.integers(-3, 40)},
    optional={
        "devices": st.one_of(st.just("all"), st.integers(-1, 9), st.lists(st.integers(0, 9), max_size=4))
    },
)


@given(st.lists(resources, max_size=3), st.booleans())
def test_any_sharing_section_parses_or_fails_with_a_config_error(
    items: list[dict[str, Any]], by_default: bool
) -> None:
    doc = ts(*items, renameByDefault=by_default)
    if (
        not items
        or any(not isinstance(i["replicas"], int) or i["replicas"] < 2 for i in items)
        or any(
            i.get("devices") in (0, -1, [])
            or (isinstance(i.get("devices"), list) and len(set(i["devices"])) < len(i["devices"]))
            for i in items
        )
    ):
        with pytest.raises(ConfigError, match=r"^sharing\.timeSlicing\.resources"):
            parse_nvidia_config(doc)
        return
    config = parse_nvidia_config(doc)
    assert all(r.replicas >= 2 for r in config.sharing.resources)
    assert len(config.sharing.resources) == len(items)


# --- the mode plan ---------------------------------------------------------------------------------


def modes(doc: dict[str, Any]) -> list[tuple[int, str, str, int]]:
    plan = plan_modes(h100x8().gpus, parse_nvidia_config(doc))
    return [(p.index, p.mode.value, p.resource, p.replicas) for p in plan.gpus]


def test_without_nvidias_config_every_gpu_is_vcuda() -> None:
    plan = plan_modes(h100x8().gpus, None)
    assert {p.mode for p in plan.gpus} == {GpuMode.VCUDA}
    assert len(plan.vcuda()) == 8


def test_a_flags_only_config_serves_every_gpu_whole_as_nvidia_does() -> None:
    assert {m[1:] for m in modes({"flags": {}})} == {("whole", "nvidia.com/gpu", 1)}


def test_named_gpus_are_time_sliced_others_whole_and_vcuda_devices_stay_shares() -> None:
    doc = {**ts({**R, "replicas": 4, "devices": [2, 3]}), "kubeVgpu": {"vcudaDevices": [0, 1]}}
    got = modes(doc)
    assert got[:4] == [
        (0, "vcuda", "", 1),
        (1, "vcuda", "", 1),
        (2, "time-slicing", "nvidia.com/gpu", 4),
        (3, "time-slicing", "nvidia.com/gpu", 4),
    ]
    assert set(got[4:]) == {(i, "whole", "nvidia.com/gpu", 1) for i in range(4, 8)}


def test_default_mode_vcuda_keeps_unnamed_gpus_as_shares() -> None:
    got = modes({**ts({**R, "devices": 2}), "kubeVgpu": {"defaultMode": "vcuda"}})
    assert [m[1] for m in got] == ["time-slicing"] * 2 + ["vcuda"] * 6


def test_all_takes_only_the_gpus_left_by_earlier_selections() -> None:
    got = modes(
        {**ts({**R, "devices": [0], "rename": "a"}, {**R, "replicas": 3}), "kubeVgpu": {"vcudaDevices": [1]}}
    )
    assert got[0] == (0, "time-slicing", "nvidia.com/a", 2)
    assert got[1] == (1, "vcuda", "", 1)
    assert {m[2:] for m in got[2:]} == {("nvidia.com/gpu", 3)}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            ts({**R, "devices": [9]}),
            "sharing.timeSlicing.resources[0].devices: 9 names no GPU",
            id="index not on the node",
        ),
        pytest.param(ts({**R, "devices": [UUID]}), "names no GPU", id="UUID not on the node"),
        pytest.param(ts({**R, "devices": 9}), "asks for 9 GPUs, only 8", id="count too large"),
        pytest.param(
            ts({**R, "devices": [0], "rename": "a"}, {**R, "devices": [0], "rename": "b"}),
            "resources[1].devices: GPU 0 is already taken by sharing.timeSlicing.resources[0]",
            id="GPU named twice",
        ),
        pytest.param(
            {**ts({**R, "devices": [0]}), "kubeVgpu": {"vcudaDevices": [0]}},
            "already taken by kubeVgpu.vcudaDevices",
            id="vcuda GPU named",
        ),
        pytest.param(
            {
                **ts({**R, "replicas": 4}),
                "kubeVgpu": {"timeSlicing": {"isolation": True, "memoryMiB": 30000}},
            },
            "kubeVgpu.timeSlicing.memoryMiB: 30000 MiB x 4 replicas is more than GPU 0's 81559 MiB",
            id="replicas promised more memory than the GPU has",
        ),
    ],
)
def test_an_impossible_selection_is_refused_naming_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        modes(doc)


def test_a_held_gpu_keeps_its_mode_and_a_free_one_switches() -> None:
    wanted = plan_modes(h100x8().gpus, parse_nvidia_config(ts({**R, "devices": [0, 1]})))
    previous: dict[str, GpuPlan] = {p.uuid: GpuPlan(p.uuid, p.index, GpuMode.VCUDA) for p in wanted.gpus}
    held = frozenset({wanted.gpus[0].uuid})
    served, refused = hold_switches(previous, wanted, held)
    assert served.gpus[0].mode is GpuMode.VCUDA
    assert served.gpus[1].mode is GpuMode.TIME_SLICING
    assert len(refused) == 1
    assert "GPU 0" in refused[0]
    assert "stays vcuda shares" in refused[0]


def test_the_served_plan_survives_its_record() -> None:
    plan = plan_modes(h100x8().gpus, parse_nvidia_config(ts({**R, "devices": [0]})))
    assert decode_modes(encode_modes(plan)) == {p.uuid: p for p in plan.gpus}
    unreadable: object
    for unreadable in ({"v": 2}, {"v": 1, "gpus": [{"uuid": 1}]}, [], {"v": 1, "gpus": [None]}):
        with pytest.raises(ValueError, match=r"record of GPU modes|entry is unreadable"):
            decode_modes(unreadable)


def test_gfd_sharing_labels_say_replicas_strategy_and_shared_product() -> None:
    label = "nvidia.com/{}".format
    plan = plan_modes(h100x8().gpus, parse_nvidia_config(ts({**R, "replicas": 4})))
    assert sharing_labels(plan, "NVIDIA-H100", label) == {
        "nvidia.com/gpu.replicas": "4",
        "nvidia.com/gpu.sharing-strategy": "time-slicing",
        "nvidia.com/gpu.product": "NVIDIA-H100-SHARED",
    }
    renamed = plan_modes(h100x8().gpus, parse_nvidia_config(ts({**R, "rename": "gpu.shared"})))
    assert "nvidia.com/gpu.product" not in sharing_labels(renamed, "NVIDIA-H100", label)
    whole = plan_modes(h100x8().gpus, parse_nvidia_config({"flags": {}}))
    assert sharing_labels(whole, "x", label) == {
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
    }
    assert sharing_labels(plan_modes(h100x8().gpus, None), "x", label) == {}


selectors = st.one_of(
    st.just("all"), st.integers(1, 3), st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True)
)


@given(
    st.lists(st.fixed_dictionaries({"devices": selectors, "replicas": st.integers(2, 8)}), max_size=3),
    st.one_of(st.none(), selectors),
    st.sampled_from(["whole", "vcuda"]),
)
def test_every_gpu_gets_exactly_one_mode_or_the_config_is_refused(
    entries: list[dict[str, Any]], vcuda: object, default: str
) -> None:
    items = [{"name": "gpu", "rename": f"r{i}", **e} for i, e in enumerate(entries)]
    ext: dict[str, Any] = {"defaultMode": default, **({} if vcuda is None else {"vcudaDevices": vcuda})}
    doc = {**(ts(*items) if items else {"flags": {}}), "kubeVgpu": ext}
    try:
        plan = plan_modes(h100x8().gpus, parse_nvidia_config(doc))
    except ConfigError as err:
        assert "devices" in str(err) or "vcudaDevices" in str(err)  # noqa: PT017 (a refusal names its key)
        return
    uuids = [p.uuid for p in plan.gpus]
    assert sorted(uuids) == sorted(g.uuid for g in h100x8().gpus)
    sold = [p.uuid for plans in plan.resources().values() for p in plans] + sorted(plan.vcuda())
    assert sorted(sold) == sorted(uuids)  # no GPU sold twice, none left out
