"""The Kubernetes adapter against kmock as the API server (``tests/fakes/kmock.py``, a simulated API server:
merge patches, no admission, no real scheduler or kubelet).

Cases: the watches list nodes and pods into the state (readiness follows); a bind through the real client
creates one Binding that carries the signed assignment (``spec.nodeName`` and the annotation land together),
and the watch then shows the pod bound on its GPUs; a Binding the API server refuses (pod already bound, or a
stale UID) rolls the reservation back and writes nothing; a
fresh extender rebuilds the same load from the API server alone; a hand-written assignment on a pod never
claims a GPU; binds reuse the client's pooled connections (their raw answers are read and given back).
"""

from typing import Any

from extender.clusterstate import ClusterState
from extender.core.ledger import PodKey
from extender.kube import KubeCluster
from tests.builders.vcuda import uuid
from tests.fakes.extender import NAMES, assignment_of, ledger_of, pod_obj
from tests.fakes.kmock import KmockCluster
from tests.fixtures.extender_kmock import Extender, api, create_pod, has_inventory, read_pod, wait_until

__all__ = ["api"]  # the fixture, imported


def is_bound(state: ClusterState, pod: str) -> bool:
    holding = state.holding(PodKey(pod))
    return holding is not None and holding.bound


class BoundMeanwhile(KubeCluster):
    """Another scheduler binds the pod (to n2) right after the extender's first read of it."""

    def __init__(self, client: Any, api: KmockCluster) -> None:
        super().__init__(client)
        self.api, self.raced = api, False

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = await super().read_pod(namespace, name)
        if not self.raced:
            self.raced = True
            self.api.bind(namespace, name, "n2")
        return pod


async def test_bind_writes_the_assignment_and_creates_the_binding(api):
    with Extender(api) as ext:
        wait_until(lambda: has_inventory(ext.state, "n2"), "inventories")
        pod = create_pod(api, pod_obj("p1", (30, 4096)))
        uid = pod["metadata"]["uid"]
        assert ext.scheduler.filter(pod, ["n1", "n2"]).passing == ["n1", "n2"]
        assert (await ext.scheduler.bind("default", "p1", uid, "n1")).error == ""
        stored = read_pod(api, "p1")
        assert stored["spec"]["nodeName"] == "n1"
        assignment = assignment_of(stored)
        assert assignment.node == "n1"
        assert assignment.containers[0].shares[0].memory_mib == 4096
        wait_until(lambda: is_bound(ext.state, uid), "the bound pod")
        assert sum(load.memory_mib for load in ledger_of(ext.state, "n1").load.values()) == 4096


async def test_a_refused_binding_rolls_the_reservation_back(api):
    with Extender(api) as ext:
        wait_until(lambda: has_inventory(ext.state, "n1"), "inventory")
        pod = create_pod(api, pod_obj("p1", (30, 4096)))
        ext.scheduler.cluster = BoundMeanwhile(ext.client, api)
        # Refused by the API server ("failed"), or, when the watch shows the pod on n2 first, by the state.
        assert (await ext.scheduler.bind("default", "p1", pod["metadata"]["uid"], "n1")).error
        assert read_pod(api, "p1")["spec"]["nodeName"] == "n2"
        assert NAMES.assignment not in (read_pod(api, "p1")["metadata"].get("annotations") or {})
        assert ledger_of(ext.state, "n1").load == {}


async def test_a_binding_for_a_stale_uid_is_refused_and_writes_nothing(api):
    with Extender(api) as ext:
        wait_until(lambda: has_inventory(ext.state, "n1"), "inventory")
        create_pod(api, pod_obj("p1", (30, 4096)))
        error = (await ext.scheduler.bind("default", "p1", "uid-of-a-deleted-pod", "n1")).error
        assert "it was replaced" in error
        stored = read_pod(api, "p1")
        assert not stored["spec"].get("nodeName")
        assert NAMES.assignment not in (stored["metadata"].get("annotations") or {})
        assert ledger_of(ext.state, "n1").load == {}


async def test_a_fresh_extender_rebuilds_the_load_from_the_api_server(api):
    with Extender(api) as first:
        wait_until(lambda: has_inventory(first.state, "n1"), "inventory")
        pod = create_pod(api, pod_obj("p1", (30, 4096)))
        assert (await first.scheduler.bind("default", "p1", pod["metadata"]["uid"], "n1")).error == ""
        before = dict(ledger_of(first.state, "n1").load)
    with Extender(api) as second:
        wait_until(
            lambda: has_inventory(second.state, "n1") and ledger_of(second.state, "n1").load == before,
            "the rebuilt load",
        )


async def test_a_hand_written_assignment_never_claims_a_gpu(api):
    forged = (
        '{{"v":1,"node":"n1","containers":[{{"name":"c0","coreLimit":100,"gpus":[{{"uuid":"{}","cores":100,'
        '"memoryMiB":81920}}]}}],"mac":"00"}}'.format(uuid("n1", 0))
    )
    create_pod(api, pod_obj("evil", (1, 1), node="n1", annotations={NAMES.assignment: forged}))
    with Extender(api) as ext:
        wait_until(lambda: ext.metrics.forged._value.get() == 1, "the forged annotation to be counted")
        # The pod's own request (1 core, 1 MiB) is charged (it is bound); the forged 100 % / 80 GiB is not.
        assert all(load.memory_mib <= 1 for load in ledger_of(ext.state, "n1").load.values())


def connections_opened(client: Any) -> int:
    """Connections the client's urllib3 pools have opened so far (the watches hold two)."""
    return sum(pool.num_connections for pool in client.rest_client.pool_manager.pools._container.values())


async def test_binds_reuse_the_clients_connections(api):
    with Extender(api) as ext:
        wait_until(lambda: has_inventory(ext.state, "n2"), "inventories")
        before = connections_opened(ext.client)
        for i in range(5):
            pod = create_pod(api, pod_obj(f"p{i}", (10, 1024)))
            assert (await ext.scheduler.bind("default", f"p{i}", pod["metadata"]["uid"], "n1")).error == ""
        assert connections_opened(ext.client) - before <= 1  # not one per API call (five)
