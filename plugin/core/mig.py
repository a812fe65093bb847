"""MIG decisions: which resources a strategy advertises, their device IDs, node labels, per-instance health.

A MIG instance (a GPU instance with one compute instance) is hardware-isolated and handed out whole; its
device ID is its MIG UUID. Strategies follow NVIDIA's device plugin (``--mig-strategy``):

- ``none``: MIG instances are not advertised;
- ``single``: every instance on the node has one profile, advertised as whole units of ``<domain>/gpu``
  (instances of different profiles are refused, as NVIDIA does);
- ``mixed``: one resource per profile, ``<domain>/mig-<profile>`` (``+`` becomes ``.``: ``mig-1g.10gb.me``).

A MIG-enabled GPU (or one whose MIG mode is pending) is never shared through the shim: it gets no
``vcuda-core`` slices and stays out of the inventory the extender reads (:func:`shareable_gpus`). GPUs
without MIG on the same node keep being shared. Standard library only.
"""

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from plugin.core.errors import ConfigError
from plugin.core.gpu import Gpu, MigInstance, XidEvent
from vcuda.model import GpuUuid
from vcuda.names import Names

__all__ = [
    "MigConfigError",
    "MigDevice",
    "MigStrategy",
    "is_mig_label",
    "mig_devices",
    "mig_layout_change",
    "mig_labels",
    "mig_resources",
    "partitioned",
    "profile_resource",
    "shareable",
    "shareable_gpus",
    "xid_targets",
]

_SLICES: Final = re.compile(r"^(?:(?P<ci>\d+)c\.)?(?P<gi>\d+)g\.")


class MigStrategy(StrEnum):
    NONE = "none"
    SINGLE = "single"
    MIXED = "mixed"


class MigConfigError(ConfigError):
    """MIG cannot be served as configured (a profile the GPU lacks, several profiles under ``single``)."""


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One advertised MIG instance with what Allocate needs of its parent GPU."""

    uuid: str
    parent: GpuUuid
    parent_index: int
    parent_minor: int
    numa_node: int
    profile: str
    gpu_instance_id: int
    compute_instance_id: int
    memory_mib: int
    multiprocessors: int


def shareable(gpu: Gpu) -> bool:
    """True when the GPU may be shared through the shim: MIG neither on nor pending (after a reset)."""
    return not gpu.mig_enabled and not gpu.mig_pending


def partitioned(gpu: Gpu) -> bool:
    """True when the GPU's MIG instances may be handed out: MIG on now and after the next reset (NVML's
    pending mode; a GPU whose mode change waits for a reset is neither shared nor partitioned)."""
    return gpu.mig_enabled and gpu.mig_pending


def shareable_gpus(gpus: Iterable[Gpu]) -> tuple[Gpu, ...]:
    """The GPUs ``vcuda-core`` and the extender's inventory may use; MIG GPUs are served whole, apart."""
    return tuple(g for g in gpus if shareable(g))


def _device(gpu: Gpu, mig: MigInstance) -> MigDevice:
    return MigDevice(
        uuid=mig.uuid,
        parent=gpu.uuid,
        parent_index=gpu.index,
        parent_minor=gpu.minor,
        numa_node=gpu.numa_node,
        profile=mig.profile,
        gpu_instance_id=mig.gpu_instance_id,
        compute_instance_id=mig.compute_instance_id,
        memory_mib=mig.memory_mib,
        multiprocessors=mig.multiprocessors,
    )


def mig_devices(gpus: Iterable[Gpu]) -> tuple[MigDevice, ...]:
    """Every MIG instance of every MIG-enabled GPU, by GPU index then instance ids (stable over restarts)."""
    found = (_device(g, m) for g in gpus if g.mig_enabled for m in g.mig_instances)
    return tuple(sorted(found, key=lambda d: (d.parent_index, d.gpu_instance_id, d.compute_instance_id)))


def profile_resource(profile: str) -> str:
    """The name part of a mixed-strategy resource: ``1g.10gb+me`` -> ``mig-1g.10gb.me``."""
    return "mig-" + profile.replace("+", ".")


def mig_resources(
    devices: Sequence[MigDevice], strategy: MigStrategy, names: Names
) -> dict[str, tuple[MigDevice, ...]]:
    """Resource name -> its devices under ``strategy``; raises :class:`MigConfigError` for ``single`` with
    several profiles (NVIDIA refuses that too: "more than one MIG device type present on node")."""
    if strategy is MigStrategy.NONE or not devices:
        return {}
    if strategy is MigStrategy.SINGLE:
        profiles = sorted({d.profile for d in devices})
        if len(profiles) > 1:
            raise MigConfigError(
                f"invalid setting --mig-strategy: 'single' needs one MIG profile on the node, found "
                f"{', '.join(profiles)}; use 'mixed' or re-partition the GPUs"
            )
        return {f"{names.domain}/gpu": tuple(devices)}
    by_profile: dict[str, list[MigDevice]] = defaultdict(list)
    for device in devices:
        by_profile[f"{names.domain}/{profile_resource(device.profile)}"].append(device)
    return {name: tuple(found) for name, found in sorted(by_profile.items())}


