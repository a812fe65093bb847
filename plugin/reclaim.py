"""Removes per-container files of pods that are gone (decisions in :mod:`plugin.core.reclaim`).

Runs once at start-up (crash leftovers) and then every ``interval_s``. Both sources, the API server (pods
bound to this node) and the kubelet (PodResources), must answer; if either fails nothing is removed.
"""

import asyncio
import logging

from plugin.allocator import Allocator, PodResourcesSource
from plugin.core.pods import pod_ref
from plugin.core.reclaim import LiveSet, to_remove
from plugin.kube import Cluster, KubeError
from plugin.statedir import StateDir

__all__ = ["Reclaimer"]

log = logging.getLogger(__name__)


class Reclaimer:
    def __init__(
        self,
        *,
        state: StateDir,
        cluster: Cluster,
        node: str,
        pod_resources: PodResourcesSource,
        allocator: Allocator,
        interval_s: float,
        grace_s: float,
    ) -> None:
        self._state = state
        self._cluster = cluster
        self._node = node
        self._pod_resources = pod_resources
        self._allocator = allocator
        self._interval_s = interval_s
        self._grace_s = grace_s

    async def once(self, grace_s: float | None = None) -> list[str]:
        try:
            pods = await self._cluster.node_pods(self._node)
            held = await self._pod_resources()
        except (KubeError, Exception) as err:  # any failed source: keep everything this round
            log.warning("reclaim skipped, a source is unavailable: %s", err)
            return []
        live = LiveSet(frozenset(pod_ref(p).uid for p in pods), frozenset((h.namespace, h.pod) for h in held))
        gone = to_remove(self._state.scan(), live, self._grace_s if grace_s is None else grace_s)
        self._state.remove(gone)
        self._allocator.forget(gone)
        return gone

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.once()
