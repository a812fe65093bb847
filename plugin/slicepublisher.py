"""Publishes the node's DRA pool (``plugin.core.resourceslice``) as ResourceSlices through the real client's
``ResourceV1Api``, and keeps it current.

One :meth:`SlicePublisher.sync` makes the API server's slices of this node and driver equal to the wanted
ones: nothing is written when they already are (quantities are canonical and the server's ``timeAdded`` of
a taint is not ours to compare); otherwise every slice of the pool is written at the next pool generation
(the API's rule: consumers only trust the highest generation, and ``resourceSliceCount`` slices of it) by
updating the existing slices in name order, creating what is missing and then deleting the surplus. So the
first sync after a start also removes the stale slices of a previous run. Updates carry the
``resourceVersion`` they read and deletes a precondition on it: a concurrent writer makes the API server
answer 409, and the whole sync starts again from a fresh list (a bounded number of times).

Only slices whose ``spec.nodeName`` is this node and ``spec.driver`` this driver are ever written or
deleted; the field selector asks for just those, and the answer is filtered again, so a server that ignores
the selector still cannot make the publisher touch another node's or driver's slices. Calls are blocking
and run in a worker thread with a bounded timeout; library errors leave as :class:`SliceError`.
"""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from kubernetes.client import ApiClient, ResourceV1Api, V1ResourceSlice
from kubernetes.client.exceptions import ApiException

from plugin.core.errors import PluginError
from plugin.kubeapi import selected_items, spec_selector

__all__ = ["PoolKeeper", "SliceError", "SlicePublisher", "read_pcie_roots", "slice_object"]

log = logging.getLogger(__name__)
Body = dict[str, Any]
API_VERSION: Final = "resource.k8s.io/v1"
RETRIES: Final = 5


class SliceError(PluginError):
    """Publishing the ResourceSlices failed."""


class _ConflictError(SliceError):
    """409 (or 404 on a slice just listed): another writer got there first; list again."""


def slice_object(spec: Body, owner: Mapping[str, str] | None = None, *, name: str = "") -> Body:
    """The ResourceSlice object for ``spec``: named ``name`` or generated ``<node>-<driver>-xxxxx``, owned by
    the Node (``owner``: its name and uid) so that deleting the Node deletes its slices."""
    meta: Body = {"name": name} if name else {"generateName": f"{spec['nodeName']}-{spec['driver']}-"}
    if owner:
        ref = {
            "apiVersion": "v1",
            "kind": "Node",
            "name": owner["name"],
            "uid": owner["uid"],
            "controller": True,
        }
        meta["ownerReferences"] = [ref]
    return {"apiVersion": API_VERSION, "kind": "ResourceSlice", "metadata": meta, "spec": spec}


def _comparable(spec: Mapping[str, Any]) -> Body:
    """A spec without what the generation bump or the API server change: the pool generation, taint times."""
    out = json.loads(json.dumps(spec))
    out.get("pool", {}).pop("generation", None)
    for device in out.get("devices") or []:
        for taint in device.get("taints") or []:
            taint.pop("timeAdded", None)
    return dict(out)