def _slices(profile: str) -> tuple[int, int]:
    """(GPU instance slices, compute instance slices) of ``3g.20gb`` (3, 3) or ``1c.3g.20gb`` (3, 1)."""
    match = _SLICES.match(profile)
    if match is None:
        return 0, 0
    gi = int(match["gi"])
    return gi, int(match["ci"]) if match["ci"] else gi


def _label_value(text: str) -> str:
    value = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text.strip())
    return value[:63].strip("._-")


def _profile_labels(
    devices: Sequence[MigDevice], models: Mapping[GpuUuid, str], names: Names
) -> dict[str, str]:
    labels: dict[str, str] = {}
    by_profile: dict[str, list[MigDevice]] = defaultdict(list)
    for device in devices:
        by_profile[device.profile].append(device)
    for profile, found in sorted(by_profile.items()):
        first = found[0]
        prefix = f"{profile_resource(profile)}."
        gi, ci = _slices(profile)
        labels |= {
            names.label(prefix + "count"): str(len(found)),
            names.label(prefix + "memory"): str(first.memory_mib),
            names.label(prefix + "multiprocessors"): str(first.multiprocessors),
            names.label(prefix + "slices.gi"): str(gi),
            names.label(prefix + "slices.ci"): str(ci),
            names.label(prefix + "product"): _label_value(f"{models[first.parent]}-MIG-{profile}"),
            names.label(prefix + "replicas"): "1",
            names.label(prefix + "sharing-strategy"): "none",
        }
    return labels


def mig_labels(
    gpus: Sequence[Gpu], capable: Set[GpuUuid], strategy: MigStrategy, names: Names
) -> dict[str, str]:
    """``<domain>/mig.capable``, ``mig.strategy`` and, under ``single``/``mixed``, per-profile labels as
    NVIDIA's GPU feature discovery writes them (``mig-1g.10gb.count``, ``.memory`` in MiB,
    ``.multiprocessors``, ``.slices.gi``/``.slices.ci``, ``.product``, ``.replicas``, ``.sharing-strategy``).
    ``capable``: GPUs that offer MIG profiles (NVML tells; a MIG-off A100 looks like an A10 otherwise)."""
    if not gpus:
        return {}
    labels = {
        names.label("mig.capable"): "true" if capable else "false",
        names.label("mig.strategy"): strategy.value,
    }
    if strategy is not MigStrategy.NONE:
        models = {g.uuid: g.model for g in gpus}
        labels |= _profile_labels(mig_devices(gpus), models, names)
    return labels


def is_mig_label(key: str, names: Names) -> bool:
    """Whether a node label is one :func:`mig_labels` writes (so a stale one can be removed)."""
    return key.startswith((names.label("mig."), names.label("mig-")))


def xid_targets(event: XidEvent, devices: Iterable[MigDevice]) -> tuple[str, ...]:
    """The MIG instances an XID concerns: the one named by its GPU/compute instance ids, or every instance
    of the GPU when the event names no instance (a whole-GPU error)."""
    on_gpu = [d for d in devices if d.parent == event.uuid]
    if event.gpu_instance_id is None:
        return tuple(d.uuid for d in on_gpu)
    return tuple(
        d.uuid
        for d in on_gpu
        if d.gpu_instance_id == event.gpu_instance_id
        and event.compute_instance_id in (None, d.compute_instance_id)
    )


def _layout(gpu: Gpu) -> tuple[bool, bool, frozenset[tuple[str, str]]]:
    return gpu.mig_enabled, gpu.mig_pending, frozenset((m.uuid, m.profile) for m in gpu.mig_instances)


def mig_layout_change(before: Iterable[Gpu], after: Iterable[Gpu]) -> str | None:
    """What changed in the GPUs' MIG modes and instances since ``before``, in words; None when nothing did.

    Everything served (``vcuda-core`` GPUs, MIG resources, labels, inventory) follows from this layout, so a
    change means the plugin must start again; GPUs that appear or vanish are health's business, not this."""
    old, new = {g.uuid: _layout(g) for g in before}, {g.uuid: _layout(g) for g in after}
    changes = []
    for uuid in sorted(old.keys() & new.keys()):
        (was_on, was_pending, was), (on, pending, now) = old[uuid], new[uuid]
        if (was_on, was_pending) != (on, pending):
            changes.append(f"GPU {uuid}: MIG mode {_mode(was_on, was_pending)} -> {_mode(on, pending)}")
        if was != now:
            added = ", ".join(sorted(p for _, p in now - was)) or "none"
            removed = ", ".join(sorted(p for _, p in was - now)) or "none"
            changes.append(f"GPU {uuid}: MIG instances added {added}, removed {removed}")
    return "; ".join(changes) or None


def _mode(current: bool, pending: bool) -> str:
    """NVML's two MIG modes: the one in effect and the one after the next GPU reset."""
    return f"{'on' if current else 'off'} (after reset: {'on' if pending else 'off'})"
