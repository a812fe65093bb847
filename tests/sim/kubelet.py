"""A SIMULATED kubelet: node registration, pod admission with the device manager, container start.

What follows the kubelet contract (contracts §1.4, §2, §5): pods bound to the node are admitted one at a
time in creation order; an extended resource on node allocatable that no device plugin serves
(``vcuda-memory``) is checked against allocatable, one no node advertises is dropped from the requests; a
device-plugin resource gets one ``Allocate`` per container with IDs chosen among healthy free ones, steered by
``GetPreferredAllocation`` when the plugin offers it; allocations go to the checkpoint (which PodResources
reports) before ``PreStartContainer`` is called as each container starts, asynchronously, like pod workers.

Init containers, reproduced from the real device manager (``devicesToReuse``): a pod's regular init
containers leave their IDs in a pool that every later container of the pod takes from *first*, in a random
order (Go map order), asking ``GetPreferredAllocation`` only for the rest (the reused IDs as
``must_include``); a sidecar (``restartPolicy: Always``) or app container removes the IDs it got from the
pool, so no later container shares them; every ID stays the pod's until it ends. PodResources lists app
containers and sidecars only, never regular init containers, as the real ``List`` does.
Admission failures end the pod ``Failed`` (``OutOf<resource>``, ``UnexpectedAdmissionError``); a failed
PreStart leaves the container waiting (``CreateContainerError``) and is retried with backoff.

Simplified: no containers run (a started container is only a status), no CPU/memory/pod-count admission, no
heartbeats or lease, pod deletion is immediate (the API server deletes, the kubelet only releases), and after a
restart new pods wait up to ``registration_wait_s`` for the device plugin to register again (upstream rejects
them at once with ``UnexpectedAdmissionError``).
"""

import asyncio
import contextlib
import itertools
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tests.sim.checkpoint import Allocation, Checkpoint
from tests.sim.devicemanager import CHECKPOINT_FILE, DeviceManager, DevicePluginError, Endpoint
from tests.sim.fit import extended_requests, is_terminal
from tests.sim.kubeapi import ApiError, KubeApi, Obj, pod_path
from tests.sim.podresources import ActivePod, PodResourcesServer
from vcuda.units import parse_quantity