def _contents(specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The slices' specs, comparable in any order (the names the server generated say nothing about which
    slice holds what)."""
    return sorted(json.dumps(_comparable(s), sort_keys=True) for s in specs)


class SlicePublisher:
    """The ResourceSlices of one node and one driver."""

    def __init__(
        self,
        api: ApiClient,
        *,
        driver: str,
        node: str,
        owner: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._api = ResourceV1Api(api)
        self._driver, self._node, self._owner = driver, node, owner
        self._timeout = timeout_s
        # (what we last wanted, what the server stored for it): a server that drops fields it does not serve
        # (1.34/1.35 without consumable capacity or device taints) must not make every sync write again.
        self._stored: tuple[list[str], list[str]] | None = None

    def own_by(self, node_uid: str) -> None:
        """Make the slices written from now on owned by this node's Node object (its UID)."""
        self._owner = {"name": self._node, "uid": node_uid}

    async def sync(self, wanted: Sequence[Body]) -> bool:
        """Make the pool ``wanted`` (specs from :func:`pool_specs`, any generation). True when it wrote."""
        for attempt in range(RETRIES):
            try:
                return await self._sync_once(wanted)
            except _ConflictError as err:
                log.info("resource slices changed meanwhile, again (%d): %s", attempt + 1, err)
        raise SliceError(f"resource slices of node {self._node}: still conflicting after {RETRIES} tries")

    async def _sync_once(self, wanted: Sequence[Body]) -> bool:
        current = sorted(await self.list_own(), key=lambda s: s["metadata"]["name"])
        if self._unchanged(current, wanted):
            return False
        generation = 1 + max((int(s["spec"]["pool"].get("generation", 0)) for s in current), default=0)
        specs = [dict(w, pool=dict(w["pool"], generation=generation)) for w in wanted]
        stored = [await self._replace(old, spec) for old, spec in zip(current, specs, strict=False)]
        for spec in specs[len(current) :]:
            body = self._model(slice_object(spec, self._owner))
            stored.append(
                json.loads((await self._call("create", self._api.create_resource_slice, body)).data)
            )
        for old in current[len(specs) :]:
            await self._delete(old)
        self._stored = (_contents(wanted), _contents([s["spec"] for s in stored]))
        log.info(
            "published %d resource slices of pool %s at generation %d", len(specs), self._node, generation
        )
        return True

    def _unchanged(self, current: Sequence[Body], wanted: Sequence[Body]) -> bool:
        """Whether ``current`` already is the pool: one generation, and the wanted slices, or what the server
        stored when it was last written with the same wanted slices."""
        generations = {(s["spec"].get("pool") or {}).get("generation") for s in current}
        if len(generations) != 1:
            return False
        now = _contents([s["spec"] for s in current])
        return now == _contents(wanted) or self._stored == (_contents(wanted), now)

    async def list_own(self) -> list[Body]:
        """This node's slices of this driver (and nothing else, whatever the server answers)."""
        fields = {"nodeName": self._node, "driver": self._driver}
        response = await self._call(
            "list",
            self._api.list_resource_slice,
            field_selector=spec_selector(fields),
            _preload_content=False,
        )
        return selected_items(response, fields)

    def _model(self, body: Body) -> V1ResourceSlice:
        model = V1ResourceSlice.from_dict(body)
        if model is None:  # from_dict answers None only for a None body
            raise SliceError(f"resource slice body of node {self._node} is empty")
        return model

    async def _replace(self, old: Body, spec: Body) -> Body:
        meta = old["metadata"]
        body = slice_object(spec, self._owner, name=meta["name"])
        body["metadata"]["resourceVersion"] = meta["resourceVersion"]
        if meta.get("ownerReferences") and "ownerReferences" not in body["metadata"]:
            body["metadata"]["ownerReferences"] = meta["ownerReferences"]  # keep the Node's owner reference
        response = await self._call(
            "update", self._api.replace_resource_slice, meta["name"], self._model(body)
        )
        stored: Body = json.loads(response.data)
        return stored

    async def _delete(self, old: Body) -> None:
        meta = old["metadata"]
        precondition = {"preconditions": {"uid": meta.get("uid"), "resourceVersion": meta["resourceVersion"]}}
        await self._call("delete", self._api.delete_resource_slice, meta["name"], body=precondition)

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_preload_content", False)
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self._timeout, **kwargs)
        except ApiException as err:
            error = _ConflictError if err.status in (404, 409) and what != "list" else SliceError
            raise error(f"{what} resource slice: {err.status} {err.reason}") from err
        except Exception as err:  # urllib3 and socket errors alike
            raise SliceError(f"{what} resource slice: {err}") from err


def read_pcie_roots(pci_bus_ids: Mapping[str, str], sys_root: Path = Path("/sys")) -> dict[str, str]:
    """GPU UUID -> its PCIe root complex (``pci<domain>:<bus>``), as Kubernetes' ``deviceattribute`` reads
    it: ``/sys/bus/pci/devices/<bdf>`` links to ``/sys/devices/pci<domain>:<bus>/.../<bdf>``. GPUs whose link
    cannot be read are left out (the attribute is then not published)."""
    roots: dict[str, str] = {}
    for uuid, raw in pci_bus_ids.items():
        parts = raw.lower().split(":")
        bdf = ":".join([parts[0][-4:].rjust(4, "0"), *parts[-2:]]) if len(parts) == 3 else raw.lower()
        try:
            target = os.readlink(sys_root / "bus" / "pci" / "devices" / bdf)
        except OSError:
            continue
        root = next((p for p in Path(target).parts if p.startswith("pci") and ":" in p), None)
        if root is not None:
            roots[uuid] = root
    return roots


class PoolKeeper:
    """Keeps the pool published: at start, after every :meth:`wake` (a health change) and every ``resync_s``
    (a slice someone deleted or edited comes back). A failed sync is logged and tried again at the next
    wake or resync; it never stops the agent."""

    def __init__(
        self, publisher: SlicePublisher, build: Callable[[], Sequence[Body]], resync_s: float
    ) -> None:
        self._publisher, self._build, self._resync_s = publisher, build, resync_s
        self._wake = asyncio.Event()
        self.syncs = 0  # completed syncs (tests count them instead of timing them)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._publisher.sync(self._build())
                self.syncs += 1
            except SliceError as err:
                log.warning("could not publish the resource slices: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._resync_s)
