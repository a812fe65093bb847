"""Automatic MIG partitioning (docs/mig.md, "Automatic partitioning": ``ENABLE_MIG``, ``MIG_PROFILE``,
``MIG_INSTANCE_COUNT``, ``SKIP_CONFIGURED``): what to do on each GPU, decided before anything is changed.

Rules, per MIG-capable GPU:

- nothing happens unless partitioning is enabled;
- the profile must be one the GPU offers, else :class:`MigConfigError` names the valid ones (before any
  GPU is touched); no profile given means the GPU's ``3g`` profile (``3g.20gb`` on A100 40GB, the Micro GPU
  Device Plugin's default, ``3g.40gb`` on H100 80GB, ``3g.71gb`` on H200 141GB);
- MIG mode off: turn it on, unless a pod holds ``vcuda-core`` slices of the GPU (it stays shared);
- instances present and ``skip_configured``: left alone;
- otherwise instances of other profiles, and instances beyond the wanted count, are destroyed unless busy
  (a pod holds one, or a process runs in its GPU instance): **a busy instance is never destroyed**;
- then instances of the profile are created: ``count`` in total (0: as many as fit).

Standard library only.
"""

from collections import defaultdict
from collections.abc import Sequence, Set
from dataclasses import dataclass

from plugin.core.gpu import Gpu, MigInstance
from plugin.core.mig import MigConfigError

__all__ = ["GpuPartition", "PartitionSettings", "default_profile", "plan_partition"]


@dataclass(frozen=True, slots=True)
class PartitionSettings:
    enabled: bool = False
    profile: str = ""  # empty: the GPU's 3g profile
    count: int = 0  # instances of the profile per GPU; 0 = as many as fit
    skip_configured: bool = True


@dataclass(frozen=True, slots=True)
class GpuPartition:
    """The steps for one GPU. ``create`` of ``None`` means as many as fit; ``reason`` explains a no-op."""

    uuid: str
    profile: str = ""
    enable_mig: bool = False
    destroy: tuple[int, ...] = ()  # GPU instance ids
    kept_busy: tuple[int, ...] = ()  # GPU instance ids that should go but are in use
    create: int | None = 0
    reason: str = ""

    @property
    def changes(self) -> bool:
        return self.enable_mig or bool(self.destroy) or self.create != 0


def default_profile(profiles: Sequence[str]) -> str | None:
    """The GPU's half-GPU profile, ``3g.*`` (the Micro GPU Device Plugin's ``3g.20gb`` is the A100 40GB's)."""
    return next((p for p in profiles if p.startswith("3g.") and "+" not in p), None)


def _profile(gpu: Gpu, profiles: Sequence[str], wanted: str) -> str:
    chosen = wanted or default_profile(profiles)
    if chosen is None or chosen not in profiles:
        raise MigConfigError(
            f"invalid setting MIG_PROFILE: {chosen or '(default 3g)'!r} is not a MIG profile of GPU "
            f"{gpu.uuid} ({gpu.model}); valid: {', '.join(profiles)}"
        )
    return chosen


def _by_gpu_instance(instances: Sequence[MigInstance]) -> dict[int, list[MigInstance]]:
    grouped: dict[int, list[MigInstance]] = defaultdict(list)
    for mig in instances:
        grouped[mig.gpu_instance_id].append(mig)
    return dict(sorted(grouped.items()))


def _reconfigure(
    gpu: Gpu, profile: str, settings: PartitionSettings, busy: Set[str], busy_gi: Set[int]
) -> GpuPartition:
    groups = _by_gpu_instance(gpu.mig_instances)

    def in_use(gi: int) -> bool:
        return gi in busy_gi or any(m.uuid in busy for m in groups[gi])

    matching = [gi for gi, ms in groups.items() if all(m.profile == profile for m in ms)]
    others = [gi for gi in groups if gi not in matching]
    # Keep busy matching instances first, then the lowest ids; the rest beyond the count must go.
    keep_order = sorted(matching, key=lambda gi: (not in_use(gi), gi))
    surplus = keep_order[settings.count :] if settings.count else []
    unwanted = sorted(others + surplus)
    destroy = tuple(gi for gi in unwanted if not in_use(gi))
    kept_busy = tuple(gi for gi in unwanted if in_use(gi))
    kept = len(matching) - len([gi for gi in surplus if gi in destroy])
    create = max(0, settings.count - kept) if settings.count else None
    return GpuPartition(gpu.uuid, profile, destroy=destroy, kept_busy=kept_busy, create=create)


def plan_partition(
    gpu: Gpu,
    profiles: Sequence[str],
    settings: PartitionSettings,
    *,
    busy: Set[str] = frozenset(),
    busy_gi: Set[int] = frozenset(),
    shared_in_use: bool = False,
) -> GpuPartition:
    """The steps for one GPU. ``profiles``: the GPU's profile names (empty: not MIG capable); ``busy``:
    MIG UUIDs pods hold; ``busy_gi``: GPU instance ids with running processes; ``shared_in_use``: pods hold
    ``vcuda-core`` slices of this GPU. Raises :class:`MigConfigError` for a profile the GPU lacks."""
    if not settings.enabled:
        return GpuPartition(gpu.uuid, reason="partitioning is off (ENABLE_MIG)")
    if not profiles:
        return GpuPartition(gpu.uuid, reason="not MIG capable")
    profile = _profile(gpu, profiles, settings.profile)
    if not gpu.mig_enabled:
        if shared_in_use:
            return GpuPartition(gpu.uuid, profile, reason="MIG is off and pods share the GPU (vcuda-core)")
        return GpuPartition(gpu.uuid, profile, enable_mig=True, create=settings.count or None)
    if gpu.mig_instances and settings.skip_configured:
        return GpuPartition(gpu.uuid, profile, reason="already partitioned (SKIP_CONFIGURED)")
    return _reconfigure(gpu, profile, settings, busy, busy_gi)
