"""Plain-text tables of where containers landed and why pods did not, for the demo and test failures."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tests.sim.checkpoint import Checkpoint
from tests.sim.cluster import PodState
from tests.sim.kubeapi import Obj
from vcuda.annotations import decode_assignment_unverified, decode_inventory
from vcuda.errors import ContractError
from vcuda.model import GpuInfo, OtherModeGpu
from vcuda.names import CONTAINER_CONFIG_PATH, Names
from vcuda.shimfile import decode_config
from vcuda.units import CORE_PER_GPU

__all__ = [
    "DeviceRow",
    "Placement",
    "device_rows",
    "format_table",
    "placements",
    "render_devices",
    "render_placements",
    "render_unplaced",
]


@dataclass(frozen=True, slots=True)
class Placement:
    pod: str
    container: str
    node: str
    gpu: str
    cores: str
    memory: str


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _gpus(nodes: Sequence[Obj], names: Names) -> dict[str, GpuInfo]:
    out: dict[str, GpuInfo] = {}
    for node in nodes:
        raw = (node["metadata"].get("annotations") or {}).get(names.inventory)
        if raw:
            try:
                out.update({g.uuid: g for g in decode_inventory(raw).gpus})
            except ContractError:
                continue
    return out


def _gpu_label(uuid: str, gpus: Mapping[str, GpuInfo]) -> str:
    gpu = gpus.get(uuid)
    if gpu is None:
        return uuid[:12]
    model = gpu.model.removeprefix("NVIDIA ").split(" ")[0]
    return f"#{gpu.index} {model} ({uuid[4:12]})"


def placements(pods: Mapping[str, Obj], nodes: Sequence[Obj], names: Names) -> list[Placement]:
    """One row per (container, GPU) of every pod with an assignment, in pod order."""
    gpus, rows = _gpus(nodes, names), []
    for key in sorted(pods):
        raw = (pods[key]["metadata"].get("annotations") or {}).get(names.assignment)
        if raw is None:
            continue
        assignment = decode_assignment_unverified(raw)
        for container in assignment.containers:
            for share in container.shares:
                if share.cores >= CORE_PER_GPU:
                    cores = "100 (whole GPU)"
                elif container.core_limit > share.cores:
                    cores = f"{share.cores} (soft to {container.core_limit})"
                else:
                    cores = str(share.cores)
                rows.append(Placement(key.split("/", 1)[1], container.name, assignment.node,
                                      _gpu_label(share.uuid, gpus), cores, f"{share.memory_mib} MiB"))  # fmt: skip
    return rows


def render_placements(rows: Sequence[Placement], states: Mapping[str, PodState]) -> str:
    header = ("POD", "CONTAINER", "NODE", "GPU", "CORES %", "MEMORY", "STATE")
    body = [(r.pod, r.container, r.node, r.gpu, r.cores, r.memory, states.get(f"default/{r.pod}", PodState("?")).phase)
            for r in rows]  # fmt: skip
    return format_table(header, body)


def render_unplaced(states: Mapping[str, PodState]) -> str:
    rows = [
        (key.split("/", 1)[1], s.phase, s.message)
        for key, s in sorted(states.items())
        if s.phase != "running"
    ]
    return format_table(("POD", "STATE", "REASON"), rows) if rows else "(every pod was placed)"


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A container's devices of a resource other than ``vcuda-core`` (whole GPUs, replicas), as its node's
    kubelet handed them out."""

    pod: str
    container: str
    node: str
    resource: str
    gpu: str
    devices: str
    shim: str = "-"
    """The limits of the shim config the plugin mounted (isolated replicas), ``-`` without one."""


def _others(nodes: Sequence[Obj], names: Names) -> dict[str, OtherModeGpu]:
    out: dict[str, OtherModeGpu] = {}
    for node in nodes:
        raw = (node["metadata"].get("annotations") or {}).get(names.inventory)
        if raw:
            try:
                out.update({o.uuid: o for o in decode_inventory(raw).other})
            except ContractError:
                continue
    return out


def device_rows(
    pods: Mapping[str, Obj], nodes: Sequence[Obj], names: Names, checkpoints: Mapping[str, Checkpoint]
) -> list[DeviceRow]:
    """One row per (container, resource) of every pod holding devices of a resource other than
    ``vcuda-core``, from each node's kubelet checkpoint, in pod order."""
    others, rows = _others(nodes, names), []
    for key in sorted(pods):
        pod = pods[key]
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        held = checkpoints[node].pods.get(str(pod["metadata"].get("uid"))) if node in checkpoints else None
        for container, resources in sorted((held.containers if held else {}).items()):
            for resource, alloc in sorted(resources.items()):
                if resource == names.core:
                    continue
                gpus = sorted({i.partition("::")[0] for i in alloc.ids})
                labels = []
                for uuid in gpus:
                    o = others.get(uuid)
                    labels.append(
                        f"#{o.index} {o.model.removeprefix('NVIDIA ').split(' ')[0]} ({uuid[4:12]}) {o.mode.value}"
                        + (f" x{o.replicas}" if o.replicas > 1 else "")
                        if o is not None
                        else uuid[:12]
                    )
                ids = ", ".join(
                    i.replace(uuid, uuid[:12]) for i in alloc.ids for uuid in gpus if i.startswith(uuid)
                )
                row = DeviceRow(key.split("/", 1)[1], container, node, resource, "; ".join(labels), ids)
                rows.append(replace(row, shim=_shim_limits(alloc.response)))
    return rows


def _shim_limits(response: Any) -> str:
    """``<MiB> MiB, <cores> %`` per GPU of the shim config ``response`` mounts, ``-`` without one."""
    mounts = {m.container_path: m.host_path for m in response.mounts}
    if CONTAINER_CONFIG_PATH not in mounts:
        return "-"
    try:
        config = decode_config(Path(mounts[CONTAINER_CONFIG_PATH]).read_bytes())
    except (OSError, ContractError) as err:
        return f"unreadable ({err})"
    return "; ".join(f"{g.memory_limit_bytes >> 20} MiB, {g.core_limit} %" for g in config.gpus)


def render_devices(rows: Sequence[DeviceRow], states: Mapping[str, PodState]) -> str:
    header = ("POD", "CONTAINER", "NODE", "RESOURCE", "GPU (MODE)", "DEVICE IDS", "SHIM LIMITS", "STATE")
    body = [(r.pod, r.container, r.node, r.resource, r.gpu, r.devices, r.shim,
             states.get(f"default/{r.pod}", PodState("?")).phase) for r in rows]  # fmt: skip
    return format_table(header, body) if body else "(no pod holds whole GPUs or replicas)"
