"""One GPU, one mode: which GPUs are vcuda shares and which are ``nvidia.com/gpu`` (whole, time-sliced, MPS).

Without NVIDIA's config every GPU without MIG is sold as vcuda shares. With it (docs/nvidia-plugin.md):

1. ``kubeVgpu.vcudaDevices`` picks the GPUs kept as vcuda shares first;
2. each ``sharing.<strategy>.resources[]`` entry, in file order, takes the GPUs its ``devices`` selects
   among those left (``all``: every one left; a count: the first N left by index; a list: exactly those,
   each of which must exist, be free and have MIG off);
3. every GPU left gets ``kubeVgpu.defaultMode``: ``whole`` (one ``nvidia.com/gpu`` each, as NVIDIA's plugin
   serves GPUs no sharing resource names) or ``vcuda``.

A switch of a GPU's mode is held back while any container holds one of its devices
(:func:`hold_switches`): the old mode stays until the GPU is free. Pure.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from plugin.core.errors import ConfigError
from plugin.core.gpu import Gpu
from plugin.core.mig import shareable
from plugin.core.nvconfig import (
    RESOURCE_PREFIX,
    DeviceSelector,
    NvidiaConfig,
    SharingStrategy,
)
from vcuda.model import GpuMode, GpuUuid, OtherModeGpu

__all__ = [
    "WHOLE_RESOURCE",
    "GpuPlan",
    "ModePlan",
    "decode_modes",
    "encode_modes",
    "gpu_of_device",
    "hold_switches",
    "withhold_unknown",
    "plan_modes",
    "sharing_labels",
]

WHOLE_RESOURCE: Final = f"{RESOURCE_PREFIX}/gpu"
_MODE_OF: Final = {SharingStrategy.TIME_SLICING: GpuMode.TIME_SLICING, SharingStrategy.MPS: GpuMode.MPS}


@dataclass(frozen=True, slots=True)
class GpuPlan:
    """How one GPU is sold: its mode, the resource it is advertised under and its replicas (1: whole)."""

    uuid: GpuUuid
    index: int
    mode: GpuMode
    resource: str = ""
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class ModePlan:
    """Every non-MIG GPU's plan, by index; ``strategy`` is the node's sharing strategy."""

    gpus: tuple[GpuPlan, ...] = ()
    strategy: SharingStrategy = SharingStrategy.NONE
    nvidia: bool = False
    """Whether NVIDIA's config was given (then GFD's sharing labels are written)."""
    renamed: bool = False
    withheld: tuple[GpuPlan, ...] = ()
    """GPUs sold in no mode (:func:`withhold_unknown`): in the inventory's ``other`` list as unhealthy, so the
    extender places nothing on them, and served by no resource."""

    def vcuda(self) -> frozenset[GpuUuid]:
        return frozenset(p.uuid for p in self.gpus if p.mode is GpuMode.VCUDA)

    def resources(self) -> dict[str, tuple[GpuPlan, ...]]:
        """Resource name -> its GPUs (vcuda GPUs are served by ``vcuda-core``, not here)."""
        out: dict[str, list[GpuPlan]] = {}
        for p in self.gpus:
            if p.mode is not GpuMode.VCUDA:
                out.setdefault(p.resource, []).append(p)
        return {name: tuple(plans) for name, plans in sorted(out.items())}

    def other(self, gpus: Sequence[Gpu], healthy: Mapping[GpuUuid, bool]) -> tuple[OtherModeGpu, ...]:
        """The inventory's ``other`` list: GPUs sold other than as vcuda shares."""
        by_uuid = {g.uuid: g for g in gpus}
        withheld = tuple(
            OtherModeGpu(
                p.uuid,
                p.index,
                by_uuid[p.uuid].model,
                by_uuid[p.uuid].memory_mib,
                GpuMode.WHOLE if p.mode is GpuMode.VCUDA else p.mode,
                p.resource or WHOLE_RESOURCE,
                p.replicas,
                healthy=False,
            )
            for p in self.withheld
        )
        return withheld + tuple(
            OtherModeGpu(
                p.uuid,
                p.index,
                by_uuid[p.uuid].model,
                by_uuid[p.uuid].memory_mib,
                p.mode,
                p.resource,
                p.replicas,
                healthy.get(p.uuid, True),
            )
            for p in self.gpus
            if p.mode is not GpuMode.VCUDA
        )


