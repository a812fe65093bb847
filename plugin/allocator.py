"""Serves the kubelet's allocation calls: keeps the pending pods and tentative attributions, writes the files,
verifies in ``PreStartContainer`` and writes the outcome back to the pods.

Decisions are made by :mod:`plugin.core.attribution` and :mod:`plugin.core.allocate`; this module does the
I/O around them (API server, PodResources, the state directory). Calls are serialised by one lock: the
kubelet admits pods one at a time, and a decision must see the previous one.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from plugin.core.allocate import ContainerPlan, PlanOptions, plan_container
from plugin.core.attribution import (
    Candidate,
    ContainerKey,
    PendingPod,
    PodKey,
    attribute,
    candidates,
    prefer,
    shortfall,
    unlisted_init,
)
from plugin.core.errors import AllocationError, AttributionMismatchError
from plugin.core.gpu import Gpu
from plugin.core.pods import pending_pod, pod_key, pod_status
from plugin.core.reconcile import KubeletView, Suspect, reconcile
from plugin.core.slices import gpu_split
from plugin.core.verify import Outcome, verify
from plugin.kube import Cluster, KubeError
from plugin.state import AllocationRecord, StateDir
from vcuda.annotations import PodStatus, encode_status
from vcuda.model import GpuShare, Phase, PodAssignment
from vcuda.names import Names
from vcuda.signing import Verifier

__all__ = ["Allocator", "Held", "PodResourcesSource"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Held:
    """One container as PodResources lists it, with the ``vcuda-core`` IDs it holds (maybe none)."""

    namespace: str
    pod: str
    container: str
    device_ids: frozenset[str]


PodResourcesSource = Callable[[], Awaitable[list[Held]]]
"""Lists every container the kubelet knows with its ``vcuda-core`` IDs (one PodResources ``List``)."""


class Allocator:
    def __init__(
        self,
        *,
        names: Names,
        node: str,
        verifier: Verifier,
        cluster: Cluster,
        pod_resources: PodResourcesSource,
        state: StateDir,
        gpus: Callable[[], Mapping[str, Gpu]],
        options: PlanOptions,
    ) -> None:
        self._names = names
        self._node = node
        self._verifier = verifier
        self._moved: dict[PodKey, dict[str, tuple[GpuShare, ...]]] = {}
        """Swaps made since the pods were read (containers whose GPUs changed), kept in their status."""
        self._cluster = cluster
        self._pod_resources = pod_resources
        self._state = state
        self._gpus = gpus
        self._options = options
        self._lock = asyncio.Lock()
        self._pods: dict[PodKey, PendingPod] = {}
        self._records: dict[str, AllocationRecord] = {r.dir_name: r for r in state.records()}
        self._steered: tuple[frozenset[str], ContainerKey] | None = None
        self._withheld = ""
        """Why the last GetPreferredAllocation could not steer: the kubelet withheld slices of the best
        candidate's GPUs (said again if the Allocate that follows is refused)."""
        self._suspects: dict[str, AllocationRecord] = {}
        self._decoded: dict[tuple[str, str], PendingPod | str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._refreshed_at = float("-inf")
        self.cache_ttl_s = 2.0
        """GetPreferredAllocation re-lists pods when the cache is older than this or PodResources names a
        pod the cache has not seen (a newly bound pod); otherwise the cached list serves."""

    # --- kubelet calls --------------------------------------------------------------------------

    async def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        async with self._lock:
            held = await self._held()
            if held is not None:
                await self._reconcile(held)
            if held is None or self._stale(held):
                await self._refresh()
            chosen, steered = self._choose(held, available, must_include, size)
            self._steered = (frozenset(chosen), steered.key) if steered else None
            self._withheld = "" if steered else self._why_withheld(held, available, must_include, size)
            return chosen

    async def allocate(self, ids: Sequence[str]) -> ContainerPlan:
        async with self._lock:
            withheld, self._withheld = self._withheld, ""
            cand, ambiguous = self._steered_candidate(ids), False
            if cand is None:
                cand, ambiguous = await self._attribute(ids, withheld)
            plan = plan_container(cand, self._gpus(), self._options)
            record = AllocationRecord(plan.dir_name, tuple(sorted(ids)), cand.key)
            self._state.write_container(record, plan.config)
            self._records[record.dir_name] = record
            log.info("allocated %d slices to %s (ambiguous=%s)", len(ids), _name(cand.key), ambiguous)
            return plan

    async def prestart(self, ids: Sequence[str]) -> None:
        async with self._lock:
            record = self._record_for(ids)
            if record is None:
                raise AttributionMismatchError(
                    f"no Allocate is recorded for {len(ids)} slices {sorted(ids)[:2]}..."
                )
            if record.confirmed:
                return
            await self._verify(record)

    # --- kubelet sessions (plugin.core.reconcile) ------------------------------------------------

    def kubelet_session(self) -> None:
        """A (re)registration with the kubelet begins: every unconfirmed record made so far is a suspect
        until one PodResources ``List`` shows whether the kubelet's checkpoint kept its ``Allocate``."""
        self._suspects = {n: r for n, r in self._records.items() if not r.confirmed}

    async def reconcile(self) -> None:
        """Drop the suspects whose ``Allocate`` the kubelet lost (called once registered)."""
        async with self._lock:
            await self._reconcile()

    async def _reconcile(self, held: Sequence[Held] | None = None) -> None:
        if not self._suspects:
            return
        if held is None and (held := await self._held()) is None:
            return  # PodResources unavailable: ask again at the next kubelet call
        # A record replaced since (a new Allocate, confirmed, swapped, reclaimed) is no suspect any more.
        live = {n: r for n, r in self._suspects.items() if self._records.get(n) is r}
        view = KubeletView(
            frozenset((h.namespace, h.pod) for h in held),
            frozenset(h.device_ids for h in held),
            frozenset((h.namespace, h.pod, h.container) for h in held),
        )
        verdict = reconcile((Suspect(n, frozenset(r.device_ids), r.owner) for n, r in live.items()), view)
        for name in verdict.dropped:
            log.warning(
                "the kubelet lost the Allocate of %d slices for %s (restarted before its checkpoint): "
                "counting the container as pending again",
                len(live[name].device_ids),
                _name(live[name].owner),
            )
            del self._records[name]
            self._state.remove_record(name)
        self._suspects = {n: live[n] for n in verdict.undecided}

    # --- attribution state ----------------------------------------------------------------------

    def _steered_candidate(self, ids: Sequence[str]) -> Candidate | None:
        """The candidate GetPreferredAllocation chose, when the kubelet took exactly its suggestion."""
        steered, self._steered = self._steered, None
        if steered is None or steered[0] != frozenset(ids):
            return None
        return next((c for c in self._ranked() if c.key == steered[1] and c.split == gpu_split(ids)), None)

    def _choose(
        self, held: Sequence[Held] | None, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> tuple[list[str], Candidate | None]:
        """The IDs to suggest and the cached candidate they are for (None: none fits, a plain pick)."""
        ranked = self._ranked()
        if held is not None and sum(c.request.cores == size for c in ranked) > 1:
            ranked = self._ranked(self._admitting_from(held))  # the pod the kubelet admits goes first
        chosen = prefer(ranked, available, must_include, size)
        split = gpu_split(chosen)
        return chosen, next((c for c in ranked if c.request.cores == size and c.split == split), None)

    def _why_withheld(
        self, held: Sequence[Held] | None, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> str:
        """Names the slices the kubelet did not offer for the best candidate's GPUs and who holds them."""
        ranked = self._ranked(self._admitting_from(held)) if held is not None else self._ranked()
        found = shortfall(ranked, available, must_include, size)
        if found is None or not found[1]:
            return ""
        cand, lacking = found
        holders = sorted(
            {f"{h.namespace}/{h.pod}" for h in held or () if set(gpu_split(h.device_ids)) & set(lacking)}
        )
        where = ", ".join(f"{k} of {u}" for u, k in lacking.items())
        who = (
            f"containers of {', '.join(holders)} hold slices there"
            if holders
            else "no container the kubelet lists holds them: it still counts them for a pod it no longer "
            "runs (after a restart it frees those only once its pod sources have synced)"
        )
        why = f"the kubelet withheld {where} assigned to {_name(cand.key)}; {who}"
        log.warning("GetPreferredAllocation cannot steer: %s", why)
        return why

    async def _attribute(self, ids: Sequence[str], withheld: str = "") -> tuple[Candidate, bool]:
        """The candidate the kubelet's IDs belong to; a refusal repeats why the preference could not steer."""
        await self._reconcile()
        try:
            cand, ambiguous = attribute(self._ranked(), ids)
        except AllocationError:
            await self._refresh()
            try:
                cand, ambiguous = attribute(self._ranked(), ids)
            except AllocationError as err:
                raise AllocationError(f"{err} ({withheld})" if withheld else str(err)) from err
        if ambiguous or self._several_match(ids):
            cand, ambiguous = attribute(self._ranked(await self._admitting()), ids)
        return cand, ambiguous

    def _several_match(self, ids: Sequence[str]) -> bool:
        split = gpu_split(ids)
        return sum(c.split == split for c in self._ranked()) > 1

    async def _refresh(self) -> None:
        pods: dict[PodKey, PendingPod] = {}
        decoded: dict[tuple[str, str], PendingPod | str] = {}
        raws = await self._cluster.node_pods(self._node)
        self._refreshed_at = time.monotonic()
        self._seen = {(pod_key(raw).namespace, pod_key(raw).name) for raw in raws}
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
                log.warning("ignoring pod %s: %s", _pod_name(pod_key(raw)), found)
        self._pods = pods
        self._decoded = decoded
        self._moved = {k: m for raw in raws if (m := self._moves_of(k := pod_key(raw), raw))}

    def _moves_of(self, key: PodKey, raw: Mapping[str, Any]) -> dict[str, tuple[GpuShare, ...]]:
        """The swaps the pod's status records, with those made since (not yet read back) on top."""
        status = pod_status(raw, self._names)
        return {**dict(status.moved if status else ()), **self._moved.get(key, {})}

    def _ranked(
        self, admitting: frozenset[PodKey] = frozenset(), *, tentative: bool = True
    ) -> list[Candidate]:
        taken: dict[PodKey, set[str]] = {}
        for r in self._records.values():
            if tentative or r.confirmed:
                taken.setdefault(r.owner.pod, set()).add(r.owner.container)
        pods = [replace(p, allocated=p.allocated | taken.get(p.key, set())) for p in self._pods.values()]
        return candidates(pods, admitting)

    async def _held(self) -> list[Held] | None:
        try:
            return await self._pod_resources()
        except Exception as err:  # PodResources is a hint here; without it the oldest pod goes first
            log.warning("PodResources unavailable for disambiguation: %s", err)
            return None

    def _stale(self, held: Sequence[Held]) -> bool:
        """The pod cache must be re-read when old or when the kubelet knows a pod it has not seen."""
        old = time.monotonic() - self._refreshed_at > self.cache_ttl_s
        return old or any((h.namespace, h.pod) not in self._seen for h in held)

    async def _admitting(self) -> frozenset[PodKey]:
        held = await self._held()
        return self._admitting_from(held) if held is not None else frozenset()

    def _admitting_from(self, held: Sequence[Held]) -> frozenset[PodKey]:
        """Pods the kubelet knows (PodResources) with a GPU container that holds no slices yet."""
        by_name = {(k.namespace, k.name): k for k in self._pods}
        out = set()
        for h in held:
            key = by_name.get((h.namespace, h.pod))
            if (
                key is not None
                and not h.device_ids
                and any(c.name == h.container for c in self._pods[key].request.containers)
            ):
                out.add(key)
        return frozenset(out)

    def _record_for(self, ids: Sequence[str]) -> AllocationRecord | None:
        wanted = tuple(sorted(ids))
        found = [r for r in self._records.values() if r.device_ids == wanted]
        found.sort(key=lambda r: r.confirmed)  # an unconfirmed record first (init devices may be reused)
        return found[0] if found else None

    # --- verification ---------------------------------------------------------------------------

    async def _verify(self, record: AllocationRecord) -> None:
        held = await self._pod_resources()
        await self._refresh()
        every = {c.key: c for c in self._ranked(tentative=False)}
        attributed = every.get(record.owner)
        owner = self._owner(held, record)
        try:
            if attributed is None:
                raise AttributionMismatchError(f"{_name(record.owner)} is no longer pending on this node")
            verdict = verify(attributed, owner, every.get(owner) if owner else None, record.device_ids)
        except AttributionMismatchError as err:
            await self._fail(record, owner, str(err))
            raise
        if verdict.outcome is Outcome.SWAPPED:
            await self._swap(record, attributed, every[verdict.owner])
            record = self._records[record.dir_name]
        await self._confirm(record)

    def _owner(self, held: Sequence[Held], record: AllocationRecord) -> ContainerKey | None:
        """Who PodResources says holds the record's devices, pending here or not: a pod without a valid
        assignment (one that copied another pod's) is named too, so the refusal lands on it and not on the
        pod whose assignment it copied."""
        ids = frozenset(record.device_ids)
        by_name = {(k.namespace, k.name): k for k in self._pods}
        owners = [
            ContainerKey(by_name.get((h.namespace, h.pod)) or PodKey(h.namespace, h.pod, ""), h.container)
            for h in held
            if h.device_ids == ids
        ]
        if record.owner in owners:
            return record.owner
        listed = [(h.namespace, h.pod, h.device_ids) for h in held]
        if unlisted_init(record.owner, self._pods.get(record.owner.pod), listed, ids):
            return record.owner  # a regular init container: PodResources does not list it
        return owners[0] if owners else None

    async def _fail(self, record: AllocationRecord, owner: ContainerKey | None, message: str) -> None:
        """Refuse the container that really holds the devices; the attributed container stays pending."""
        log.error("%s", message)
        self._state.poison_config(record.dir_name)
        if owner is not None and owner != record.owner:
            record = replace(record, owner=owner)
            self._records[record.dir_name] = record
            self._state.write_record(record)
        pod = record.owner.pod
        status = self._status(pod, Phase.FAILED, message)
        try:
            await self._cluster.patch_pod_annotations(
                pod.namespace, pod.name, {self._names.status: encode_status(status)}
            )
            await self._cluster.pod_event(
                {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
                "VGPUAttributionMismatch",
                message,
            )
        except KubeError as err:
            log.error("could not record the mismatch on %s: %s", _pod_name(pod), err)

    async def _swap(self, record: AllocationRecord, attributed: Candidate, owner: Candidate) -> None:
        """``owner`` really holds ``record``'s devices: exchange the two containers' GPUs in every record."""
        log.warning(
            "interchangeable containers swapped: %s runs on %s's GPUs",
            _name(owner.key),
            _name(attributed.key),
        )
        new = {owner.key: attributed.assignment.shares, attributed.key: owner.assignment.shares}
        for pod in {owner.key.pod, attributed.key.pod}:
            await self._record_moves(pod, {k.container: s for k, s in new.items() if k.pod == pod})
        for other in list(self._records.values()):
            if other.owner == owner.key and other.dir_name != record.dir_name:
                self._reassign(other, attributed.key)
        self._reassign(record, owner.key)

    def _reassign(self, record: AllocationRecord, owner: ContainerKey) -> None:
        updated = replace(record, owner=owner)
        self._records[record.dir_name] = updated
        self._state.write_record(updated)
        config = self._state.read_config(record.dir_name)
        if config is not None:
            pod = owner.pod
            fixed = replace(
                config, pod_uid=pod.uid, namespace=pod.namespace, pod_name=pod.name, container=owner.container
            )
            self._state.write_config(record.dir_name, fixed)

    async def _record_moves(self, pod: PodKey, shares: Mapping[str, tuple[GpuShare, ...]]) -> None:
        """Record a swap in the pod's *status* (the plugin's own record): the extender's signed assignment is
        never rewritten, and the plugin holds no key that could sign one."""
        old = self._pods[pod].assignment
        containers = tuple(replace(c, shares=shares.get(c.name, c.shares)) for c in old.containers)
        self._pods[pod] = replace(self._pods[pod], assignment=PodAssignment(old.node, containers))
        self._moved.setdefault(pod, {}).update(shares)
        status = self._status(pod, self._phase(pod, self._confirmed(pod)), "")
        await self._cluster.patch_pod_annotations(
            pod.namespace, pod.name, {self._names.status: encode_status(status)}
        )

    def _phase(self, pod: PodKey, done: set[str]) -> Phase:
        wanted = {c.name for c in self._pods[pod].request.containers} if pod in self._pods else done
        return Phase.ALLOCATED if wanted <= done else Phase.ASSUMED

    def _status(self, pod: PodKey, phase: Phase, message: str) -> PodStatus:
        moved = tuple(sorted(self._moved.get(pod, {}).items()))
        return PodStatus(phase, tuple(sorted(self._confirmed(pod))), time.time(), message, moved)

    def _confirmed(self, pod: PodKey) -> set[str]:
        done = {r.owner.container for r in self._records.values() if r.confirmed and r.owner.pod == pod}
        pending = self._pods.get(pod)
        return done | set(pending.allocated if pending else ())

    async def _confirm(self, record: AllocationRecord) -> None:
        confirmed = replace(record, confirmed=True)
        self._records[record.dir_name] = confirmed
        self._state.write_record(confirmed)
        pod = record.owner.pod
        phase = self._phase(pod, self._confirmed(pod))
        status = self._status(pod, phase, "")
        await self._cluster.patch_pod_annotations(
            pod.namespace, pod.name, {self._names.status: encode_status(status)}
        )
        log.info("confirmed %s (pod %s)", _name(record.owner), phase.value)

    # --- reclaim support ------------------------------------------------------------------------

    def forget(self, dir_names: Sequence[str]) -> None:
        for name in dir_names:
            self._records.pop(name, None)


def _pod_name(pod: PodKey) -> str:
    return f"{pod.namespace}/{pod.name}"


def _name(key: ContainerKey) -> str:
    return f"{key.pod.namespace}/{key.pod.name}/{key.container}"
