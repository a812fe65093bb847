# mypy: disable-error-code="no-untyped-call"
"""A pod force-deleted around a kubelet restart: the restarted kubelet still counts its slices (it frees a gone
pod's IDs only once its pod sources have synced), while the extender has already given its GPU to a new pod.
The new pod's assignment cannot be met from what the kubelet offers; the plugin must refuse the ``Allocate``
(nothing handed out against the signed assignment) and say why, naming the GPU and the withheld slices.

Real gRPC (FakeKubelet with ``remove_pod(stranded=True)``, the v1.37.2 behaviour found by tests/k8s), kmock, a
FakeGpuSource. Before, the refusal said only ``no pending container on this node is assigned 100 slices as
[GPU-0 x70, GPU-1 x30]``, and nothing told the user the kubelet still held slices of a deleted pod.
"""

import grpc
import pytest

from plugin.core.slices import gpu_split
from tests.builders.plugin import NAMES
from vcuda.model import Phase

G = "GPU-node-1-{:04d}".format


async def stranded_after_restart(env_factory):
    """``share`` ran on 30 slices of GPU 0, was force-deleted, and the kubelet restarted still holding them."""
    env = await env_factory()
    env.create_pod("share", [("c", 30, 4096)], {"c": [(G(0), 30, 4096)]})
    await env.admit("share", [("c", 30)])
    await env.start_container("share", "c")
    env.core.delete_namespaced_pod("share", "default", grace_period_seconds=0, _preload_content=False)
    env.kubelet.remove_pod("default", "share", stranded=True)
    await env.kubelet.restart()
    await env.kubelet.wait_registered(NAMES.core, timeout=10.0)
    await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 800, timeout=10.0)
    return env


async def test_a_gpu_the_kubelet_still_holds_for_a_deleted_pod_is_refused_with_the_reason(env_factory):
    env = await stranded_after_restart(env_factory)
    env.create_pod("whole", [("c", 100, 81559)], {"c": [(G(0), 100, 81559)]})

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await env.admit("whole", [("c", 100)])

    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert f"the kubelet withheld 30 of {G(0)} assigned to default/whole/c" in details
    assert "no container the kubelet lists holds them" in details
    assert env.status("whole") is None  # nothing recorded, nothing handed out


async def test_once_the_kubelet_frees_them_the_next_pod_gets_its_gpu(env_factory):
    env = await stranded_after_restart(env_factory)
    env.kubelet.release_stranded()  # its pod sources synced: UpdateAllocatedDevices frees the gone pod's IDs
    env.create_pod("whole", [("c", 100, 81559)], {"c": [(G(0), 100, 81559)]})

    (admitted,) = await env.admit("whole", [("c", 100)])
    await env.start_container("whole", "c")

    assert gpu_split(admitted.ids) == {G(0): 100}
    assert env.status("whole").phase is Phase.ALLOCATED
