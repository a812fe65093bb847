"""``kubectl vgpu``: a read-only view of GPU capacity and vGPU pods, built from the API server only.

``nodes`` lists every GPU of every node that publishes a ``vgpu-inventory`` annotation with its mode (one
GPU, one mode: ``vcuda`` shares, or sold ``whole``, as ``time-slicing`` / ``mps`` replicas or ``dra``
claims through another resource), the compute and memory allocated on a shared GPU and the pods holding it
(the API shows no holder of an ``nvidia.com/gpu`` device: the kubelet keeps that); a node whose inventory is
unreadable is named below the table; ``mig`` lists the nodes' MIG instances (served whole, as
extended resources, so the API shows no holder per instance); ``pods`` lists each vGPU pod's GPUs, limits and
phase; ``claims`` lists the ResourceClaims of the DRA driver with the share each holds
(:mod:`kube_vgpu_kubectl.claims`). The user's kubeconfig is used; nothing is written. Assignments are decoded
**without verifying** their signature (kubectl is given no keys), and the output says so.
"""

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol, TypeVar

from kube_vgpu_kubectl.claims import claim_rows, dra_device_use, render_claims
from vcuda.annotations import decode_assignment_unverified, decode_inventory, decode_status
from vcuda.errors import ContractError
from vcuda.model import GpuInfo, GpuMode, NodeInventory, OtherModeGpu, Phase, PodAssignment
from vcuda.names import DEFAULT_DOMAIN, Names
from vcuda.request import wants_gpu
from vcuda.units import CORE_PER_GPU

__all__ = [
    "ClusterReader",
    "GpuRow",
    "KubeClusterReader",
    "MigRow",
    "PodRow",
    "gpu_rows",
    "main",
    "mig_rows",
    "pod_rows",
    "refused_nodes",
]

Obj = Mapping[str, Any]
T = TypeVar("T")
_DONE_PHASES = frozenset({"Succeeded", "Failed"})
UNVERIFIED_NOTE = "allocations read from unverified vgpu-assignment annotations"


class ClusterReader(Protocol):
    """The two reads the plugin needs, as raw Kubernetes JSON objects."""

    def list_nodes(self) -> list[dict[str, Any]]: ...

    def list_pods(self, namespace: str | None) -> list[dict[str, Any]]:
        """Pods of one namespace, or of all namespaces when None."""
        ...

    def list_resource_claims(self, namespace: str | None) -> list[dict[str, Any]]:
        """``resource.k8s.io/v1`` ResourceClaims of one namespace, or of all when None."""
        ...


