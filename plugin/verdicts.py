"""Writes a ``PreStartContainer`` verdict (:func:`plugin.core.verify.verify`) to disk and to the pods.

Confirmed: the record is marked confirmed and the pod's ``vgpu-status`` annotation says which containers
are (``assumed``, or ``allocated`` once all are). Swapped: the records and config files of the two
interchangeable containers change hands and the pods' status records the moves (the extender's signed
assignment is never rewritten, and the plugin holds no key that could sign one). Mismatch: the config is
poisoned so the shim refuses to start, the record names the container that really holds the devices, and
that pod gets a ``failed`` status and an event.

The allocator owns the records; every method takes a record and returns or stores the updated ones in the
``records`` mapping it shares with the allocator.
"""

import logging
import time
from collections.abc import MutableMapping
from dataclasses import replace

from plugin.core.attribution import Candidate, ContainerKey, PodRef, container_name
from plugin.core.verify import confirmed_containers, pod_phase, swap_moves, swap_owners
from plugin.kube import Cluster, KubeError
from plugin.podcache import PodCache
from plugin.statedir import AllocationRecord, StateDir
from vcuda.annotations import PodStatus, encode_status
from vcuda.model import Phase
from vcuda.names import Names

__all__ = ["VerdictWriter"]

log = logging.getLogger(__name__)


class VerdictWriter:
    def __init__(
        self,
        *,
        names: Names,
        cluster: Cluster,
        state: StateDir,
        cache: PodCache,
        records: MutableMapping[str, AllocationRecord],
    ) -> None:
        self._names = names
        self._cluster = cluster
        self._state = state
        self._cache = cache
        self._records = records

    async def confirm(self, record: AllocationRecord) -> None:
        confirmed = replace(record, confirmed=True)
        self._store(confirmed)
        pod = record.owner.pod
        phase = self._phase(pod)
        await self._patch_status(pod, self._status(pod, phase, ""))
        log.info("confirmed %s (pod %s)", container_name(record.owner), phase.value)

    async def fail(self, record: AllocationRecord, owner: ContainerKey | None, message: str) -> None:
        """Refuse the container that really holds the devices; the attributed container stays pending."""
        log.error("%s", message)
        self._state.poison_config(record.dir_name)
        if owner is not None and owner != record.owner:
            record = replace(record, owner=owner)
            self._store(record)
        pod = record.owner.pod
        try:
            await self._patch_status(pod, self._status(pod, Phase.FAILED, message))
            await self._cluster.pod_event(
                {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
                "VGPUAttributionMismatch",
                message,
            )
        except KubeError as err:
            log.error("could not record the mismatch on %s/%s: %s", pod.namespace, pod.name, err)

    async def swap(
        self, record: AllocationRecord, attributed: Candidate, owner: Candidate
    ) -> AllocationRecord:
        """``owner`` really holds ``record``'s devices: exchange the two containers' GPUs in every record;
        returns ``record`` as it is now."""
        log.warning(
            "interchangeable containers swapped: %s runs on %s's GPUs",
            container_name(owner.key),
            container_name(attributed.key),
        )
        for pod, shares in swap_moves(attributed, owner).items():
            self._cache.move(pod, shares)
            await self._patch_status(pod, self._status(pod, self._phase(pod), ""))
        owners = {n: r.owner for n, r in self._records.items()}
        for name, new in swap_owners(owners, record.dir_name, attributed.key, owner.key).items():
            self._reassign(self._records[name], new)
        return self._records[record.dir_name]

    def _reassign(self, record: AllocationRecord, owner: ContainerKey) -> None:
        self._store(replace(record, owner=owner))
        config = self._state.read_config(record.dir_name)
        if config is not None:
            pod = owner.pod
            fixed = replace(
                config, pod_uid=pod.uid, namespace=pod.namespace, pod_name=pod.name, container=owner.container
            )
            self._state.write_config(record.dir_name, fixed)

    def _store(self, record: AllocationRecord) -> None:
        self._records[record.dir_name] = record
        self._state.write_record(record)

    def _phase(self, pod: PodRef) -> Phase:
        return pod_phase(self._cache.pods.get(pod), self._confirmed(pod))

    def _confirmed(self, pod: PodRef) -> set[str]:
        return confirmed_containers(self._records.values(), pod, self._cache.pods.get(pod))

    def _status(self, pod: PodRef, phase: Phase, message: str) -> PodStatus:
        moved = tuple(sorted(self._cache.moved.get(pod, {}).items()))
        return PodStatus(phase, tuple(sorted(self._confirmed(pod))), time.time(), message, moved)

    async def _patch_status(self, pod: PodRef, status: PodStatus) -> None:
        await self._cluster.patch_pod_annotations(
            pod.namespace, pod.name, {self._names.status: encode_status(status)}
        )
