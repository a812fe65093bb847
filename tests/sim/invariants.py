"""The simulated cluster's safety invariants, checked by the e2e tests after every step.

1. No GPU is over-committed: over the signed assignments of every live pod, each GPU's cores stay <= 100 and
   its memory <= the GPU's schedulable memory from the node's inventory annotation; an exclusive share is
   alone on its GPU (no other pod holds it). A pod counts on each GPU what the kubelet reserves for it
   (:func:`vcuda.request.effective_totals` over its containers' shares of that GPU): the larger of its app
   containers plus sidecars and of each init container plus the sidecars started before it, never the sum.
2. What each node's kubelet handed a container agrees with that container's assignment: the ``vcuda-core``
   device IDs name exactly the assigned GPUs with as many slices each, and the shim config file the plugin
   mounted (decoded with :func:`vcuda.shimfile.decode_config`) carries exactly the assigned limits and the
   pod's identity. No ID is held twice, except as the kubelet reuses it: a regular init container's IDs may
   go to later containers of the SAME pod (it has exited by then); an ID held by two pods, or by two of a
   pod's long-running containers (app or sidecar), is a double sale.
3. Every running GPU pod's containers were allocated.
4. One GPU, one mode (a node may sell GPUs as vcuda shares, whole or as replicas of ``nvidia.com/gpu``): the
   node's inventory lists each GPU once (``gpus`` or ``other``); the kubelet sees each GPU's devices under one
   resource only (device IDs ``<uuid>`` or ``<uuid>::<n>``), ``vcuda-core`` on the shared GPUs and each other
   resource on the GPUs the inventory sells through it; no container holds a GPU through two resources; a
   whole GPU goes to one container, a replicated one to at most its replicas; signed assignments name
   shared GPUs only.
5. DRA (:mod:`tests.sim.dra_invariants`): no device of a DRA node is over-committed by the allocated claims.

Computed from the contract alone (``vcuda``), never from the plugin's or extender's internals.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.sim.cluster import SimCluster
from tests.sim.dra_invariants import dra_overcommit
from tests.sim.fit import is_terminal
from tests.sim.kubeapi import Obj
from tests.sim.node import SimNode
from vcuda.annotations import apply_moves, decode_assignment, decode_inventory, decode_status
from vcuda.errors import ContractError
from vcuda.model import (
    ContainerAssignment,
    ContainerKind,
    ContainerRequest,
    NodeInventory,
    OtherModeGpu,
    PodAssignment,
    PodRequest,
)
from vcuda.names import CONTAINER_CONFIG_PATH, Names
from vcuda.request import effective_totals
from vcuda.shimfile import GpuLimit, ShimConfig, decode_config
from vcuda.signing import Verifier, pod_binding
from vcuda.units import CORE_PER_GPU, mib_to_bytes

__all__ = [
    "check_invariants",
    "container_kinds",
    "double_sales",
    "expected_config",
    "mode_violations",
    "overcommit",
    "pod_gpu_use",
]


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


def placed(pod: Obj, names: Names, raw: str, key: Verifier) -> PodAssignment:
    """The verified assignment with the swaps the plugin recorded in the pod's status."""
    status_text = (pod["metadata"].get("annotations") or {}).get(names.status)
    moved = decode_status(status_text).moved if status_text else ()
    return apply_moves(decode_assignment(raw, pod_binding(pod, names), key), moved)


def _assignments(cluster: SimCluster, pods: Iterable[Obj]) -> tuple[dict[str, PodAssignment], list[str]]:
    found, problems = {}, []
    for pod in pods:
        raw = (pod["metadata"].get("annotations") or {}).get(cluster.names.assignment)
        if raw is None or is_terminal(pod) or not (pod.get("spec") or {}).get("nodeName"):
            continue
        try:
            found[str(pod["metadata"].get("uid"))] = placed(pod, cluster.names, raw, cluster.key)
        except ContractError as err:
            problems.append(f"{pod['metadata']['name']}: assignment does not decode: {err}")
    return found, problems


