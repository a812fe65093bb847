"""``nvidia.com/gpu`` device IDs, preferred sets and Allocate answers (plugin.core.nvallocate).

Matrix: IDs of whole GPUs and replicas; the preference for whole GPUs (NVLink, then PCIe/NUMA) and for
replicas (distributed, packed); properties over every request (must-include kept, only available IDs, the
size asked, same input same output); Allocate under envvar (uuid, index), cdi and device-specs; MPS client
environment; isolated time-slicing limits; refusals (unknown ID, failRequestsGreaterThanOne, MPS over two
GPUs).
"""

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.core.allocate import DeviceIdStrategy, DeviceListStrategy, PlanOptions
from plugin.core.errors import AllocationError
from plugin.core.gpu import Gpu
from plugin.core.gpumodes import GpuPlan
from plugin.core.nvallocate import (
    MPS_PIPE_PATH,
    NvidiaPlan,
    ShareOptions,
    device_ids,
    plan_nvidia_container,
    preferred_devices,
)
from plugin.core.nvflags import AllocationPolicy
from tests.builders.plugin import h100x8
from vcuda import names
from vcuda.model import GpuLink, GpuMode, GpuUuid, PcieLevel

NODE = h100x8()
GPUS: dict[str, Gpu] = {g.uuid: g for g in NODE.gpus}
U: list[str] = [g.uuid for g in NODE.gpus]
WHOLE: dict[str, GpuPlan] = {
    u: GpuPlan(GpuUuid(u), i, GpuMode.WHOLE, "nvidia.com/gpu") for i, u in enumerate(U)
}
TS: dict[str, GpuPlan] = {
    u: GpuPlan(GpuUuid(u), i, GpuMode.TIME_SLICING, "nvidia.com/gpu", 4) for i, u in enumerate(U[:3])
}
MPS: dict[str, GpuPlan] = {
    u: GpuPlan(GpuUuid(u), i, GpuMode.MPS, "nvidia.com/gpu", 2) for i, u in enumerate(U[:2])
}
NUMA = {u: g.numa_node for u, g in GPUS.items()}


def test_whole_gpus_are_named_by_uuid_and_replicas_by_uuid_and_number() -> None:
    assert [i for i, _ in device_ids(list(WHOLE.values()))] == U
    assert [i for i, _ in device_ids(list(TS.values()))][:5] == [f"{U[0]}::{n}" for n in range(4)] + [
        f"{U[1]}::0"
    ]


def prefer(
    available: list[str], must: list[str], size: int, plans: dict[str, GpuPlan], **kw: object
) -> list[str]:
    options = {"links": NODE.links, "numa": NUMA, "policy": AllocationPolicy.DISTRIBUTED, **kw}
    return preferred_devices(available, must, size, plans=plans, **options)  # type: ignore[arg-type]


def test_two_whole_gpus_prefer_the_pair_with_more_nvlinks() -> None:
    links = (GpuLink(GpuUuid(U[2]), GpuUuid(U[5]), 18, PcieLevel.SYSTEM),)
    assert sorted(prefer(U, [], 2, WHOLE, links=links)) == sorted([U[2], U[5]])


def test_without_nvlink_two_whole_gpus_prefer_one_numa_node() -> None:
    no_links = tuple(dataclasses.replace(link, nvlinks=0) for link in NODE.links)
    assert prefer([U[3], U[4], U[5]], [], 2, WHOLE, links=no_links) == [U[4], U[5]]


def test_replicas_are_spread_over_gpus_when_distributed_and_packed_when_packed() -> None:
    ids = [i for i, _ in device_ids(list(TS.values()))]
    spread = prefer(ids, [], 3, TS)
    assert len({i.partition("::")[0] for i in spread}) == 3
    free = [i for i in ids if i != f"{U[1]}::0"]  # one replica of GPU 1 is taken
    packed = prefer(free, [], 2, TS, policy=AllocationPolicy.PACKED)
    assert {i.partition("::")[0] for i in packed} == {U[1]}
    assert prefer(free, [], 1, TS)[0].startswith(U[0])


requests = (
    st.sampled_from([WHOLE, TS])
    .flatmap(
        lambda plans: st.tuples(
            st.just(plans),
            st.lists(
                st.sampled_from([i for i, _ in device_ids(list(plans.values()))]), unique=True, min_size=1
            ),
        )
    )
    .flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(0, len(t[1])), st.integers(0, 2)))
)


@given(requests)
def test_a_preference_keeps_the_must_include_ids_takes_only_available_ones_and_has_the_size(
    case: tuple[Any, ...],
) -> None:
    plans, available, size, n_must = case
    must = available[: min(n_must, size)]
    chosen = prefer(available, must, size, plans)
    assert len(chosen) == len(set(chosen)) == size
    assert set(must) <= set(chosen) <= set(available)
    assert prefer(available, must, size, plans) == chosen


def test_a_preference_larger_than_what_is_available_is_refused() -> None:
    with pytest.raises(AllocationError, match="not enough available devices"):
        prefer(U[:1], [], 2, WHOLE)


