"""The watchdog: every ``watchdog_interval_seconds``, NVML's per-process GPU memory against the shims.

One round reads (in a worker thread) the state directory (limits, and the shim's usage files through
:func:`vcuda.tenantfile.read_tenant_file`), NVML's compute processes on the GPUs shared through the shim
(``nvmlDeviceGetComputeRunningProcesses``; MIG-enabled GPUs are not watched: their pods have no shim) and each
process's ``/proc/<pid>/cgroup``; attributes PIDs to containers by the exporter's rules
(:func:`plugin.metrics.attribution.owners`); lets :mod:`plugin.core.watchdog` decide. Each new violation gets
one log line, a Warning event on its pod, one increment of ``kube_vgpu_container_limit_violations_total`` and,
when ``watchdog_evict`` is on, an eviction through the Eviction API (PodDisruptionBudgets apply). An NVML or
API failure costs one round, never the plugin.

DRA: a claim's directory names the pod it was made for, or the claim itself (:mod:`plugin.core.dra`), and
other pods may use it. ``claims`` (the driver's checkpoint: (namespace, claim name) -> directory) and the
claims each pod names (``spec.resourceClaims``, ``status.resourceClaimStatuses``, from the pods listed to name
processes) tell which pods use which directory, so their processes are counted against the claim's limit and a
violation goes to the process's own pod, never to a pod named like the claim.

What it cannot see is in ``docs/security.md``: memory a process allocates and frees between two rounds,
compute time (NVML gives no per-process share the shim could be held to), and a process that hides from NVML.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from plugin.core.watchdog import (
    EVENT_REASONS,
    EVICTABLE,
    Episodes,
    ObservedProcess,
    PodRef,
    Violation,
    WatchedContainer,
    advance,
    describe,
    find_violations,
)
from plugin.kube import Cluster, KubeError
from plugin.kubeapi import ApiClient, CoreV1
from plugin.metrics.attribution import Evidence, container_ids_from_pods, owners, runs_under_shim
from plugin.metrics.cgroups import CgroupRef
from plugin.metrics.procfs import NamespacedPid, maps_file, read_cgroup, read_namespaced_pid
from plugin.metrics.sources import ViolationTally
from plugin.metrics.usage import ContainerState, StateReader
from plugin.nvml import NvmlError, ProcessUsage
from vcuda.model import GpuUuid
from vcuda.names import CONTAINER_SHIM_PATH

__all__ = ["ApiEvictor", "PodEvictor", "ProcessReadings", "Watchdog", "WatchdogOptions"]

log = logging.getLogger(__name__)


class ProcessReadings(Protocol):
    """The part of :class:`plugin.nvml.Nvml` the watchdog uses."""

    def process_usage(self, uuid: GpuUuid, *, since_us: int = 0) -> tuple[ProcessUsage, ...]: ...


class PodEvictor(Protocol):
    async def evict_pod(self, pod: PodRef) -> None:
        """Asks the API server to evict the pod (its UID as precondition); raises :class:`KubeError`."""
        ...


class ApiEvictor:
    """:class:`PodEvictor` over the Eviction API (``POST .../pods/<name>/eviction``, ``policy/v1``)."""

    def __init__(self, api: ApiClient, *, timeout_s: float = 10.0) -> None:
        self._core = CoreV1(api)
        self._timeout = timeout_s

    async def evict_pod(self, pod: PodRef) -> None:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "deleteOptions": {"preconditions": {"uid": pod.uid}},
        }
        evict: Any = self._core.create_namespaced_pod_eviction
        try:
            await asyncio.to_thread(
                evict, pod.name, pod.namespace, body, _preload_content=False, _request_timeout=self._timeout
            )
        except Exception as err:  # ApiException (429: a PodDisruptionBudget), urllib3 and socket errors
            raise KubeError(f"evict pod {pod.namespace}/{pod.name}: {err}") from err


@dataclass(frozen=True, slots=True)
class WatchdogOptions:
    interval_s: float = 10.0
    overhead_bytes: int = 512 << 20
    evict: bool = False


@dataclass(frozen=True, slots=True)
class _Round:
    """One round's joined readings, before any decision."""

    containers: tuple[WatchedContainer, ...]
    processes: tuple[ObservedProcess, ...]
    unplaced: Mapping[int, CgroupRef]  # host PID -> its cgroup, for pod processes no container took


