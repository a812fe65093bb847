"""Keeps this node's published GPU facts true: ``vcuda-memory`` capacity, inventory annotation, GPU labels.

``vcuda-memory`` is a node extended resource (contracts §1.5 option b; docs/plugin.md): the plugin patches
``status.capacity`` and ``status.allocatable`` in MiB. The kubelet may reset unknown extended resources
when the Node is re-created, so :meth:`NodePublisher.run` re-reads the Node every ``resync_s`` and patches
whatever drifted; :meth:`publish` patches at once on a health or inventory change. :meth:`uninstall`
removes everything the plugin added.
"""

import asyncio
import contextlib
import logging
from typing import Any

from plugin.core.inventory import NodeView
from plugin.core.mig import is_mig_label
from plugin.kube import Cluster, KubeError
from vcuda.annotations import encode_inventory
from vcuda.names import Names

__all__ = ["NodePublisher"]

log = logging.getLogger(__name__)


class NodePublisher:
    def __init__(self, cluster: Cluster, node: str, names: Names, resync_s: float = 30.0) -> None:
        self._cluster = cluster
        self._node = node
        self._names = names
        self._resync_s = resync_s
        self._view: NodeView | None = None
        self._wake = asyncio.Event()
        self.patches = 0

    def _ours(self, label: str) -> bool:
        # MIG labels (plugin.core.mig.mig_labels) are ours too, so stale ones are removed.
        return label.startswith((self._names.label("gpu."), self._names.label("cuda."))) or is_mig_label(
            label, self._names
        )

    def wake(self) -> None:
        """Re-check the Node now (after a kubelet restart it may have reset our extended resource)."""
        self._wake.set()

    async def publish(self, view: NodeView) -> None:
        self._view = view
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except KubeError as err:
                log.warning("could not publish node %s: %s", self._node, err)
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 a cancel racing wait_for's timeout can be lost (gh-86296)
            # and leave the agent's shutdown hanging.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._resync_s):
                    await self._wake.wait()

    async def sync(self) -> None:
        """Patch only what differs from the wanted state (one read, at most two patches)."""
        view = self._view
        if view is None:
            return
        node = await self._cluster.get_node(self._node)
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
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        want_labels = {k: v for k, v in view.labels.items() if labels.get(k) != v}
        stale = {k: None for k in labels if self._ours(k) and k not in view.labels}
        inventory = encode_inventory(view.inventory)
        patch: dict[str, Any] = {}
        if want_labels or stale:
            patch["labels"] = {**want_labels, **stale}
        if annotations.get(self._names.inventory) != inventory:
            patch["annotations"] = {self._names.inventory: inventory}
        return patch

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
        node = await self._cluster.get_node(self._node)
        if node is None:
            return
        labels = (node.get("metadata") or {}).get("labels") or {}
        gone = {k: None for k in labels if self._ours(k)}
        await self._cluster.patch_node(
            self._node, {"metadata": {"labels": gone, "annotations": {self._names.inventory: None}}}
        )
        res = self._names.memory
        await self._cluster.patch_node_status(
            self._node, {"status": {"capacity": {res: None}, "allocatable": {res: None}}}
        )
        log.info("removed %s, the inventory and GPU labels from node %s", res, self._node)
