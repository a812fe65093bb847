"""The pods bound to this node that still wait for GPUs, as the allocator last read them from the API server.

A refresh lists the node's pods and decodes each into a :class:`plugin.core.attribution.PendingPod`
(:func:`plugin.core.pods.pending_pod`); a pod whose ``resourceVersion`` has not changed keeps its decoded
value, so the signatures are checked once per version. Swaps the plugin made (``moved``) are kept from the
pods' status annotations and from :meth:`PodCache.move`, for the ones not read back yet.
"""

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from plugin.core.admission import Held
from plugin.core.attribution import PendingPod, PodRef
from plugin.core.pods import pending_pod, pod_ref, pod_status
from plugin.kube import Cluster
from vcuda.model import GpuShare, PodAssignment
from vcuda.names import Names
from vcuda.signing import Verifier

__all__ = ["PodCache"]

log = logging.getLogger(__name__)

Moves = dict[str, tuple[GpuShare, ...]]


class PodCache:
    def __init__(self, *, cluster: Cluster, node: str, names: Names, verifier: Verifier) -> None:
        self._cluster = cluster
        self._node = node
        self._names = names
        self._verifier = verifier
        self.pods: dict[PodRef, PendingPod] = {}
        self.moved: dict[PodRef, Moves] = {}
        """Swaps made since the pods were read (containers whose GPUs changed), kept in their status."""
        self._decoded: dict[tuple[str, str], PendingPod | str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._refreshed_at = float("-inf")
        self.ttl_s = 2.0
        """GetPreferredAllocation re-lists pods when the cache is older than this or PodResources names a
        pod the cache has not seen (a newly bound pod); otherwise the cached list serves."""

    async def refresh(self) -> None:
        pods: dict[PodRef, PendingPod] = {}
        decoded: dict[tuple[str, str], PendingPod | str] = {}
        raws = await self._cluster.node_pods(self._node)
        self._refreshed_at = time.monotonic()
        self._seen = {(pod_ref(raw).namespace, pod_ref(raw).name) for raw in raws}
        for raw in raws:
            meta = raw.get("metadata") or {}
            version = (str(meta.get("uid")), str(meta.get("resourceVersion")))
            found = self._decoded.get(version) if meta.get("resourceVersion") else None
            if found is None:
                found = pending_pod(raw, self._names, self._verifier, self._node)
            decoded[version] = found
            if isinstance(found, PendingPod):
                pods[found.key] = found
            elif found.startswith("invalid"):
                key = pod_ref(raw)
                log.warning("ignoring pod %s/%s: %s", key.namespace, key.name, found)
        self.pods = pods
        self._decoded = decoded
        self.moved = {k: m for raw in raws if (m := self._moves_of(k := pod_ref(raw), raw))}

    def _moves_of(self, key: PodRef, raw: Mapping[str, Any]) -> Moves:
        """The swaps the pod's status records, with those made since (not yet read back) on top."""
        status = pod_status(raw, self._names)
        return {**dict(status.moved if status else ()), **self.moved.get(key, {})}

    def stale(self, held: Sequence[Held]) -> bool:
        """The cache must be re-read when old or when the kubelet knows a pod it has not seen."""
        old = time.monotonic() - self._refreshed_at > self.ttl_s
        return old or any((h.namespace, h.pod) not in self._seen for h in held)

    def move(self, pod: PodRef, shares: Mapping[str, tuple[GpuShare, ...]]) -> None:
        """A swap gave ``pod``'s containers other GPUs: its assignment here and its recorded moves follow."""
        old = self.pods[pod].assignment
        containers = tuple(replace(c, shares=shares.get(c.name, c.shares)) for c in old.containers)
        self.pods[pod] = replace(self.pods[pod], assignment=PodAssignment(old.node, containers))
        self.moved.setdefault(pod, {}).update(shares)
