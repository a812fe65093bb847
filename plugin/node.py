"""Keeps this node's published GPU facts true: ``vcuda-memory`` capacity, inventory annotation, GPU labels.

``vcuda-memory`` is a node extended resource (docs/plugin.md, "``vcuda-memory``: a node extended resource"):
the plugin patches ``status.capacity`` and ``status.allocatable`` in MiB. The kubelet may reset unknown
extended resources when the Node is re-created, so :meth:`NodePublisher.run` watches the Node (resumed from
the last resourceVersion, bookmarks on; about one request per 5-10 min while nothing changes) and patches
whatever drifted; while the watch is down it re-reads the Node every ``resync_s``. :meth:`publish` patches at
once on a health or inventory change. :meth:`uninstall` removes everything the plugin added.

Labels and annotations: only the names recorded in ``<domain>/vgpu-managed`` are the plugin's
(:mod:`plugin.core.ownership`); the GPU Operator's, GFD's and the MIG manager's survive every resync. With
``gfd_coexistence`` the plugin writes none of GFD's names and hands over any it recorded before.
"""

import asyncio
import contextlib
import logging
import random
from typing import Any, Final

from plugin.core.inventory import NodeView
from plugin.core.ownership import (
    Managed,
    decode_managed,
    is_gfd_name,
    managed_key,
    meta_patch,
    uninstall_patch,
    without_gfd_names,
)
from plugin.kube import Cluster, GoneError, KubeError
from vcuda.annotations import encode_inventory
from vcuda.names import Names

__all__ = ["NodePublisher"]

log = logging.getLogger(__name__)
_WATCH_S: Final = (300.0, 600.0)
"""Each watch of the Node asks the server to end it after a random 5-10 min; it is then resumed."""
_SHORT_S: Final = 1.0
"""A watch that ends sooner counts as a failure (backs off)."""


def _backoff(failures: int) -> float:
    """0.8 s doubling to 30 s, stretched by a random 0-100 %: nodes that lost the API server together do not
    come back in step."""
    return min(30.0, 0.8 * 2.0 ** min(failures - 1, 16)) * (1.0 + random.random())


