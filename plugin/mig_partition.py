"""Applies the MIG partition plan of :mod:`plugin.core.mig_partition` through :mod:`plugin.nvml`.

Run once at start-up, before discovery feeds the device plugins: every GPU is planned first (so an invalid
``MIG_PROFILE`` stops start-up before any GPU is touched), then each plan is applied. What pods hold comes
from the kubelet's PodResources (all resources); when it cannot be read nothing is destroyed and no MIG mode
is switched. NVML itself refuses to destroy an instance with processes (``IN_USE``); that is logged, never
forced.
"""

import asyncio
import logging
from collections.abc import Sequence, Set
from typing import Protocol

from plugin.core.gpu import Gpu, MigInstance, NodeGpus
from plugin.core.mig import mig_devices, profile_resource
from plugin.core.mig_partition import GpuPartition, PartitionSettings, plan_partition
from plugin.core.slices import SEPARATOR
from plugin.nvml import MigProfile, NvmlError, ProcessUsage
from plugin.podresources import ListPodResources, listing_or_none
from vcuda.model import GpuUuid
from vcuda.names import Names

__all__ = ["MigControl", "apply_partition", "held_device_ids", "partition_at_start", "plan_node"]

log = logging.getLogger(__name__)


class MigControl(Protocol):
    """What partitioning needs of :class:`plugin.nvml.Nvml`."""

    def discover(self) -> NodeGpus: ...
    def mig_profiles(self, uuid: GpuUuid) -> tuple[MigProfile, ...]: ...
    def mig_capacity(self, uuid: GpuUuid, profile: str) -> int: ...
    def set_mig_mode(self, uuid: GpuUuid, *, enabled: bool) -> bool: ...
    def create_mig_instance(self, uuid: GpuUuid, profile: str) -> MigInstance: ...
    def destroy_mig_instance(self, uuid: GpuUuid, gpu_instance_id: int) -> None: ...
    def process_usage(self, uuid: GpuUuid, *, since_us: int = 0) -> tuple[ProcessUsage, ...]: ...


def _busy_gpu_instances(nvml: MigControl, gpu: Gpu) -> frozenset[int]:
    if not gpu.mig_enabled:
        return frozenset()
    return frozenset(p.gpu_instance_id for p in nvml.process_usage(gpu.uuid) if p.gpu_instance_id is not None)


def _shared_in_use(gpu: Gpu, held: Set[str]) -> bool:
    return any(i.startswith(gpu.uuid + SEPARATOR) for i in held)


def plan_node(nvml: MigControl, settings: PartitionSettings, held: Set[str] | None) -> list[GpuPartition]:
    """Plans every GPU (raises :class:`plugin.core.mig.MigConfigError` before anything changes).

    ``held``: device IDs pods hold (any resource); ``None`` when unknown: then nothing is destroyed and no
    MIG mode is switched."""
    plans = []
    for gpu in nvml.discover().gpus:
        profiles = [p.name for p in nvml.mig_profiles(gpu.uuid)] if settings.enabled else []
        plan = plan_partition(
            gpu,
            profiles,
            settings,
            busy=held or frozenset(),
            busy_gi=_busy_gpu_instances(nvml, gpu) if profiles else frozenset(),
            shared_in_use=held is not None and _shared_in_use(gpu, held),
        )
        if held is None and (plan.enable_mig or plan.destroy):
            plan = GpuPartition(
                gpu.uuid, plan.profile, kept_busy=plan.destroy, create=0 if plan.enable_mig else plan.create
            )
        plans.append(plan)
    return plans


def _destroy(nvml: MigControl, plan: GpuPartition) -> None:
    uuid = GpuUuid(plan.uuid)
    for gi in plan.destroy:
        try:
            nvml.destroy_mig_instance(uuid, gi)
        except NvmlError as err:  # IN_USE: a process appeared; never forced
            log.warning("kept MIG GPU instance %d on GPU %s: %s", gi, uuid, err, extra={"gpu": uuid})
    for gi in plan.kept_busy:
        log.warning("kept MIG GPU instance %d on GPU %s: in use by a pod", gi, uuid, extra={"gpu": uuid})


def _create(nvml: MigControl, plan: GpuPartition) -> int:
    uuid = GpuUuid(plan.uuid)
    created = 0
    while plan.create is None or created < plan.create:
        if nvml.mig_capacity(uuid, plan.profile) <= 0:
            if plan.create is not None:
                log.warning(
                    "only %d of %d MIG instances %s fit on GPU %s",
                    created,
                    plan.create,
                    plan.profile,
                    uuid,
                    extra={"gpu": uuid},
                )
            break
        nvml.create_mig_instance(uuid, plan.profile)
        created += 1
    return created


def _apply_one(nvml: MigControl, plan: GpuPartition) -> None:
    uuid = GpuUuid(plan.uuid)
    if not plan.changes:
        if plan.reason:
            log.info("MIG partitioning: GPU %s left alone: %s", uuid, plan.reason, extra={"gpu": uuid})
        return
    if plan.enable_mig and not nvml.set_mig_mode(uuid, enabled=True):
        log.warning("MIG mode on GPU %s is pending until the GPU is reset", uuid, extra={"gpu": uuid})
        return
    _destroy(nvml, plan)
    created = _create(nvml, plan)
    log.info("MIG partitioning: GPU %s has %d new %s instances", uuid, created, plan.profile)


def apply_partition(
    nvml: MigControl, settings: PartitionSettings, held: Set[str] | None
) -> Sequence[GpuPartition]:
    """Plans then applies; returns the plans. Blocking (NVML): call from a worker thread in async code."""
    plans = plan_node(nvml, settings, held)
    for plan in plans:
        _apply_one(nvml, plan)
    return plans


async def partition_at_start(
    nvml: MigControl, settings: PartitionSettings, pod_resources: ListPodResources, names: Names
) -> Sequence[GpuPartition]:
    """Start-up partitioning: what pods hold (vcuda-core, ``<domain>/gpu`` and every current ``mig-*``
    resource) from PodResources, then :func:`apply_partition` in a worker thread. A no-op when disabled."""
    if not settings.enabled:
        return ()
    devices = mig_devices((await asyncio.to_thread(nvml.discover)).gpus)
    resources = {names.core, f"{names.domain}/gpu"} | {
        f"{names.domain}/{profile_resource(d.profile)}" for d in devices
    }
    held = await held_device_ids(pod_resources, resources)
    return await asyncio.to_thread(apply_partition, nvml, settings, held)


async def held_device_ids(pod_resources: ListPodResources, resources: Set[str]) -> frozenset[str] | None:
    """Device IDs pods hold under any of ``resources``, from one PodResources ``List``; ``None`` when the
    kubelet does not answer (then nothing held may be destroyed)."""
    listing = await listing_or_none(pod_resources)
    return None if listing is None else listing.held_ids(resources)
