"""The simulated cluster's safety invariants, checked by the e2e tests after every step.

1. No GPU is over-committed: over the signed assignments of every live pod, each GPU's cores stay <= 100 and
   its memory <= the GPU's schedulable memory from the node's inventory annotation; an exclusive share is
   alone on its GPU.
2. What each node's kubelet handed a container agrees with that container's assignment: the ``vcuda-core``
   device IDs name exactly the assigned GPUs with as many slices each, no ID is held twice, and the shim
   config file the plugin mounted (decoded with :func:`vcuda.shimfile.decode_config`) carries exactly the
   assigned limits and the pod's identity.
3. Every running GPU pod's containers were allocated.

Computed from the contract alone (``vcuda``), never from the plugin's or extender's internals.
"""

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tests.sim.cluster import SimCluster
from tests.sim.fit import is_terminal
from tests.sim.kubeapi import Obj
from tests.sim.node import SimNode
from vcuda.annotations import decode_assignment, decode_inventory
from vcuda.errors import ContractError
from vcuda.model import ContainerAssignment, NodeInventory, PodAssignment
from vcuda.names import CONTAINER_CONFIG_PATH
from vcuda.shimfile import GpuLimit, ShimConfig, decode_config
from vcuda.units import CORE_PER_GPU, mib_to_bytes

__all__ = ["check_invariants", "expected_config"]


def expected_config(pod: Obj, container: ContainerAssignment) -> ShimConfig:
    """The shim config a container must get from its assignment (whole GPUs: all memory, no throttle)."""
    meta = pod["metadata"]
    gpus = []
    for share in container.shares:
        if share.cores >= CORE_PER_GPU:
            gpus.append(GpuLimit(share.uuid, mib_to_bytes(share.memory_mib), CORE_PER_GPU, CORE_PER_GPU))
        else:
            soft = min(CORE_PER_GPU, max(container.core_limit, share.cores))
            gpus.append(GpuLimit(share.uuid, mib_to_bytes(share.memory_mib), share.cores, soft))
    return ShimConfig(str(meta.get("uid", "")), meta.get("namespace", "default"), meta["name"], container.name,
                      tuple(gpus))  # fmt: skip


def _assignments(cluster: SimCluster, pods: Iterable[Obj]) -> tuple[dict[str, PodAssignment], list[str]]:
    found, problems = {}, []
    for pod in pods:
        raw = (pod["metadata"].get("annotations") or {}).get(cluster.names.assignment)
        if raw is None or is_terminal(pod) or not (pod.get("spec") or {}).get("nodeName"):
            continue
        try:
            found[str(pod["metadata"].get("uid"))] = decode_assignment(raw, cluster.key)
        except ContractError as err:
            problems.append(f"{pod['metadata']['name']}: assignment does not decode: {err}")
    return found, problems


def _overcommit(inventories: dict[str, NodeInventory], assignments: Iterable[PodAssignment]) -> list[str]:
    cores: Counter[str] = Counter()
    memory: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    holders: Counter[str] = Counter()
    capacity: dict[str, int] = {g.uuid: g.memory_mib for inv in inventories.values() for g in inv.gpus}
    for assignment in assignments:
        for container in assignment.containers:
            for share in container.shares:
                cores[share.uuid] += share.cores
                memory[share.uuid] += share.memory_mib
                holders[share.uuid] += 1
                exclusive[share.uuid] += share.cores >= CORE_PER_GPU
    problems = []
    for uuid in holders:
        if cores[uuid] > CORE_PER_GPU or memory[uuid] > capacity.get(uuid, 0):
            problems.append(
                f"GPU {uuid} over-committed: {cores[uuid]} % cores, {memory[uuid]} MiB of {capacity.get(uuid)} MiB"
            )
        if exclusive[uuid] and holders[uuid] > 1:
            problems.append(f"GPU {uuid} is held exclusively and shared ({holders[uuid]} holders)")
    return problems


def _split(ids: Iterable[str]) -> dict[str, int]:
    return dict(Counter(i.rpartition("::")[0] for i in ids))


def _check_node(
    node: SimNode, pods: dict[str, Obj], assignments: dict[str, PodAssignment], core: str
) -> list[str]:
    problems = []
    seen: Counter[str] = Counter()
    for uid, held in node.kubelet.checkpoint.pods.items():
        pod, assignment = pods.get(uid), assignments.get(uid)
        for name, resources in held.containers.items():
            alloc = resources.get(core)
            if alloc is None:
                continue
            seen.update(alloc.ids)
            where = f"{node.name}/{held.name}/{name}"
            if pod is None or assignment is None or assignment.container(name) is None:
                problems.append(f"{where}: holds {len(alloc.ids)} slices but has no assignment")
                continue
            problems += _check_container(where, pod, assignment.container(name), alloc.ids, alloc.response)  # type: ignore[arg-type]
    problems += [f"{node.name}: device ID {i} given to {n} containers" for i, n in seen.items() if n > 1]
    return problems


def _check_container(
    where: str, pod: Obj, container: ContainerAssignment, ids: list[str], response: object
) -> list[str]:
    wanted = {s.uuid: s.cores for s in container.shares}
    if _split(ids) != wanted:
        return [f"{where}: kubelet IDs cover {_split(ids)}, assignment says {wanted}"]
    mounts = {m.container_path: m.host_path for m in response.mounts}  # type: ignore[attr-defined]
    if CONTAINER_CONFIG_PATH not in mounts:
        return [f"{where}: Allocate mounted no {CONTAINER_CONFIG_PATH}"]
    try:
        actual = decode_config(Path(mounts[CONTAINER_CONFIG_PATH]).read_bytes())
    except (OSError, ContractError) as err:
        return [f"{where}: shim config unreadable: {err}"]
    expected = expected_config(pod, container)
    return [] if actual == expected else [f"{where}: shim config {actual} != assignment {expected}"]


def _unallocated(cluster: SimCluster, pods: Iterable[Obj]) -> list[str]:
    problems = []
    for pod in pods:
        node = cluster.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None or (pod.get("status") or {}).get("phase") != "Running":
            continue
        uid = str(pod["metadata"].get("uid"))
        for c in (pod.get("spec") or {}).get("containers") or []:
            limits = {
                **((c.get("resources") or {}).get("limits") or {}),
                **((c.get("resources") or {}).get("requests") or {}),
            }
            if (
                limits.get(cluster.names.core)
                and node.kubelet.checkpoint.get(uid, c["name"], cluster.names.core) is None
            ):
                problems.append(f"{pod['metadata']['name']}/{c['name']}: running without an allocation")
    return problems


async def check_invariants(cluster: SimCluster) -> list[str]:
    """Every violation found, as sentences (empty when the cluster is sound)."""
    pods = {str(p["metadata"].get("uid")): p for p in (await cluster.pods()).values()}
    nodes = await cluster.kube.list("nodes")
    inventories = {}
    for n in nodes:
        raw = (n["metadata"].get("annotations") or {}).get(cluster.names.inventory)
        if raw:
            inventories[n["metadata"]["name"]] = decode_inventory(raw)
    assignments, problems = _assignments(cluster, pods.values())
    problems += _overcommit(inventories, assignments.values())
    for node in cluster.nodes.values():
        problems += _check_node(node, pods, assignments, cluster.names.core)
    return problems + _unallocated(cluster, pods.values())