class NodePublisher:
    def __init__(
        self,
        cluster: Cluster,
        node: str,
        names: Names,
        resync_s: float = 30.0,
        *,
        gfd_coexistence: bool = False,
        short_watch_s: float = _SHORT_S,
    ) -> None:
        self._cluster = cluster
        self._node = node
        self._names = names
        self._resync_s = resync_s
        self._gfd = gfd_coexistence
        self._short_s = short_watch_s
        self._record_key = managed_key(names)
        self._view: NodeView | None = None
        self._seen: dict[str, Any] | None = None
        """The Node as the latest watch event carried it, not yet published against."""
        self._watching = False
        self._uninstalled = False
        self._patching = asyncio.Lock()
        """Held by a sync's read-and-patch and by uninstall: a sync in flight lands before the removal."""
        self._wake = asyncio.Event()
        self.patches = 0

    def _previous(self, meta: dict[str, Any]) -> Managed:
        """What the plugin recorded on the Node; an unreadable record owns nothing (nothing is removed)."""
        try:
            managed = decode_managed((meta.get("annotations") or {}).get(self._record_key))
        except ValueError as err:
            log.warning("ignoring the unreadable %s on node %s: %s", self._record_key, self._node, err)
            return Managed()
        if self._gfd:  # hand GFD's names over to GFD: forget them, never remove them
            return Managed(frozenset(k for k in managed.labels if not is_gfd_name(k)), managed.annotations)
        return managed

    def wake(self) -> None:
        """Re-check the Node now (after a kubelet restart it may have reset our extended resource)."""
        self._wake.set()

    async def publish(self, view: NodeView) -> None:
        if not self._uninstalled:
            self._view = view
            self._wake.set()

    async def run(self) -> None:
        """Publish whenever the view, the Node (its watch) or the kubelet changes; while the watch is down,
        re-read the Node every ``resync_s`` instead."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_node())
            tasks.create_task(self._publish_on_wake())

    async def _publish_on_wake(self) -> None:
        while True:
            self._wake.clear()
            node, self._seen = self._seen, None
            try:
                await self.sync(node)
            except KubeError as err:
                log.warning("could not publish node %s: %s", self._node, err)
            # asyncio.timeout, not wait_for: on 3.11 a cancel racing wait_for's timeout can be lost (gh-86296)
            # and leave the agent's shutdown hanging.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if self._watching else self._resync_s):
                    await self._wake.wait()

    async def _follow_node(self) -> None:
        """Watch this Node from the last resourceVersion (bookmarks keep it fresh); each change wakes the
        publisher with the Node as the event carries it (no read). 410 starts over without a version;
        failures back off (0.8 s doubling to 30 s, with jitter) and fall back to re-reading on a timer."""
        version, failures = "", 0
        loop = asyncio.get_running_loop()
        while True:
            started, failed = loop.time(), False
            try:
                async for event in self._cluster.watch_node(self._node, version, random.uniform(*_WATCH_S)):
                    version = self._on_event(event) or version
            except GoneError:
                version = ""
                continue
            except (KubeError, ValueError) as err:
                log.warning("node %s watch failed, resuming: %s", self._node, err)
                failed = True
            short = loop.time() - started < self._short_s
            failures = failures + 1 if failed or short else 0
            if failures:
                self._watching = False
                self.wake()  # re-read now, then on the timer until the watch works again
                await asyncio.sleep(_backoff(failures))

    def _on_event(self, event: dict[str, Any]) -> str:
        obj = event.get("object") or {}
        self._watching = True
        if event.get("type") in ("ADDED", "MODIFIED"):
            self._seen = obj
            self.wake()
        return str((obj.get("metadata") or {}).get("resourceVersion") or "")

    async def sync(self, node: dict[str, Any] | None = None) -> None:
        """Patch only what differs from the wanted state (``node`` as a watch event carried it, or one read;
        at most two patches)."""
        async with self._patching:
            await self._sync(node)

    async def _sync(self, node: dict[str, Any] | None) -> None:
        view = self._view  # None once uninstalled: a sync that waited for uninstall patches nothing
        if view is None:
            return
        node = node if node is not None else await self._cluster.get_node(self._node)
        if node is None:
            log.warning("node %s does not exist (yet); will retry", self._node)
            return
        meta = await self._meta_patch(node, view)
        status = self._status_patch(node, view)
        if meta:
            await self._cluster.patch_node(self._node, {"metadata": meta})
            self.patches += 1
        if status:
            await self._cluster.patch_node_status(self._node, {"status": status})
            self.patches += 1

    async def _meta_patch(self, node: dict[str, Any], view: NodeView) -> dict[str, Any]:
        meta = node.get("metadata") or {}
        return meta_patch(
            meta,
            labels=without_gfd_names(view.labels) if self._gfd else view.labels,
            annotations={self._names.inventory: encode_inventory(view.inventory)},
            previous=self._previous(meta),
            key=self._record_key,
        )

    def _status_patch(self, node: dict[str, Any], view: NodeView) -> dict[str, Any]:
        status = node.get("status") or {}
        want = str(view.memory_mib)
        res = self._names.memory
        if (status.get("capacity") or {}).get(res) == want and (status.get("allocatable") or {}).get(
            res
        ) == want:
            return {}
        return {"capacity": {res: want}, "allocatable": {res: want}}

    async def uninstall(self) -> None:
        """Remove what the plugin published; this publisher publishes nothing afterwards (its watch would see
        the removal and put everything back). A sync already patching finishes first (the lock), else its
        patch, sent with the view it read before, would land after the removal and put things back."""
        self._uninstalled, self._view = True, None
        async with self._patching:
            await self._remove()

    async def _remove(self) -> None:
        node = await self._cluster.get_node(self._node)
        if node is None:
            return
        meta = node.get("metadata") or {}
        previous = self._previous(meta)
        owned = Managed(previous.labels, previous.annotations | {self._names.inventory})
        await self._cluster.patch_node(
            self._node, {"metadata": uninstall_patch(meta, owned, self._record_key)}
        )
        res = self._names.memory
        await self._cluster.patch_node_status(
            self._node, {"status": {"capacity": {res: None}, "allocatable": {res: None}}}
        )
        log.info("removed %s and the labels and annotations it recorded from node %s", res, self._node)