__all__ = ["AdmissionError", "KubeletSettings", "SimKubelet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KubeletSettings:
    registration_wait_s: float = 15.0
    """How long admission waits for a device plugin that has not (re-)registered yet."""
    prestart_retries: int = 6
    """PreStartContainer attempts per container (1 s doubling backoff) before the pod is left waiting."""


class AdmissionError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _containers(pod: Obj) -> list[Obj]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _reuses(pod: Obj) -> dict[str, bool]:
    """Container name -> whether its IDs join the pod's reusable pool (a regular init container)."""
    spec = pod.get("spec") or {}
    init = {c["name"]: c.get("restartPolicy") != "Always" for c in spec.get("initContainers") or []}
    return {**init, **{c["name"]: False for c in spec.get("containers") or []}}


def _listed(pod: Obj) -> list[str]:
    """The containers PodResources ``List`` reports: sidecars and app containers, no regular init ones."""
    reuses = _reuses(pod)
    return [c["name"] for c in _containers(pod) if not reuses.get(c["name"])]


def _container_request(container: Obj, resource: str) -> int:
    res = container.get("resources") or {}
    raw = {**(res.get("limits") or {}), **(res.get("requests") or {})}.get(resource, 0)
    try:
        return parse_quantity(raw)
    except ValueError:
        return 0


class DraManager(Protocol):
    """The kubelet's DRA side (``tests.fakes.dra_kubelet.FakeDraKubelet``): prepare a pod's claims before its
    containers start, unprepare them when it is gone."""

    async def prepare_pod(self, pod: Obj) -> Any: ...

    async def unprepare_pod(self, pod: Obj) -> None: ...


def _has_claims(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("resourceClaims"))


class SimKubelet:
    dra: DraManager | None = None
    """Set on DRA nodes: claims are prepared before the containers start, as the kubelet's DRA manager does."""

    def __init__(self, api: KubeApi, node: str, root: Path, *, labels: dict[str, str] | None = None,
                 settings: KubeletSettings = KubeletSettings()) -> None:  # fmt: skip
        self.api, self.node, self.root, self.settings = api, node, root, settings
        self.labels = {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", **(labels or {})}
        self.plugin_dir = root / "device-plugins"
        self.pod_resources_socket = root / "pod-resources" / "kubelet.sock"
        self.devices = DeviceManager(self.plugin_dir, self._devices_changed)
        self.checkpoint = Checkpoint(self.plugin_dir / CHECKPOINT_FILE)
        self.podres = PodResourcesServer(
            self.pod_resources_socket, self.checkpoint, self.devices, self._active, self._claims_of
        )
        self.pods: dict[str, Obj] = {}
        self.admitted: set[str] = set()
        self.running: set[str] = set()
        self.rejected: dict[str, str] = {}
        self.admitting: str | None = None
        self._pending: dict[str, int] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        # Fault injection: pods whose first Allocate answer is never checkpointed (the kubelet "crashes"
        # right after the plugin answered; admission hangs until the kubelet is restarted).
        self.crash_after_allocate: set[str] = set()
        self.crashed = asyncio.Event()
        self._starts: set[asyncio.Task[None]] = set()

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.devices.start()
        await self.podres.start()
        await self._register_node()
        await self._reconcile_checkpoint()
        for coro in (self._watch_pods(), self._admission_loop(), self._status_loop()):
            self._tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._starts]:
            task.cancel()
        for task in [*self._tasks, *self._starts]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.podres.stop()
        await self.devices.stop()

    async def _register_node(self) -> None:
        ready = [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastTransitionTime": _now()}]
        try:
            await self.api.get(f"/api/v1/nodes/{self.node}")
        except ApiError:
            body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": self.labels},
                    "status": {"capacity": {"cpu": "64", "memory": "512Gi", "pods": "110"},
                               "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110"}}}  # fmt: skip
            await self.api.create("nodes", body)
        await self.api.patch(f"/api/v1/nodes/{self.node}/status", {"status": {"conditions": ready}})

    async def _reconcile_checkpoint(self) -> None:
        """After a restart: pods still bound keep their devices; the others' allocations are dropped."""
        bound = {
            p["metadata"].get("uid")
            for p in await self.api.list("pods", field_selector=f"spec.nodeName={self.node}")
            if self._mine(p) and not is_terminal(p)
        }
        for uid in list(self.checkpoint.pods):
            if uid not in bound:
                self.checkpoint.remove(uid)

    # --- node status -----------------------------------------------------------------------------

    def _devices_changed(self, resource: str) -> None:
        if resource not in self.checkpoint.resources:
            self.checkpoint.resources.add(resource)
            self.checkpoint.save()
        self._status_dirty.set()
        self._wake.set()

    async def _status_loop(self) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            capacity = {r: str(len(e.devices)) for r, e in self.devices.endpoints.items()}
            allocatable = {r: str(len(e.healthy())) for r, e in self.devices.endpoints.items()}
            with contextlib.suppress(ApiError):
                await self.api.patch(f"/api/v1/nodes/{self.node}/status",
                                     {"status": {"capacity": capacity, "allocatable": allocatable}})  # fmt: skip

    # --- pods --------------------------------------------------------------------------------------

    def _mine(self, pod: Obj) -> bool:
        return bool((pod.get("spec") or {}).get("nodeName") == self.node)

    async def _watch_pods(self) -> None:
        while True:
            with contextlib.suppress(ApiError, OSError, ValueError):
                async for event in self.api.watch("pods", field_selector=f"spec.nodeName={self.node}"):
                    self._on_pod(event["type"], event["object"])
            await asyncio.sleep(0.2)

    def _on_pod(self, kind: str, pod: Obj) -> None:
        uid = str(pod["metadata"].get("uid", ""))
        if not self._mine(pod):
            return
        if kind == "DELETED" or is_terminal(pod):
            self._forget(uid)
            if kind != "DELETED":
                self.pods[uid] = pod
            return
        self.pods[uid] = pod
        if uid in self.admitted or uid in self.rejected or uid in self._pending or uid == self.admitting:
            return
        if (pod.get("status") or {}).get("phase") == "Running" and self._has_devices(pod):
            self.admitted.add(uid)  # already running before a kubelet restart
            self.running.add(uid)
            return
        self._pending[uid] = next(self._seq)
        self._wake.set()

    def _forget(self, uid: str) -> None:
        pod = self.pods.pop(uid, None)
        if pod is not None and self.dra is not None and _has_claims(pod) and uid in self.admitted:
            task = asyncio.create_task(self._unprepare(pod))
            self._starts.add(task)
            task.add_done_callback(self._starts.discard)
        self._pending.pop(uid, None)
        self.admitted.discard(uid)
        self.running.discard(uid)
        self.checkpoint.remove(uid)

    def _has_devices(self, pod: Obj) -> bool:
        uid = str(pod["metadata"].get("uid", ""))
        for container in _containers(pod):
            for resource in self.checkpoint.resources:
                if (
                    _container_request(container, resource)
                    and self.checkpoint.get(uid, container["name"], resource) is None
                ):
                    return False
        return True

    def _active(self) -> list[ActivePod]:
        uids = [*sorted(self.admitted), *([self.admitting] if self.admitting else [])]
        out = []
        for uid in uids:
            pod = self.pods.get(uid)
            if pod is not None:
                meta = pod["metadata"]
                out.append(
                    (
                        uid,
                        meta.get("namespace", "default"),
                        meta["name"],
                        _listed(pod),
                    )
                )
        return out

    # --- admission ---------------------------------------------------------------------------------

    def _next_pending(self) -> str:
        def order(uid: str) -> tuple[str, int]:
            created = str((self.pods.get(uid) or {}).get("metadata", {}).get("creationTimestamp", ""))
            return created, self._pending[uid]

        return min(self._pending, key=order)

    async def _admission_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                uid = self._next_pending()
                del self._pending[uid]
                pod = self.pods.get(uid)
                if pod is not None:
                    await self._admit(uid, pod)

    async def _admit(self, uid: str, pod: Obj) -> None:
        self.admitting = uid
        try:
            await self._check_node_resources(uid, pod)
            await self._allocate_pod(uid, pod)
        except AdmissionError as err:
            self.admitting = None
            self.checkpoint.remove(uid)
            self.rejected[uid] = err.message
            log.info("kubelet %s: rejected %s: %s", self.node, pod["metadata"]["name"], err.message)
            await self._patch_status(pod, {"phase": "Failed", "reason": err.reason, "message": err.message})
            return
        self.admitting = None
        if uid not in self.pods:  # deleted while it was being admitted: give the devices back
            self.checkpoint.remove(uid)
            return
        self.admitted.add(uid)
        task = asyncio.create_task(self._start_containers(uid, pod))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _check_node_resources(self, uid: str, pod: Obj) -> None:
        """Extended resources no device plugin serves: against allocatable, or dropped when not advertised."""
        node = await self.api.get(f"/api/v1/nodes/{self.node}")
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        for resource, wanted in sorted(extended_requests(pod).items()):
            if resource in self.checkpoint.resources or resource not in allocatable or wanted <= 0:
                continue
            capacity = parse_quantity(allocatable[resource])
            used = sum(
                extended_requests(self.pods[u]).get(resource, 0) for u in self.admitted if u in self.pods
            )
            if used + wanted > capacity:
                raise AdmissionError(
                    f"OutOf{resource}",
                    f"Node didn't have enough resource: {resource}, requested: {wanted}, used: {used}, capacity: {capacity}",
                )

    async def _allocate_pod(self, uid: str, pod: Obj) -> None:
        pools: dict[str, set[str]] = {}  # resource -> IDs of init containers left to reuse
        rng = random.Random(uid)
        reuses = _reuses(pod)
        for container in _containers(pod):
            for resource in sorted(self.checkpoint.resources):
                wanted = _container_request(container, resource)
                if wanted <= 0:
                    continue
                pool = pools.setdefault(resource, set())
                held = self.checkpoint.get(uid, container["name"], resource)
                if held is not None:  # allocated before a kubelet restart: still counts for the pool
                    ids = held.ids
                else:
                    ids = await self._allocate(uid, pod, container, resource, pool, rng)
                if reuses.get(container["name"]):
                    pool.update(ids)
                else:
                    pool.difference_update(ids)

    async def _allocate(
        self, uid: str, pod: Obj, container: Obj, resource: str, pool: set[str], rng: random.Random
    ) -> list[str]:
        meta = pod["metadata"]
        wanted = _container_request(container, resource)
        endpoint = await self.devices.wait_ready(resource, self.settings.registration_wait_s)
        if endpoint is None:
            raise AdmissionError(
                "UnexpectedAdmissionError",
                f"Allocate failed due to no healthy devices present; cannot allocate unhealthy devices {resource}, which is unexpected",
            )
        reused = rng.sample(sorted(pool), min(wanted, len(pool)))
        ids = reused if len(reused) == wanted else await self._choose(endpoint, resource, wanted, reused)
        try:
            response = await self.devices.allocate(endpoint, ids)
        except DevicePluginError as err:
            raise AdmissionError("UnexpectedAdmissionError", f"Allocate failed: {err}") from err
        if meta["name"] in self.crash_after_allocate:
            self.crashed.set()
            await asyncio.Event().wait()
        alloc = Allocation(ids, response)
        self.checkpoint.record(
            uid, meta.get("namespace", "default"), meta["name"], container["name"], resource, alloc
        )
        return ids

    async def _choose(self, endpoint: Endpoint, resource: str, wanted: int, reused: list[str]) -> list[str]:
        """``reused`` (from the pod's init containers) and the rest among healthy free IDs."""
        free = sorted(set(endpoint.healthy()) - self.checkpoint.in_use(resource))
        need = wanted - len(reused)
        if len(free) < need:
            raise AdmissionError(
                "UnexpectedAdmissionError",
                f"Allocate failed due to requested number of devices unavailable for {resource}. "
                f"Requested: {need}, Available: {len(free)}, which is unexpected",
            )
        if endpoint.options.get_preferred_allocation_available:
            try:
                preferred = await self.devices.preferred(endpoint, [*reused, *free], wanted, reused)
            except DevicePluginError as err:
                log.info("kubelet %s: GetPreferredAllocation failed, choosing alone: %s", self.node, err)
                preferred = []
            if len(set(preferred)) == wanted and set(reused) <= set(preferred) <= set(free) | set(reused):
                return preferred
        return [*reused, *free[:need]]

    # --- container start -------------------------------------------------------------------------

    def _claims_of(self, uid: str, container: str) -> list[Any]:
        """PodResources' ``dynamic_resources`` of one container: the prepared claims it names."""
        from plugin.api.podresources.v1 import api_pb2 as pr

        pod = self.pods.get(uid)
        prepared = getattr(self.dra, "claims", None)
        if pod is None or not prepared:
            return []
        ns = pod["metadata"].get("namespace", "default")
        generated = {
            s["name"]: s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        names = {
            c["name"]: c.get("resourceClaimName") or generated.get(c["name"])
            for c in pod["spec"].get("resourceClaims") or []
        }
        spec = next((c for c in _containers(pod) if c["name"] == container), {})
        out = []
        for ref in (spec.get("resources") or {}).get("claims") or []:
            info = prepared.get((ns, names.get(ref["name"]) or ""))
            if info is None or not info.prepared:
                continue
            resources = [
                pr.ClaimResource(cdi_devices=[pr.CDIDevice(name=i) for i in d.cdi_ids], driver_name=driver,
                                 pool_name=d.pool, device_name=d.device, **({"share_id": d.share_id} if d.share_id else {}))
                for driver, devices in sorted(info.devices.items()) for d in devices
            ]  # fmt: skip
            out.append(
                pr.DynamicResource(claim_name=info.name, claim_namespace=ns, claim_resources=resources)
            )
        return out

    async def _unprepare(self, pod: Obj) -> None:
        assert self.dra is not None
        try:
            await self.dra.unprepare_pod(pod)
        except Exception as err:  # the real kubelet retries in its reconcile loop; the sim logs it
            log.warning("kubelet %s: unprepare of %s failed: %s", self.node, pod["metadata"]["name"], err)

    async def _prepare(self, pod: Obj) -> bool:
        """DRA: the pod's claims prepared (True), or its containers wait (False), as after a failed prepare."""
        if self.dra is None or not _has_claims(pod):
            return True
        for attempt in range(self.settings.prestart_retries):
            try:
                await self.dra.prepare_pod(pod)
                return True
            except Exception as err:  # PrepareError: the real kubelet reports FailedPrepareDynamicResources
                state = {"waiting": {"reason": "CreateContainerError", "message": str(err)}}
                containers = (pod.get("spec") or {}).get("containers") or []
                statuses = [{"name": c["name"], "ready": False, "state": state} for c in containers]
                await self._patch_status(pod, {"phase": "Pending", "containerStatuses": statuses})
                await asyncio.sleep(min(10.0, 2.0**attempt))
        return False

    async def _start_containers(self, uid: str, pod: Obj) -> None:
        if not await self._prepare(pod):
            return
        for container in _containers(pod):
            for attempt in range(self.settings.prestart_retries):
                try:
                    await self._pre_start(uid, container["name"])
                    break
                except (DevicePluginError, AdmissionError) as err:
                    waiting = {"name": container["name"], "ready": False,
                               "state": {"waiting": {"reason": "CreateContainerError", "message": str(err)}}}  # fmt: skip
                    await self._patch_status(pod, {"phase": "Pending", "containerStatuses": [waiting]})
                    await asyncio.sleep(min(10.0, 2.0**attempt))
            else:
                return
        self.running.add(uid)
        statuses = [{"name": c["name"], "ready": True, "started": True, "state": {"running": {"startedAt": _now()}}}
                    for c in (pod.get("spec") or {}).get("containers") or []]  # fmt: skip
        conditions = [
            {"type": t, "status": "True"} for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        await self._patch_status(pod, {"phase": "Running", "hostIP": "10.0.0.1", "startTime": _now(),
                                       "conditions": conditions, "containerStatuses": statuses})  # fmt: skip

    async def _pre_start(self, uid: str, container: str) -> None:
        held = self.checkpoint.pods.get(uid)
        for resource, alloc in sorted((held.containers.get(container, {}) if held else {}).items()):
            endpoint = await self.devices.wait_ready(resource, self.settings.registration_wait_s)
            if endpoint is None:
                raise AdmissionError(
                    "CreateContainerError", f"device plugin for {resource} is not registered"
                )
            if endpoint.options.pre_start_required:
                await self.devices.pre_start(endpoint, alloc.ids)

    async def _patch_status(self, pod: Obj, status: Obj) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.api.patch(
                pod_path(meta.get("namespace", "default"), meta["name"]) + "/status", {"status": status}
            )