def _pick(
    selector: DeviceSelector, free: Sequence[Gpu], every: Sequence[Gpu], taken: Mapping[str, str], key: str
) -> list[Gpu]:
    if selector.all:
        return list(free)
    if selector.count:
        if selector.count > len(free):
            raise ConfigError(
                f"{key}: asks for {selector.count} GPUs, only {len(free)} are left on this node"
            )
        return list(free[: selector.count])
    picked = []
    for ref in selector.refs:
        gpu = next((g for g in every if ref in (str(g.index), g.uuid)), None)
        if gpu is None:
            raise ConfigError(f"{key}: {ref} names no GPU on this node")
        if not shareable(gpu):
            raise ConfigError(f"{key}: GPU {ref} has MIG enabled; MIG GPUs are served as MIG instances")
        if gpu.uuid in taken:
            raise ConfigError(f"{key}: GPU {ref} is already taken by {taken[gpu.uuid]}")
        picked.append(gpu)
    return picked


def plan_modes(gpus: Sequence[Gpu], config: NvidiaConfig | None) -> ModePlan:
    """Each non-MIG GPU's mode; raises :class:`ConfigError` naming the key of an impossible selection."""
    every = sorted(gpus, key=lambda g: (g.index, g.uuid))
    usable = [g for g in every if shareable(g)]
    if config is None:
        return ModePlan(tuple(GpuPlan(g.uuid, g.index, GpuMode.VCUDA) for g in usable))
    taken: dict[str, str] = {}
    plans: dict[str, GpuPlan] = {}

    def take(picked: Sequence[Gpu], plan: GpuPlan, key: str) -> None:
        for g in picked:
            taken[g.uuid] = key
            plans[g.uuid] = replace(plan, uuid=g.uuid, index=g.index)

    ext = config.extension
    if ext.vcuda_devices is not None:
        key = "kubeVgpu.vcudaDevices"
        take(_pick(ext.vcuda_devices, usable, every, taken, key), GpuPlan(GpuUuid(""), 0, GpuMode.VCUDA), key)
    sharing = config.sharing
    for i, res in enumerate(sharing.resources):
        key = f"sharing.{_section(sharing.strategy)}.resources[{i}].devices"
        free = [g for g in usable if g.uuid not in taken]
        plan = GpuPlan(GpuUuid(""), 0, _MODE_OF[sharing.strategy], res.served_as, res.replicas)
        take(_pick(res.devices, free, every, taken, key), plan, key)
    _check_memory(ext.memory_mib, [(g, plans[g.uuid].replicas) for g in usable if g.uuid in plans])
    rest = GpuPlan(
        GpuUuid(""), 0, ext.default_mode, "" if ext.default_mode is GpuMode.VCUDA else WHOLE_RESOURCE
    )
    take([g for g in usable if g.uuid not in taken], rest, "kubeVgpu.defaultMode")
    ordered = tuple(plans[g.uuid] for g in usable)
    renamed = any(r.rename for r in sharing.resources)
    return ModePlan(ordered, sharing.strategy, nvidia=True, renamed=renamed)


def _check_memory(memory_mib: int, shared: Sequence[tuple[Gpu, int]]) -> None:
    """A set per-replica memory must fit every shared GPU's replicas: more would let the replicas of a GPU
    promise more memory than it has, so one replica's allocations fail another's (no isolation)."""
    for gpu, replicas in shared:
        if memory_mib and replicas > 1 and memory_mib * replicas > gpu.memory_mib:
            raise ConfigError(
                f"kubeVgpu.timeSlicing.memoryMiB: {memory_mib} MiB x {replicas} replicas is more than GPU "
                f"{gpu.index}'s {gpu.memory_mib} MiB"
            )


def _section(strategy: SharingStrategy) -> str:
    return "mps" if strategy is SharingStrategy.MPS else "timeSlicing"


def gpu_of_device(device_id: str) -> str:
    """The GPU UUID of a device ID: ``GPU-x`` (whole), ``GPU-x::n`` (replica or vcuda slice)."""
    return device_id.partition("::")[0]


def hold_switches(
    previous: Mapping[str, GpuPlan], wanted: ModePlan, held: frozenset[str]
) -> tuple[ModePlan, tuple[str, ...]]:
    """The plan to serve: ``wanted``, except GPUs whose plan changed while a container holds one of their
    devices keep their previous plan; with one sentence per GPU held back."""
    effective, refused = [], []
    for plan in wanted.gpus:
        old = previous.get(plan.uuid)
        if old is not None and old != plan and plan.uuid in held:
            refused.append(
                f"GPU {plan.index} ({plan.uuid}) stays {_describe(old)}: a container holds it, so it cannot "
                f"become {_describe(plan)} until it is free"
            )
            effective.append(old)
        else:
            effective.append(plan)
    return replace(wanted, gpus=tuple(effective)), tuple(refused)