class KubeClusterReader:
    """A :class:`ClusterReader` over the official client (raw JSON, no model deserialisation)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._resource = client.ResourceV1Api(api_client)

    def list_nodes(self) -> list[dict[str, Any]]:
        return _items(self._core.list_node(_preload_content=False))

    def list_pods(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            return _items(self._core.list_pod_for_all_namespaces(_preload_content=False))
        return _items(self._core.list_namespaced_pod(namespace, _preload_content=False))

    def list_resource_claims(self, namespace: str | None) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._claims(namespace)
        except ApiException as err:
            if err.status == 404:  # a cluster before 1.34 serves no resource.k8s.io/v1: no claims
                return []
            raise

    def _claims(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            return _items(self._resource.list_resource_claim_for_all_namespaces(_preload_content=False))
        return _items(self._resource.list_namespaced_resource_claim(namespace, _preload_content=False))


def _items(response: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


# --- pure views ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuRow:
    node: str
    index: int
    uuid: str
    model: str
    healthy: bool
    memory_mib: int
    cores_allocated: int
    memory_allocated_mib: int
    pods: tuple[str, ...]
    mode: str = GpuMode.VCUDA.value
    resource: str = ""
    """The resource the GPU is sold through (``vcuda-core`` for shares, ``nvidia.com/gpu`` ...)."""
    replicas: int = 1
    """Pods that may share the GPU in its mode (time-slicing / MPS); 1 whole, 1 for shares (by compute)."""


@dataclass(frozen=True, slots=True)
class MigRow:
    node: str
    parent: str
    uuid: str
    profile: str
    memory_mib: int
    multiprocessors: int


@dataclass(frozen=True, slots=True)
class ShareRow:
    container: str
    gpu: str
    cores: int
    core_limit: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class PodRow:
    namespace: str
    pod: str
    node: str
    phase: str  # the vGPU phase: assumed / allocated / failed, "pending" before placement, "invalid"
    pod_phase: str
    shares: tuple[ShareRow, ...] = field(default=())


def _meta(obj: Obj, key: str) -> str:
    return str((obj.get("metadata") or {}).get(key) or "")


def _annotation(obj: Obj, key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    return value if isinstance(value, str) else None


def _decoded(obj: Obj, key: str, decode: Callable[[str], T]) -> T | None:
    """Annotation ``key`` decoded; None when absent or unreadable (the view skips it)."""
    text = _annotation(obj, key)
    try:
        return None if text is None else decode(text)
    except ContractError:
        return None


def _assignment(pod: Obj, names: Names) -> PodAssignment | None:
    return _decoded(pod, names.assignment, decode_assignment_unverified)


def _vgpu_phase(pod: Obj, names: Names) -> str:
    text = _annotation(pod, names.status)
    if text is None:
        return Phase.ASSUMED.value
    try:
        return decode_status(text).phase.value
    except ContractError:
        return "invalid"


def _holds_gpus(pod: Obj, names: Names) -> bool:
    """The pod's assignment still counts: not finished, and the plugin did not fail it."""
    pod_phase = str((pod.get("status") or {}).get("phase") or "")
    return pod_phase not in _DONE_PHASES and _vgpu_phase(pod, names) != Phase.FAILED.value


def gpu_rows(
    nodes: Iterable[Obj], pods: Iterable[Obj], names: Names, claims: Iterable[Obj] = ()
) -> list[GpuRow]:
    """One row per GPU of every node with an inventory, ordered by node then GPU index; the GPUs of DRA nodes
    (the inventory's ``other``, mode ``dra``) with what the driver's allocated ``claims`` take of them."""
    used: dict[tuple[str, str], tuple[int, int, list[str]]] = {}
    for pod in pods:
        assignment = _assignment(pod, names)
        if assignment is None or not _holds_gpus(pod, names):
            continue
        who = f"{_meta(pod, 'namespace')}/{_meta(pod, 'name')}"
        for c in assignment.containers:
            for s in c.shares:
                cores, memory, holders = used.get((assignment.node, s.uuid), (0, 0, []))
                used[(assignment.node, s.uuid)] = (cores + s.cores, memory + s.memory_mib, [*holders, who])
    rows = []
    for node in nodes:
        inventory, name = _inventory(node, names), _meta(node, "name")
        for g in () if inventory is None else inventory.gpus:
            cores, memory, holders = used.get((name, g.uuid), (0, 0, []))
            rows.append(_row(name, g, (cores, memory, holders), resource=names.core))
        used = dra_device_use(claims, names.domain)
        for o in () if inventory is None else inventory.other:
            rows.append(_dra_row(name, o, used) if o.mode is GpuMode.DRA else _other_row(name, o))
    return sorted(rows, key=lambda r: (r.node, r.index, r.uuid))


def _row(
    node: str,
    g: GpuInfo | OtherModeGpu,
    use: tuple[int, int, Sequence[str]] = (0, 0, ()),
    *,
    mode: GpuMode = GpuMode.VCUDA,
    resource: str = "",
    replicas: int = 1,
) -> GpuRow:
    """The row of GPU ``g`` of ``node`` with ``use``: the compute and memory allocated on it and the pods
    holding them (a pod counted once however many of its containers share the GPU)."""
    cores, memory, holders = use
    return GpuRow(
        node,
        g.index,
        g.uuid,
        g.model,
        g.healthy,
        g.memory_mib,
        cores,
        memory,
        tuple(sorted(set(holders))),
        mode.value,
        resource,
        replicas,
    )


def _other_row(node: str, o: OtherModeGpu) -> GpuRow:
    """A GPU sold whole or as replicas of ``nvidia.com/gpu`` (the kubelet counts its pods, not we)."""
    return _row(node, o, mode=o.mode, resource=o.resource, replicas=o.replicas)