class Watchdog:
    def __init__(
        self,
        *,
        node: str,
        state_dir: Path,
        nvml: ProcessReadings,
        gpus: Callable[[], Sequence[GpuUuid]],
        cluster: Cluster,
        tally: ViolationTally,
        options: WatchdogOptions = WatchdogOptions(),
        evictor: PodEvictor | None = None,
        root: Path = Path("/"),
        claims: Callable[[], Mapping[tuple[str, str], str]] = dict,
    ) -> None:
        self._node = node
        self._state = StateReader(state_dir)
        self._nvml = nvml
        self._gpus = gpus
        self._cluster = cluster
        self._tally = tally
        self._options = options
        self._evictor = evictor
        self._root = root
        self._episodes = Episodes()
        self._evicted: set[str] = set()
        self._pods: dict[str, tuple[PodRef, Mapping[str, str]]] = {}  # uid -> (pod, container id -> name)
        self._claims = claims
        """The DRA claims prepared on this node: (namespace, claim name) -> state directory name."""
        self._uses: dict[str, frozenset[tuple[str, str]]] = {}  # pod uid -> (namespace, claim name) it uses

    async def run(self) -> None:
        if self._options.evict and self._evictor is None:
            log.warning("watchdog eviction is configured but no evictor was wired: events only")
        while True:
            await asyncio.sleep(self._options.interval_s)
            try:
                await self.check_once()
            except Exception:  # a bug or an odd reading must not take the device plugin down with it
                log.exception("watchdog: round failed; trying again next round")

    async def check_once(self) -> list[Violation]:
        """One round; returns the violations reported in it (seen in this round and the previous one)."""
        try:
            readings = await asyncio.to_thread(self._read, self.shared_claims())
        except NvmlError as err:
            log.warning("watchdog: NVML could not be read, round skipped: %s", err)
            return []
        processes = await self._name_pods(readings)
        found = find_violations(readings.containers, processes, overhead_bytes=self._options.overhead_bytes)
        self._episodes, report = advance(self._episodes, found)
        for v in report:
            await self._report(v)
        self._evicted &= {v.pod.uid for v in found if v.pod}  # forget pods whose violation is gone
        if self._options.evict and self._evictor is not None:
            active = self._episodes.active
            for v in found:
                if v.key in active and v.reason in EVICTABLE and v.pod and v.pod.uid not in self._evicted:
                    await self._evict(v.pod)
        return report

    # ---- readings (worker thread) ----

    def shared_claims(self) -> dict[str, list[str]]:
        """Pod UID -> the DRA claim directories it uses (by the claims its spec and status name, as last
        listed); the exporter asks too, from its own thread."""
        dirs = self._claims()
        if not dirs:
            return {}
        uses = self._uses  # replaced whole by a listing, never changed in place
        out = {uid: [dirs[c] for c in claims if c in dirs] for uid, claims in uses.items()}
        return {uid: found for uid, found in out.items() if found}

    def _read(self, shared: Mapping[str, Sequence[str]]) -> _Round:
        state = self._state.read()
        samples = self._samples()
        pids = {p.host_pid for p in samples}
        cgroups = {pid: read_cgroup(self._root, pid) for pid in pids}
        placed = owners(pids, state.containers, Evidence(cgroups, {}, self._namespaced, shared=shared))
        by_name = {c.name: c for c in state.containers}
        processes = tuple(
            self._observed(p, by_name.get(placed.get(p.host_pid, "")), cgroups.get(p.host_pid))
            for p in samples
        )
        unplaced = {pid: ref for pid, ref in cgroups.items() if ref is not None and pid not in placed}
        return _Round(tuple(_watched(c) for c in state.containers), processes, unplaced)

    def _samples(self) -> list[ProcessUsage]:
        """Distinct (GPU, PID) compute processes on the watched GPUs; one failing GPU is left out."""
        out: dict[tuple[GpuUuid, int], ProcessUsage] = {}
        gpus = self._gpus()
        failures = 0
        for uuid in gpus:
            try:
                for p in self._nvml.process_usage(uuid):
                    out.setdefault((uuid, p.host_pid), p)
            except NvmlError as err:
                failures += 1
                log.debug("watchdog: GPU %s left out this round: %s", uuid, err, extra={"gpu": uuid})
        if gpus and failures == len(gpus):
            raise NvmlError("no GPU answered")
        return list(out.values())

    def _namespaced(self, pid: int) -> NamespacedPid | None:
        return read_namespaced_pid(self._root, pid)

    def _under_shim(self, pid: int, owner: ContainerState) -> bool:
        """A live shim slot (the tenant writes those) counts only if the process maps the shim library
        (its memory map, which the kernel writes); an unreadable map leaves the slot's word."""
        if not runs_under_shim(pid, owner, self._namespaced):
            return False
        return maps_file(self._root, pid, CONTAINER_SHIM_PATH) is not False

    def _observed(
        self, p: ProcessUsage, owner: ContainerState | None, cgroup: CgroupRef | None
    ) -> ObservedProcess:
        """A process as placed; one no container took gets its pod and container in :meth:`_name_pods`. Its
        pod is its cgroup's: the directory's owner unless it uses a DRA claim another pod (or the claim
        itself) owns; then its name is the listed pod's (only pods listed with their claims are placed so)."""
        if owner is None:
            return ObservedProcess(p.uuid, p.host_pid, p.used_bytes or 0)
        c = owner.config
        pod = PodRef(c.namespace, c.pod_name, c.pod_uid)
        if cgroup is not None and cgroup.pod_uid != c.pod_uid:
            pod = self._pods.get(cgroup.pod_uid, (PodRef("", "", cgroup.pod_uid), {}))[0]
        return ObservedProcess(
            gpu=p.uuid,
            host_pid=p.host_pid,
            used_bytes=p.used_bytes or 0,  # None: NVML has no figure (some drivers in containers)
            pod=pod,
            owner=owner.name,
            in_shim=self._under_shim(p.host_pid, owner),
            container=c.container,
        )

    # ---- names of pods outside kube-vgpu (API, only when such a process is seen) ----

    async def _name_pods(self, readings: _Round) -> list[ObservedProcess]:
        """Pod and container of each process in a pod that no kube-vgpu container took: from the state
        directory when the pod is kube-vgpu's, else from the API (listed again when a new pod or container
        shows up; a pod the API does not know keeps only its UID)."""
        known = {c.pod.uid: c.pod for c in readings.containers}
        refs = readings.unplaced.values()
        if any(self._unnamed(r) for r in refs):
            await self._list_pods()
        out = []
        for p in readings.processes:
            ref = readings.unplaced.get(p.host_pid)
            if p.owner is None and ref is not None:
                listed, names = self._pods.get(ref.pod_uid, (PodRef("", "", ref.pod_uid), {}))
                pod = known.get(ref.pod_uid, listed)
                p = ObservedProcess(
                    p.gpu, p.host_pid, p.used_bytes, pod, container=names.get(ref.container_id or "", "")
                )
            out.append(p)
        return out

    def _unnamed(self, ref: CgroupRef) -> bool:
        cached = self._pods.get(ref.pod_uid)
        return cached is None or (ref.container_id is not None and ref.container_id not in cached[1])

    async def _list_pods(self) -> None:
        try:
            pods = await self._cluster.node_pods(self._node)
        except KubeError as err:
            log.warning("watchdog: could not list the node's pods to name a GPU process: %s", err)
            return
        named: dict[str, tuple[PodRef, Mapping[str, str]]] = {}
        uses: dict[str, frozenset[tuple[str, str]]] = {}
        for body in pods:
            meta = body.get("metadata") or {}
            if meta.get("uid"):
                ref = PodRef(str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta["uid"]))
                named[ref.uid] = (ref, container_ids_from_pods([body]))
                uses[ref.uid] = frozenset((ref.namespace, c) for c in _claim_names(body))
        self._pods, self._uses = named, uses

    # ---- actions ----

    async def _report(self, v: Violation) -> None:
        message = describe(v, self._options.overhead_bytes)
        pod = v.pod
        where = (
            f"{pod.namespace}/{pod.name}" if pod and pod.name else (f"pod UID {pod.uid}" if pod else "host")
        )
        log.warning("watchdog: %s %s container %r: %s", v.reason, where, v.container, message)
        self._tally.record(pod.namespace if pod else "", pod.name if pod else "", v.container, v.reason)
        if pod is not None and pod.name:
            ref = {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}
            await self._cluster.pod_event(ref, EVENT_REASONS[v.reason], message)

    async def _evict(self, pod: PodRef) -> None:
        assert self._evictor is not None
        if not pod.name:
            return
        try:
            await self._evictor.evict_pod(pod)
        except KubeError as err:
            log.warning(
                "watchdog: eviction of %s/%s refused, tried again next round: %s",
                pod.namespace,
                pod.name,
                err,
            )
            return
        self._evicted.add(pod.uid)
        log.warning("watchdog: evicted %s/%s", pod.namespace, pod.name)


