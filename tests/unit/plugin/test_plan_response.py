"""One builder turns every servicer's plan (vcuda shares, MIG instances, NVIDIA's modes) into the kubelet's
``ContainerAllocateResponse``: each of the four parts arrives whole, whichever plan carried it. The servicers
share their board-backed skeleton (``plugin.server.BoardServicer``) and differ in the options they announce;
one Allocate loop (``plugin.server.allocate_response``) plans each container in order and fails the whole call
on the first refusal, with the servicer's code (INVALID_ARGUMENT for IDs the resource does not serve)."""

from typing import Any

import grpc
import pytest

from plugin.api.deviceplugin.v1beta1 import api_pb2
from plugin.core.allocate import ContainerPlan, DeviceNode, Mount, PlanOptions
from plugin.core.errors import AllocationError, InvalidDeviceIdsError
from plugin.core.mig_allocate import MigPlan
from plugin.core.nvallocate import NvidiaPlan
from plugin.kube import KubeError
from plugin.mig import MigServicer
from plugin.nvidia import NvidiaOptions, NvidiaServicer
from plugin.server import DeviceBoard, DevicePluginServicer, allocate_response, plan_response
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


SERVICERS = [
    ("vcuda-core", lambda: DevicePluginServicer(DeviceBoard(), allocator=None), (True, True)),  # type: ignore[arg-type]
    ("MIG", lambda: MigServicer(DeviceBoard(), [], PlanOptions(), dict), (False, False)),
    (
        "NVIDIA's modes",
        lambda: NvidiaServicer("nvidia.com/gpu", DeviceBoard(), {}, {}, [], NvidiaOptions(), state=None),  # type: ignore[arg-type]
        (False, True),
    ),
]


@pytest.mark.parametrize(
    ("make", "flags"), [(m, f) for _, m, f in SERVICERS], ids=[n for n, _, _ in SERVICERS]
)
async def test_each_servicer_tells_the_kubelet_whether_it_verifies_prestart_and_prefers_devices(make, flags):
    options = await make().GetDevicePluginOptions(api_pb2.Empty(), None)
    assert (options.pre_start_required, options.get_preferred_allocation_available) == flags


@pytest.mark.parametrize("make", [m for _, m, _ in SERVICERS[1:]], ids=[n for n, _, _ in SERVICERS[1:]])
async def test_servicers_without_attribution_start_every_container(make):
    assert await make().PreStartContainer(api_pb2.PreStartContainerRequest(devices_ids=["x"]), None) == (
        api_pb2.PreStartContainerResponse()
    )


class _Undecided:
    """An allocator that cannot choose (no pending pod fits the kubelet's offer)."""

    async def preferred(self, available, must_include, size):
        raise AllocationError("no pending container asks for 2 slices")


async def test_a_failed_preference_leaves_a_plain_pick_that_names_each_device_once():
    # The kubelet sends available = free devices + must-include devices (its devicemanager's
    # ``available.Union(allocated)``), so a pick that concatenates the two would repeat the must-include ones.
    servicer = DevicePluginServicer(DeviceBoard(), allocator=_Undecided())  # type: ignore[arg-type]
    request = api_pb2.PreferredAllocationRequest(
        container_requests=[
            api_pb2.ContainerPreferredAllocationRequest(
                available_deviceIDs=["GPU-a::0", "GPU-a::1", "GPU-a::2"],
                must_include_deviceIDs=["GPU-a::0"],
                allocation_size=2,
            )
        ]
    )
    reply = await servicer.GetPreferredAllocation(request, None)  # type: ignore[arg-type]
    assert list(reply.container_responses[0].deviceIDs) == ["GPU-a::0", "GPU-a::1"]


FAILED, INVALID = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT


class _AbortedError(Exception):
    pass


class _Context:
    """What ``allocate_response`` uses of a gRPC context: ``abort`` ends the call (grpc raises, too)."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _AbortedError

    def as_grpc(self) -> Any:
        return self


def _allocate(*containers: list[str]) -> api_pb2.AllocateRequest:
    return api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
    )


async def test_allocate_answers_each_container_in_order() -> None:
    async def plan(ids: list[str]) -> MigPlan:
        return MigPlan({"IDS": ",".join(ids)}, (), (), ())

    reply = await allocate_response(
        _allocate(["a"], ["b", "c"]), plan, _Context().as_grpc(), resource="r", refused=FAILED
    )
    assert [dict(c.envs) for c in reply.container_responses] == [{"IDS": "a"}, {"IDS": "b,c"}]


@pytest.mark.parametrize(
    ("error", "refused", "code"),
    [
        (AllocationError("no room"), FAILED, FAILED),
        (AllocationError("no room"), INVALID, INVALID),
        (KubeError("API server away"), FAILED, FAILED),
        (InvalidDeviceIdsError("unknown x"), FAILED, INVALID),
    ],
    ids=["refused", "refused as a bad request", "API server error", "IDs not served"],
)
async def test_the_first_refused_container_fails_the_call_with_the_servicers_code(
    error: Exception, refused: grpc.StatusCode, code: grpc.StatusCode
) -> None:
    planned: list[list[str]] = []

    async def plan(ids: list[str]) -> MigPlan:
        planned.append(ids)
        if ids == ["bad"]:
            raise error
        return MigPlan({}, (), (), ())

    context = _Context()
    with pytest.raises(_AbortedError):
        await allocate_response(
            _allocate(["a"], ["bad"], ["c"]), plan, context.as_grpc(), resource="r", refused=refused
        )
    assert context.aborted == (code, f"kube-vgpu: {error}")
    assert planned == [["a"], ["bad"]]