def withhold_unknown(
    wanted: ModePlan, held: Mapping[str, frozenset[str]] | None, core: str
) -> tuple[ModePlan, tuple[str, ...]]:
    """The plan to serve when the record of the served plan is unreadable, so no GPU's previous mode is
    known: a GPU a container holds a device of that ``wanted`` would not serve under that resource and ID (a
    whole GPU for a replica or the reverse, a replica beyond the count, another resource) may be switching,
    and is withheld: sold in no mode until a start finds it free. ``held``: resource -> device IDs held
    (PodResources, every resource); None (unreadable): every GPU is withheld. One sentence per GPU."""
    by_gpu: dict[str, set[tuple[str, str]]] = {}
    for resource, ids in (held or {}).items():
        for device in ids:
            by_gpu.setdefault(gpu_of_device(device), set()).add((resource, device))
    served, refused = [], []
    for plan in wanted.gpus:
        odd = sorted(h for h in by_gpu.get(plan.uuid, ()) if not _serves(plan, core, *h))
        if held is None or odd:
            why = (
                "PodResources cannot be read"
                if held is None
                else f"a container holds {odd[0][1]} ({odd[0][0]})"
            )
            refused.append(
                f"GPU {plan.index} ({plan.uuid}) is withheld: the record of GPU modes is unreadable and "
                f"{why}, so it cannot become {_describe(plan)} until it is free"
            )
        else:
            served.append(plan)
    withheld = tuple(p for p in wanted.gpus if p not in served)
    return replace(wanted, gpus=tuple(served), withheld=withheld), tuple(refused)


def _serves(plan: GpuPlan, core: str, resource: str, device: str) -> bool:
    """Whether ``plan`` serves ``device`` under ``resource`` (a container holding it is in this mode)."""
    if plan.mode is GpuMode.VCUDA:
        return resource == core
    _, sep, n = device.partition("::")
    if resource != plan.resource:
        return False
    return not sep if plan.replicas == 1 else bool(sep) and n.isdigit() and int(n) < plan.replicas


def _describe(plan: GpuPlan) -> str:
    if plan.mode is GpuMode.VCUDA:
        return "vcuda shares"
    suffix = f" x{plan.replicas}" if plan.replicas > 1 else ""
    return f"{plan.mode.value} ({plan.resource}{suffix})"


def encode_modes(plan: ModePlan) -> dict[str, Any]:
    """The served plan as JSON-ready data (kept in the state directory across restarts)."""
    return {
        "v": 1,
        "gpus": [
            {
                "uuid": p.uuid,
                "index": p.index,
                "mode": p.mode.value,
                "resource": p.resource,
                "replicas": p.replicas,
            }
            for p in plan.gpus
        ],
    }


def decode_modes(doc: object) -> dict[str, GpuPlan]:
    """uuid -> plan from :func:`encode_modes`; raises ValueError for an unreadable record (then nothing
    says which mode a GPU was in: :func:`withhold_unknown`)."""
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("gpus"), list):
        raise ValueError("not a version 1 record of GPU modes")
    out: dict[str, GpuPlan] = {}
    for item in doc["gpus"]:
        try:
            plan = GpuPlan(
                GpuUuid(str(item["uuid"])),
                int(item["index"]),
                GpuMode(item["mode"]),
                str(item["resource"]),
                int(item["replicas"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"a GPU's entry is unreadable: {type(err).__name__}") from None
        out[plan.uuid] = plan
    return out


def sharing_labels(plan: ModePlan, product: str, label: Any) -> dict[str, str]:
    """GFD's sharing labels (only with NVIDIA's config): ``gpu.replicas``, ``gpu.sharing-strategy`` and
    ``gpu.product`` with ``-SHARED`` when replicas are advertised under the unrenamed name."""
    if not plan.nvidia:
        return {}
    replicas = max((p.replicas for p in plan.gpus if p.mode is not GpuMode.VCUDA), default=1)
    strategy = plan.strategy if replicas > 1 else SharingStrategy.NONE
    labels = {label("gpu.replicas"): str(replicas), label("gpu.sharing-strategy"): strategy.value}
    if replicas > 1 and not plan.renamed and product:
        labels[label("gpu.product")] = f"{product[: 63 - len('-SHARED')]}-SHARED"
    return labels
