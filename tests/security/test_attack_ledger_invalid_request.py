"""Attack: make a running pod's GPU request invalid so that, after an extender restart, its GPU is sold twice.

Threat: a tenant with a running GPU pod. The user-facing kube-vgpu annotations (``vcuda-core-limit``, the GPU
selectors, the policies) stay writable by the tenant on UPDATE, the chart's admission policy included (they
are the user's), and they are part of the pod's request. Writing an invalid one (``vcuda-core-limit: "x"``)
makes the signed assignment stop verifying (its request digest changed) *and* the request unreadable. The
running extender keeps the holding it verified (by UID); but a restarted one charges a bound pod without a
valid assignment from its request, and an unreadable request was charged nothing: the GPU the pod still runs
on was free for the next pod. The ledger must charge such a pod (its containers' resources are immutable and
were validated at creation, so they still say what it holds); only the annotations are the tenant's to break.

Closed in ``extender/clusterstate.py`` (``_charges``): the pod is charged from its containers alone when its
annotations are what fails, and every GPU of its node whole when even the containers cannot be read.
"""

import pytest

from tests.fakes.extender import NAMES, assignment_of, gpu_node, ledger_of, pod_obj
from tests.fakes.kmock import KmockCluster
from tests.fixtures.extender_kmock import (
    Extender,
    create_pod,
    has_inventory,
    read_pod,
    wait_until,
)

WHOLE = (100, 0)
BROKEN = {
    "core limit": (NAMES.core_limit, "x"),
    "gpu policy": (NAMES.gpu_policy, "random"),
}


@pytest.fixture
def api():
    with KmockCluster() as cluster:
        cluster.core().create_node(gpu_node("n1", gpus=2), _preload_content=False)
        yield cluster


async def bind(ext: Extender, api: KmockCluster, name: str) -> str:
    pod = create_pod(api, pod_obj(name, WHOLE))
    return (await ext.scheduler.bind("default", name, pod["metadata"]["uid"], "n1")).error


@pytest.mark.parametrize("how", list(BROKEN))
async def test_an_invalid_user_annotation_on_a_running_pod_never_frees_its_gpu_after_a_restart(api, how):
    key, value = BROKEN[how]
    with Extender(api) as first:
        wait_until(lambda: has_inventory(first.state, "n1"), "inventory")
        assert await bind(first, api, "victim") == ""
        victim = read_pod(api, "victim")
        held = assignment_of(victim).containers[0].shares[0].uuid
        patch = {"metadata": {"annotations": {key: value}}, "status": {"phase": "Running"}}
        api.core().patch_namespaced_pod("victim", "default", patch, _preload_content=False)
        wait_until(lambda: read_pod(api, "victim")["metadata"]["annotations"].get(key) == value, "the edit")
    with Extender(api) as second:
        wait_until(lambda: has_inventory(second.state, "n1"), "inventory")
        if await bind(second, api, "second") == "":  # a conservative charge (every GPU) refuses it
            got = assignment_of(read_pod(api, "second")).containers[0].shares[0].uuid
            assert got != held, f"GPU {held} sold twice after the tenant broke its {how} annotation"
        assert ledger_of(second.state, "n1").load[held].cores == 100
