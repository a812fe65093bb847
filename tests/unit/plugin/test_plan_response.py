"""One builder turns every servicer's plan (vcuda shares, MIG instances, NVIDIA's modes) into the kubelet's
``ContainerAllocateResponse``: each of the four parts arrives whole, whichever plan carried it."""

import pytest

from plugin.core.allocate import ContainerPlan, DeviceNode, Mount
from plugin.core.mig_allocate import MigPlan
from plugin.core.nvallocate import NvidiaPlan
from plugin.server import plan_response
from vcuda.model import GpuUuid
from vcuda.shimfile import GpuLimit, ShimConfig

ENVS = {"NVIDIA_VISIBLE_DEVICES": "GPU-1", "VCUDA_CONFIG": "/etc/vcuda/config"}
MOUNTS = (Mount("/etc/vcuda", "/var/lib/kube-vgpu/c1"), Mount("/run/usage", "/var/lib/kube-vgpu/u1", False))
DEVICES = (
    DeviceNode("/dev/nvidia0", "/dev/nvidia0"),
    DeviceNode("/dev/nvidia-caps/nvidia-cap1", "/dev/x", "r"),
)
CDI = ("kube-vgpu.io/gpu=GPU-1",)
CONFIG = ShimConfig("uid", "ns", "pod", "c", (GpuLimit(GpuUuid("GPU-1"), 1 << 30, 30, 50),))

PLANS = [
    ("vcuda shares", ContainerPlan("uid_c", CONFIG, ENVS, MOUNTS, DEVICES, CDI)),
    ("MIG instances", MigPlan(ENVS, MOUNTS, DEVICES, CDI)),
    ("NVIDIA's modes", NvidiaPlan(ENVS, MOUNTS, DEVICES, CDI, "uid_c", CONFIG)),
]


@pytest.mark.parametrize("plan", [p for _, p in PLANS], ids=[n for n, _ in PLANS])
def test_every_plan_reaches_the_kubelet_with_its_envs_mounts_devices_and_cdi_devices(plan):
    response = plan_response(plan)

    assert dict(response.envs) == ENVS
    assert [(m.container_path, m.host_path, m.read_only) for m in response.mounts] == [
        ("/etc/vcuda", "/var/lib/kube-vgpu/c1", True),
        ("/run/usage", "/var/lib/kube-vgpu/u1", False),
    ]
    assert [(d.container_path, d.host_path, d.permissions) for d in response.devices] == [
        ("/dev/nvidia0", "/dev/nvidia0", "rw"),
        ("/dev/nvidia-caps/nvidia-cap1", "/dev/x", "r"),
    ]
    assert [c.name for c in response.cdi_devices] == list(CDI)
    assert not response.annotations  # the plugin sets no container annotations
