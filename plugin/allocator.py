"""Serves the kubelet's allocation calls: attributes them to pending containers, writes the files, and
verifies in ``PreStartContainer``.

The flow only: the pending pods are :class:`plugin.podcache.PodCache`'s, the verdict is written by
:class:`plugin.verdicts.VerdictWriter`, and decisions are made by :mod:`plugin.core.attribution`,
:mod:`plugin.core.admission`, :mod:`plugin.core.verify`, :mod:`plugin.core.reconcile` and
:mod:`plugin.core.allocate`. Calls are serialised by one lock: the kubelet admits pods one at a time, and a
decision must see the previous one.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from plugin.core.admission import (
    Held,
    admitting,
    contested,
    holder,
    kubelet_view,
    record_for,
    several_match,
    steer,
    with_records,
    withheld_reason,
)
from plugin.core.allocate import ContainerPlan, PlanOptions, plan_container
from plugin.core.attribution import Candidate, ContainerKey, PodRef, attribute, candidates, container_name
from plugin.core.errors import AllocationError, AttributionMismatchError
from plugin.core.gpu import Gpu
from plugin.core.reconcile import Suspect, reconcile
from plugin.core.slices import gpu_split
from plugin.core.verify import Outcome, verify
from plugin.kube import Cluster
from plugin.podcache import PodCache
from plugin.statedir import AllocationRecord, StateDir
from plugin.verdicts import VerdictWriter
from vcuda.names import Names
from vcuda.signing import Verifier

__all__ = ["Allocator", "Held", "PodResourcesSource"]

log = logging.getLogger(__name__)

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
        self._pod_resources = pod_resources
        self._state = state
        self._gpus = gpus
        self._options = options
        self._lock = asyncio.Lock()
        self.cache = PodCache(cluster=cluster, node=node, names=names, verifier=verifier)
        self._records: dict[str, AllocationRecord] = {r.dir_name: r for r in state.records()}
        self._writer = VerdictWriter(
            names=names, cluster=cluster, state=state, cache=self.cache, records=self._records
        )
        self._steered: tuple[frozenset[str], ContainerKey] | None = None
        self._withheld = ""
        """Why the last GetPreferredAllocation could not steer: the kubelet withheld slices of the best
        candidate's GPUs (said again if the Allocate that follows is refused)."""
        self._suspects: dict[str, AllocationRecord] = {}

    # --- kubelet calls --------------------------------------------------------------------------

    async def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        async with self._lock:
            held = await self._held()
            if held is not None:
                await self._reconcile(held)
            if held is None or self.cache.stale(held):
                await self.cache.refresh()
            ranked = self._ranked()
            if held is not None and contested(ranked, size):
                ranked = self._ranked(self._admitting_from(held))  # the pod the kubelet admits goes first
            chosen, steered = steer(ranked, available, must_include, size)
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
            log.info(
                "allocated %d slices to %s (ambiguous=%s)", len(ids), container_name(cand.key), ambiguous
            )
            return plan

    async def prestart(self, ids: Sequence[str]) -> None:
        async with self._lock:
            record = record_for(self._records.values(), ids)
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
        suspects = (Suspect(n, frozenset(r.device_ids), r.owner) for n, r in live.items())
        verdict = reconcile(suspects, kubelet_view(held))
        for name in verdict.dropped:
            log.warning(
                "the kubelet lost the Allocate of %d slices for %s (restarted before its checkpoint): "
                "counting the container as pending again",
                len(live[name].device_ids),
                container_name(live[name].owner),
            )
            del self._records[name]
            self._state.remove_record(name)
        self._suspects = {n: live[n] for n in verdict.undecided}

    # --- attribution ----------------------------------------------------------------------------

    def _steered_candidate(self, ids: Sequence[str]) -> Candidate | None:
        """The candidate GetPreferredAllocation chose, when the kubelet took exactly its suggestion."""
        steered, self._steered = self._steered, None
        if steered is None or steered[0] != frozenset(ids):
            return None
        return next((c for c in self._ranked() if c.key == steered[1] and c.split == gpu_split(ids)), None)

    def _why_withheld(
        self, held: Sequence[Held] | None, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> str:
        ranked = self._ranked(self._admitting_from(held)) if held is not None else self._ranked()
        why = withheld_reason(ranked, held or (), available, must_include, size)
        if why:
            log.warning("GetPreferredAllocation cannot steer: %s", why)
        return why

    async def _attribute(self, ids: Sequence[str], withheld: str = "") -> tuple[Candidate, bool]:
        """The candidate the kubelet's IDs belong to; a refusal repeats why the preference could not steer."""
        await self._reconcile()
        try:
            cand, ambiguous = attribute(self._ranked(), ids)
        except AllocationError:
            await self.cache.refresh()
            try:
                cand, ambiguous = attribute(self._ranked(), ids)
            except AllocationError as err:
                raise AllocationError(f"{err} ({withheld})" if withheld else str(err)) from err
        if ambiguous or several_match(self._ranked(), ids):
            cand, ambiguous = attribute(self._ranked(await self._admitting()), ids)
        return cand, ambiguous

    def _ranked(
        self, admitting: frozenset[PodRef] = frozenset(), *, tentative: bool = True
    ) -> list[Candidate]:
        pods = with_records(self.cache.pods.values(), self._records.values(), tentative=tentative)
        return candidates(pods, admitting)

    async def _held(self) -> list[Held] | None:
        try:
            return await self._pod_resources()
        except Exception as err:  # PodResources is a hint here; without it the oldest pod goes first
            log.warning("PodResources unavailable for disambiguation: %s", err)
            return None

    async def _admitting(self) -> frozenset[PodRef]:
        held = await self._held()
        return self._admitting_from(held) if held is not None else frozenset()

    def _admitting_from(self, held: Sequence[Held]) -> frozenset[PodRef]:
        return admitting(self.cache.pods, held)

    # --- verification ---------------------------------------------------------------------------

    async def _verify(self, record: AllocationRecord) -> None:
        held = await self._pod_resources()
        await self.cache.refresh()
        every = {c.key: c for c in self._ranked(tentative=False)}
        attributed = every.get(record.owner)
        owner = holder(held, self.cache.pods, record)
        try:
            if attributed is None:
                raise AttributionMismatchError(
                    f"{container_name(record.owner)} is no longer pending on this node"
                )
            verdict = verify(attributed, owner, every.get(owner) if owner else None, record.device_ids)
        except AttributionMismatchError as err:
            await self._writer.fail(record, owner, str(err))
            raise
        if verdict.outcome is Outcome.SWAPPED:
            record = await self._writer.swap(record, attributed, every[verdict.owner])
        await self._writer.confirm(record)

    # --- reclaim support ------------------------------------------------------------------------

    def forget(self, dir_names: Sequence[str]) -> None:
        for name in dir_names:
            self._records.pop(name, None)