def container_kinds(pod: Obj | None) -> dict[str, ContainerKind]:
    """Each container's kind, in the order the kubelet starts them (init containers first)."""
    spec = (pod or {}).get("spec") or {}
    kinds = {
        c["name"]: ContainerKind.SIDECAR if c.get("restartPolicy") == "Always" else ContainerKind.INIT
        for c in spec.get("initContainers") or []
    }
    return kinds | {c["name"]: ContainerKind.APP for c in spec.get("containers") or []}


def pod_gpu_use(kinds: dict[str, ContainerKind], assignment: PodAssignment) -> dict[str, tuple[int, int]]:
    """(cores, MiB) the pod holds on each GPU as the kubelet counts it: init devices are reused."""
    order = {name: i for i, name in enumerate(kinds)}
    per_gpu: dict[str, list[ContainerRequest]] = {}
    for container in sorted(assignment.containers, key=lambda c: order.get(c.name, len(order))):
        kind = kinds.get(container.name, ContainerKind.APP)
        for share in container.shares:
            request = ContainerRequest(container.name, share.cores, share.memory_mib, kind)
            per_gpu.setdefault(share.uuid, []).append(request)
    return {uuid: effective_totals(PodRequest(tuple(requests))) for uuid, requests in per_gpu.items()}


def overcommit(
    inventories: dict[str, NodeInventory], uses: Iterable[dict[str, tuple[int, int]]]
) -> list[str]:
    """Problems over every live pod's :func:`pod_gpu_use`."""
    cores: Counter[str] = Counter()
    memory: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    holders: Counter[str] = Counter()
    capacity: dict[str, int] = {g.uuid: g.memory_mib for inv in inventories.values() for g in inv.gpus}
    for use in uses:
        for uuid, (pod_cores, pod_memory) in use.items():
            cores[uuid] += pod_cores
            memory[uuid] += pod_memory
            holders[uuid] += 1
            exclusive[uuid] += pod_cores >= CORE_PER_GPU
    problems = []
    for uuid in holders:
        if cores[uuid] > CORE_PER_GPU or memory[uuid] > capacity.get(uuid, 0):
            problems.append(
                f"GPU {uuid} over-committed: {cores[uuid]} % cores, {memory[uuid]} MiB of {capacity.get(uuid)} MiB"
            )
        if exclusive[uuid] and holders[uuid] > 1:
            problems.append(f"GPU {uuid} is held exclusively and shared ({holders[uuid]} pods)")
    return problems


def double_sales(holders: dict[str, list[tuple[str, ContainerKind]]]) -> list[str]:
    """Device IDs (to their (pod uid, container kind) holders) held against the kubelet's reuse rule."""
    problems = []
    for device, held in sorted(holders.items()):
        pods = {uid for uid, _ in held}
        running = sum(kind is not ContainerKind.INIT for _, kind in held)
        if len(pods) > 1 or running > 1:
            problems.append(f"device ID {device} given to {len(held)} containers of {len(pods)} pod(s)")
    return problems


def gpu_of(device_id: str) -> str:
    """The GPU of a device ID: ``GPU-x`` (a whole GPU) or ``GPU-x::n`` (a vcuda slice or a replica)."""
    return device_id.partition("::")[0]


def mode_violations(
    inventory: NodeInventory,
    core: str,
    advertised: Mapping[str, Iterable[str]],
    held: Iterable[tuple[str, str, str, Iterable[str]]],
    assigned: Iterable[str] = (),
) -> list[str]:
    """Invariant 4 on one node. ``advertised``: resource -> the device IDs its plugin endpoint lists;
    ``held``: (pod uid, container, resource, device IDs) the kubelet gave; ``assigned``: GPU UUIDs named by
    the node's signed assignments."""
    shared = {g.uuid for g in inventory.gpus}
    sold: dict[str, OtherModeGpu] = {str(o.uuid): o for o in inventory.other}
    problems = [
        f"GPU {u} listed as vcuda shares and in mode {sold[u].mode.value}" for u in sorted(shared & set(sold))
    ]
    owner: dict[str, str] = {}
    for resource, ids in sorted(advertised.items()):
        for gpu in sorted({gpu_of(i) for i in ids}):
            if owner.setdefault(gpu, resource) != resource:
                problems.append(f"GPU {gpu} advertised as both {owner[gpu]} and {resource}")
            elif resource == core and gpu not in shared:
                problems.append(f"GPU {gpu} advertised as {core} but not sold as vcuda shares")
            elif resource != core and (gpu not in sold or sold[gpu].resource != resource):
                problems.append(
                    f"GPU {gpu} advertised as {resource}, which the inventory does not sell it as"
                )
    through: dict[str, set[str]] = {}
    users: Counter[str] = Counter()
    for _, _, resource, ids in held:
        for gpu in {gpu_of(i) for i in ids}:
            through.setdefault(gpu, set()).add(resource)
            if resource != core:
                users[gpu] += 1
    problems += [
        f"GPU {gpu} held through {', '.join(sorted(r))}" for gpu, r in sorted(through.items()) if len(r) > 1
    ]
    for gpu, count in sorted(users.items()):
        limit = sold[gpu].replicas if gpu in sold else 0
        if count > limit:
            problems.append(f"GPU {gpu} held by {count} containers, sold to at most {limit}")
    problems += [
        f"an assignment names GPU {u}, which is not sold as vcuda shares"
        for u in sorted(set(assigned) - shared)
    ]
    return problems