def _dra_row(node: str, g: OtherModeGpu, used: Mapping[Any, Any]) -> GpuRow:
    """A DRA GPU; the driver names a GPU's device ``gpu-<uuid without GPU->`` in lower case (docs/dra.md)."""
    device = "gpu-" + g.uuid.removeprefix("GPU-").lower()
    cores, memory, holders = used.get((node, device), (0, 0, []))
    memory = g.memory_mib if cores >= CORE_PER_GPU else memory
    use = (min(cores, CORE_PER_GPU), memory, holders)
    return _row(node, g, use, mode=g.mode, resource=g.resource, replicas=g.replicas)


def refused_nodes(nodes: Iterable[Obj], names: Names) -> list[tuple[str, str]]:
    """``(node, why)`` for every node whose inventory annotation is unreadable (the extender refuses it too:
    no shares go there)."""
    refused = []
    for node in nodes:
        text = _annotation(node, names.inventory)
        try:
            if text is not None:
                decode_inventory(text)
        except ContractError as err:
            refused.append((_meta(node, "name"), str(err)[:160]))
    return sorted(refused)


def mig_rows(nodes: Iterable[Obj], names: Names) -> list[MigRow]:
    """One row per MIG instance of every node with an inventory, ordered by node, parent GPU and profile."""
    rows = []
    for node in nodes:
        inventory, name = _inventory(node, names), _meta(node, "name")
        for m in () if inventory is None else inventory.mig:
            rows.append(MigRow(name, m.parent, m.uuid, m.profile, m.memory_mib, m.multiprocessors))
    return sorted(rows, key=lambda r: (r.node, r.parent, r.profile, r.uuid))


def _inventory(node: Obj, names: Names) -> NodeInventory | None:
    """The node's published inventory; None when absent or unreadable (the view skips such nodes)."""
    return _decoded(node, names.inventory, decode_inventory)


def pod_rows(pods: Iterable[Obj], names: Names) -> list[PodRow]:
    """Every pod with an assignment or a vcuda request, ordered by namespace and name."""
    rows = []
    for pod in pods:
        assignment = _assignment(pod, names)
        pod_phase = str((pod.get("status") or {}).get("phase") or "")
        ns, name = _meta(pod, "namespace"), _meta(pod, "name")
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        if assignment is None:
            if _annotation(pod, names.assignment) is not None:
                rows.append(PodRow(ns, name, node, "invalid", pod_phase))
            elif wants_gpu(pod, names):
                rows.append(PodRow(ns, name, node, "pending", pod_phase))
            continue
        shares = tuple(
            ShareRow(c.name, s.uuid, s.cores, c.core_limit, s.memory_mib)
            for c in assignment.containers
            for s in c.shares
        )
        rows.append(PodRow(ns, name, node or assignment.node, _vgpu_phase(pod, names), pod_phase, shares))
    return sorted(rows, key=lambda r: (r.namespace, r.pod))


# --- output -------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "   ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


_SHARED_MODES: Final = (GpuMode.VCUDA, GpuMode.DRA)  # modes whose GPUs are sold by cores and memory


def render_gpus(rows: Sequence[GpuRow], refused: Sequence[tuple[str, str]] = ()) -> str:
    header = (
        "NODE",
        "GPU",
        "MODEL",
        "HEALTH",
        "MODE",
        "RESOURCE",
        "REPLICAS",
        "CORES",
        "MEMORY(MiB)",
        "PODS",
    )
    body = [
        (
            r.node,
            str(r.index),
            r.model,
            "Healthy" if r.healthy else "Unhealthy",
            r.mode,
            r.resource or "-",
            str(r.replicas) if r.mode not in _SHARED_MODES else "-",
            f"{r.cores_allocated}/{CORE_PER_GPU}" if r.mode in _SHARED_MODES else "-",
            f"{r.memory_allocated_mib}/{r.memory_mib}" if r.mode in _SHARED_MODES else f"-/{r.memory_mib}",
            ",".join(r.pods) or "-",
        )
        for r in rows
    ]
    notes = "".join(
        f"# node {n}: GPU inventory refused, no vcuda shares placed there ({why})\n" for n, why in refused
    )
    return _table(header, body) + notes + f"# {UNVERIFIED_NOTE}\n"