def allocate(
    ids: list[str], plans: dict[str, GpuPlan], options: PlanOptions | None = None, **share: Any
) -> NvidiaPlan:
    return plan_nvidia_container(
        ids, gpus=GPUS, plans=plans, options=options or PlanOptions(), share=ShareOptions(**share)
    )


@pytest.mark.parametrize(
    ("options", "envs", "cdi", "devices"),
    [
        pytest.param(PlanOptions(), {"NVIDIA_VISIBLE_DEVICES": f"{U[0]},{U[1]}"}, [], [], id="envvar, uuid"),
        pytest.param(
            PlanOptions(id_strategy=DeviceIdStrategy.INDEX),
            {"NVIDIA_VISIBLE_DEVICES": "0,1"},
            [],
            [],
            id="envvar, index",
        ),
        pytest.param(
            PlanOptions(list_strategy=DeviceListStrategy.CDI),
            {"NVIDIA_VISIBLE_DEVICES": "void"},
            [f"kube-vgpu.io/gpu={U[0]}", f"kube-vgpu.io/gpu={U[1]}"],
            [],
            id="cdi",
        ),
        pytest.param(
            PlanOptions(list_strategy=DeviceListStrategy.DEVICE_SPECS),
            {"NVIDIA_VISIBLE_DEVICES": "void"},
            [],
            ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"],
            id="device-specs",
        ),
    ],
)
def test_whole_gpus_are_exposed_under_each_list_strategy(
    options: PlanOptions, envs: dict[str, str], cdi: list[str], devices: list[str]
) -> None:
    plan = allocate([U[1], U[0]], WHOLE, options)
    assert dict(plan.envs) == envs
    assert list(plan.cdi_devices) == cdi
    assert [d.container_path for d in plan.devices] == devices
    assert plan.config is None


def test_an_mps_client_gets_its_gpus_daemon_and_its_share() -> None:
    plan = allocate([f"{U[1]}::1"], MPS, mps_dir="/var/lib/kube-vgpu/mps")
    assert plan.envs["CUDA_MPS_PIPE_DIRECTORY"] == MPS_PIPE_PATH
    assert plan.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert plan.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={81559 // 2}M", (
        "by ordinal: the driver ignores UUID keys"
    )
    assert {m.container_path: m.host_path for m in plan.mounts}[
        MPS_PIPE_PATH
    ] == f"/var/lib/kube-vgpu/mps/{U[1]}/pipe"


def test_isolated_replicas_get_the_shim_with_their_share_of_memory_and_compute() -> None:
    plan = allocate([f"{U[0]}::2", f"{U[0]}::3"], TS, isolation=True)
    assert plan.config is not None
    (limit,) = plan.config.gpus
    assert (limit.memory_limit_bytes, limit.core_limit, limit.soft_limit) == ((81559 // 4 * 2) << 20, 50, 50)
    assert names.LD_SO_PRELOAD_PATH in {m.container_path for m in plan.mounts}
    configured = allocate([f"{U[0]}::2"], TS, isolation=True, memory_mib=10000)
    assert configured.config is not None
    assert configured.config.gpus[0].memory_limit_bytes == 10000 << 20


def test_replicas_without_isolation_get_no_shim() -> None:
    plan = allocate([f"{U[0]}::2"], TS)
    assert plan.config is None
    assert names.LD_SO_PRELOAD_PATH not in {m.container_path for m in plan.mounts}


@pytest.mark.parametrize(
    ("ids", "plans", "share", "message"),
    [
        pytest.param([f"{U[0]}::9"], TS, {}, "not served", id="replica number past replicas"),
        pytest.param([U[0]], TS, {}, "not served", id="a bare UUID of a replicated GPU"),
        pytest.param([f"{U[0]}::1"], WHOLE, {}, "not served", id="a replica of a whole GPU"),
        pytest.param(["GPU-other"], WHOLE, {}, "not served", id="unknown GPU"),
        pytest.param(
            [f"{U[0]}::1", f"{U[1]}::1"],
            TS,
            {"fail_requests_greater_than_one": True},
            "maximum request size for shared resources is 1",
            id="failRequestsGreaterThanOne",
        ),
        pytest.param(
            [f"{U[0]}::1", f"{U[1]}::1"], MPS, {}, "each GPU has its own MPS daemon", id="MPS over two GPUs"
        ),
    ],
)
def test_an_allocation_that_cannot_be_served_is_refused(
    ids: list[str], plans: dict[str, GpuPlan], share: dict[str, Any], message: str
) -> None:
    with pytest.raises(AllocationError, match=message):
        allocate(ids, plans, **share)


def test_a_node_with_too_many_sets_to_score_answers_at_once_with_the_first_gpus() -> None:
    # C(64, 32) sets: counted, never listed (listing them first would never end)
    many = [f"GPU-{n:08x}-0000-0000-0000-000000000000" for n in range(64)]
    plans = {u: GpuPlan(GpuUuid(u), i, GpuMode.WHOLE, "nvidia.com/gpu") for i, u in enumerate(many)}
    assert prefer(many, [many[5]], 32, plans, links=(), numa={}) == [many[5], *many[:5], *many[6:32]]