def _split(ids: Iterable[str]) -> dict[str, int]:
    return dict(Counter(i.rpartition("::")[0] for i in ids))


def _check_node(
    node: SimNode, pods: dict[str, Obj], assignments: dict[str, PodAssignment], core: str
) -> list[str]:
    problems = []
    holders: dict[str, list[tuple[str, ContainerKind]]] = {}
    for uid, held in node.kubelet.checkpoint.pods.items():
        pod, assignment = pods.get(uid), assignments.get(uid)
        kinds = container_kinds(pod)
        for name, resources in held.containers.items():
            for resource, other in resources.items():
                if resource != core:  # nvidia.com/gpu and friends: an ID is a device of its resource
                    for device in other.ids:
                        holders.setdefault(f"{resource}:{device}", []).append(
                            (uid, kinds.get(name, ContainerKind.APP))
                        )
            alloc = resources.get(core)
            if alloc is None:
                continue
            for device in alloc.ids:
                holders.setdefault(device, []).append((uid, kinds.get(name, ContainerKind.APP)))
            where = f"{node.name}/{held.name}/{name}"
            if pod is None or assignment is None or assignment.container(name) is None:
                problems.append(f"{where}: holds {len(alloc.ids)} slices but has no assignment")
                continue
            problems += _check_container(where, pod, assignment.container(name), alloc.ids, alloc.response)  # type: ignore[arg-type]
    return problems + [f"{node.name}: {p}" for p in double_sales(holders)]


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
            for resource in sorted(node.kubelet.checkpoint.resources):
                if limits.get(resource) and node.kubelet.checkpoint.get(uid, c["name"], resource) is None:
                    problems.append(f"{pod['metadata']['name']}/{c['name']}: running without {resource}")
    return problems


def _check_modes(
    node: SimNode, inventory: NodeInventory | None, assignments: dict[str, PodAssignment], core: str
) -> list[str]:
    if inventory is None:
        return []
    advertised = {r: list(e.devices) for r, e in node.kubelet.devices.endpoints.items() if not e.stopped}
    held = [
        (uid, name, resource, alloc.ids)
        for uid, pod_devices in node.kubelet.checkpoint.pods.items()
        for name, resources in pod_devices.containers.items()
        for resource, alloc in resources.items()
    ]
    assigned = [
        s.uuid for a in assignments.values() if a.node == node.name for c in a.containers for s in c.shares
    ]
    return [f"{node.name}: {p}" for p in mode_violations(inventory, core, advertised, held, assigned)]


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
    problems += overcommit(
        inventories, (pod_gpu_use(container_kinds(pods[u]), a) for u, a in assignments.items())
    )
    for node in cluster.nodes.values():
        problems += _check_node(node, pods, assignments, cluster.names.core)
        problems += _check_modes(node, inventories.get(node.name), assignments, cluster.names.core)
    dra_nodes = [n.name for n in cluster.nodes.values() if n.spec.front_end == "dra"]
    if dra_nodes:
        slices, claims = await cluster.kube.list("resourceslices"), await cluster.kube.list("resourceclaims")
        problems += dra_overcommit(slices, claims, dra_nodes)
    return problems + _unallocated(cluster, pods.values())