def render_mig(rows: Sequence[MigRow]) -> str:
    header = ("NODE", "GPU", "MIG-DEVICE", "PROFILE", "MEMORY(MiB)", "SMS")
    body = [(r.node, r.parent, r.uuid, r.profile, str(r.memory_mib), str(r.multiprocessors)) for r in rows]
    return _table(header, body)


def render_pods(rows: Sequence[PodRow]) -> str:
    header = (
        "NAMESPACE",
        "POD",
        "NODE",
        "CONTAINER",
        "GPU",
        "CORES",
        "CORE-LIMIT",
        "MEMORY(MiB)",
        "PHASE",
        "STATUS",
    )
    body: list[tuple[str, ...]] = []
    for r in rows:
        lead = (r.namespace, r.pod, r.node or "-")
        tail = (r.phase, r.pod_phase or "-")
        if not r.shares:
            body.append((*lead, "-", "-", "-", "-", "-", *tail))
        for s in r.shares:
            body.append(
                (*lead, s.container, s.gpu, str(s.cores), str(s.core_limit), str(s.memory_mib), *tail)
            )
    return _table(header, body) + f"# {UNVERIFIED_NOTE}\n"


def render_json(kind: str, rows: Sequence[Any]) -> str:
    doc = {kind: [asdict(r) for r in rows], "verified": False, "note": UNVERIFIED_NOTE}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", choices=("table", "json"), default="table")
    common.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    common.add_argument("--context", default=None, help="kubeconfig context")
    common.add_argument("--domain", default=DEFAULT_DOMAIN, help="resource and annotation domain")
    parser = argparse.ArgumentParser(prog="kubectl vgpu", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("nodes", parents=[common], help="GPUs per node: capacity, allocation, pods")
    sub.add_parser("mig", parents=[common], help="MIG instances per node: parent GPU, profile, memory")
    pods = sub.add_parser("pods", parents=[common], help="vGPU pods: GPUs, limits, phase")
    claims = sub.add_parser("claims", parents=[common], help="DRA ResourceClaims: device, share, pods")
    for namespaced in (pods, claims):
        scope = namespaced.add_mutually_exclusive_group()
        scope.add_argument("-n", "--namespace", default=None)
        scope.add_argument("-A", "--all-namespaces", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, cluster: ClusterReader) -> str:
    names = Names(args.domain)
    if args.command == "nodes":
        nodes = cluster.list_nodes()
        gpus = gpu_rows(nodes, cluster.list_pods(None), names, cluster.list_resource_claims(None))
        return (
            render_json("gpus", gpus)
            if args.output == "json"
            else render_gpus(gpus, refused_nodes(nodes, names))
        )
    if args.command == "mig":
        migs = mig_rows(cluster.list_nodes(), names)
        return render_json("mig", migs) if args.output == "json" else render_mig(migs)
    namespace = None if args.all_namespaces else (args.namespace or _current_namespace(args))
    if args.command == "claims":
        claims = claim_rows(cluster.list_resource_claims(namespace), args.domain)
        return render_json("claims", claims) if args.output == "json" else render_claims(claims, _table)
    pods = pod_rows(cluster.list_pods(namespace), names)
    return render_json("pods", pods) if args.output == "json" else render_pods(pods)


def _current_namespace(args: argparse.Namespace) -> str:
    """The namespace of the chosen kubeconfig context, as kubectl would use it."""
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    chosen = next((c for c in contexts if c["name"] == args.context), active) if args.context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from kubernetes import config
    from kubernetes.client.exceptions import ApiException

    try:
        api_client = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)  # type: ignore[no-untyped-call]
        sys.stdout.write(run(args, KubeClusterReader(api_client)))
    except (config.ConfigException, OSError) as err:
        print(f"kubectl-vgpu: cannot load kubeconfig: {err}", file=sys.stderr)
        return 1
    except ApiException as err:
        print(f"kubectl-vgpu: API server refused: {err.status} {err.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
