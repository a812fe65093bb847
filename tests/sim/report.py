"""Plain-text tables of where containers landed and why pods did not, for the demo and test failures."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.sim.cluster import PodState
from tests.sim.kubeapi import Obj
from vcuda.annotations import decode_assignment_unverified, decode_inventory
from vcuda.errors import ContractError
from vcuda.model import GpuInfo
from vcuda.names import Names
from vcuda.units import CORE_PER_GPU

__all__ = ["Placement", "format_table", "placements", "render_placements", "render_unplaced"]


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
