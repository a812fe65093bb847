"""Allocate answers for MIG instances under each device-list strategy, and the MIG minors file."""

import pytest

from plugin.core.allocate import CONTROL_DEVICES, DeviceListStrategy, DeviceNode, Mount, PlanOptions
from plugin.core.errors import AllocationError
from plugin.core.mig import mig_devices
from plugin.core.mig_allocate import cdi_spec, parse_mig_minors, plan_mig_container
from tests.builders.mig import a100

MINORS_TEXT = """config 1
monitor 2
gpu1/gi1/access 21
gpu1/gi1/ci0/access 22
gpu1/gi2/access 30
gpu1/gi2/ci0/access 31
"""
MINORS = parse_mig_minors(MINORS_TEXT)
DEVICES = mig_devices([a100(1, "3g.20gb", "3g.20gb")])


def test_the_minors_file_is_parsed_by_capability_name():
    assert MINORS == {
        "config": 1,
        "monitor": 2,
        "gpu1/gi1/access": 21,
        "gpu1/gi1/ci0/access": 22,
        "gpu1/gi2/access": 30,
        "gpu1/gi2/ci0/access": 31,
    }


def test_envvar_names_the_instances_by_mig_uuid():
    plan = plan_mig_container(DEVICES, PlanOptions(), {})

    assert plan.envs == {"NVIDIA_VISIBLE_DEVICES": "MIG-a1000001-1-0,MIG-a1000001-2-0"}
    assert (plan.mounts, plan.devices, plan.cdi_devices) == ((), (), ())


def test_cdi_names_each_instance_under_the_prefix():
    plan = plan_mig_container(DEVICES[:1], PlanOptions(list_strategy=DeviceListStrategy.CDI), {})

    assert plan.cdi_devices == ("kube-vgpu.io/gpu=MIG-a1000001-1-0",)
    assert plan.envs == {"NVIDIA_VISIBLE_DEVICES": "void"}


def test_device_specs_give_the_parent_the_capability_devices_and_the_driver():
    options = PlanOptions(
        list_strategy=DeviceListStrategy.DEVICE_SPECS,
        driver_files={"/usr/local/nvidia/bin/nvidia-smi": "/host/usr/bin/nvidia-smi"},
    )

    plan = plan_mig_container(DEVICES, options, MINORS)

    assert [d.host_path for d in plan.devices] == [
        "/dev/nvidia1",
        "/dev/nvidia-caps/nvidia-cap21",
        "/dev/nvidia-caps/nvidia-cap22",
        "/dev/nvidia-caps/nvidia-cap30",
        "/dev/nvidia-caps/nvidia-cap31",
        *CONTROL_DEVICES,
    ]
    assert plan.devices[1] == DeviceNode("/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap21")
    assert plan.mounts == (Mount("/usr/local/nvidia/bin/nvidia-smi", "/host/usr/bin/nvidia-smi"),)


def test_device_specs_refuse_an_instance_without_capability_minors():
    options = PlanOptions(list_strategy=DeviceListStrategy.DEVICE_SPECS)

    with pytest.raises(AllocationError, match=r"gpu1/gi2/access is not in /proc/driver/nvidia-caps"):
        plan_mig_container(DEVICES, options, {"gpu1/gi1/access": 21, "gpu1/gi1/ci0/access": 22})


def test_the_cdi_spec_describes_instances_whose_capabilities_are_known():
    spec = cdi_spec("kube-vgpu.io/gpu", DEVICES, {"gpu1/gi1/access": 21, "gpu1/gi1/ci0/access": 22})

    assert spec["devices"] == [
        {
            "name": "MIG-a1000001-1-0",
            "containerEdits": {
                "deviceNodes": [
                    {"path": "/dev/nvidia1"},
                    {"path": "/dev/nvidia-caps/nvidia-cap21"},
                    {"path": "/dev/nvidia-caps/nvidia-cap22"},
                ]
            },
        }
    ]
    assert spec["kind"] == "kube-vgpu.io/gpu"