def _claim_names(pod: Mapping[str, Any]) -> list[str]:
    """The ResourceClaims a pod uses, by name: ``spec.resourceClaims[].resourceClaimName`` and, for claims
    made from a template, ``status.resourceClaimStatuses[].resourceClaimName``; anything odd is skipped."""
    spec, status = pod.get("spec"), pod.get("status")
    entries = [
        *(_items(spec.get("resourceClaims")) if isinstance(spec, Mapping) else ()),
        *(_items(status.get("resourceClaimStatuses")) if isinstance(status, Mapping) else ()),
    ]
    names = (e.get("resourceClaimName") for e in entries if isinstance(e, Mapping))
    return [n for n in names if isinstance(n, str) and n]


def _items(raw: object) -> list[object]:
    return raw if isinstance(raw, list) else []


def _watched(c: ContainerState) -> WatchedContainer:
    cfg = c.config
    shim: dict[GpuUuid, int] = {}
    for i, g in enumerate(cfg.gpus):
        shim[g.uuid] = sum(p.gpus[i].memory_used for p in c.processes if i < len(p.gpus))
    return WatchedContainer(
        dir_name=c.name,
        pod=PodRef(cfg.namespace, cfg.pod_name, cfg.pod_uid),
        container=cfg.container,
        limits={g.uuid: g.memory_limit_bytes for g in cfg.gpus},
        shim_used=shim,
    )
