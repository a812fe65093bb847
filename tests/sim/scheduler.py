"""A SIMULATED kube-scheduler: one profile, the shipped extender configuration, real HTTP to the extender.

What it does as upstream (``pkg/scheduler/schedule_one.go``): pods of its ``schedulerName`` are taken one at a
time from :class:`~tests.sim.queue.SchedulingQueue`; the built-in filters of :mod:`tests.sim.fit` run first,
then every interested extender's ``filter`` on the survivors (``FailedAndUnresolvableNodes`` wins over
``FailedNodes``; an extender ``Error`` is a scheduling error unless the extender is ignorable); with one
feasible node scoring is skipped, otherwise each extender's ``prioritize`` scores count ``score x weight x 10``
(errors ignored) and ties break at random (seeded here, for repeatable runs); the pod is assumed on the host
and bound asynchronously through the extender's ``bind`` (or the binding subresource when no extender binds).
A pod no node fits gets the ``PodScheduled=False/Unschedulable`` condition with the aggregated
"0/N nodes are available" message and waits for a cluster event. What it does not do: preemption, built-in
scoring plugins, CPU/memory fit, affinity, gang or permit plugins.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.sim.extenders import ExtenderCallError, ExtenderClient
from tests.sim.fit import fit_node, is_terminal, summarise_failures
from tests.sim.kubeapi import ApiError, KubeApi, Obj, pod_path
from tests.sim.queue import QueueSettings, SchedulingQueue
from tests.sim.schedconfig import SchedulerConfig

__all__ = ["Outcome", "SimScheduler", "pod_key"]

log = logging.getLogger(__name__)

DEFAULT_QUEUE = QueueSettings()


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The last scheduling attempt of a pod: a host, or why not (``kind`` is unschedulable | error)."""

    kind: str
    message: str = ""
    node: str = ""


class _UnschedulableError(Exception):
    pass


class SimScheduler:
    def __init__(
        self, api: KubeApi, config: SchedulerConfig, *, queue: QueueSettings = DEFAULT_QUEUE, seed: int = 0
    ) -> None:
        self.api, self.config = api, config
        self.queue = SchedulingQueue(queue)
        self.extenders = [ExtenderClient(e) for e in config.extenders]
        self.nodes: dict[str, Obj] = {}
        self.pods: dict[str, Obj] = {}
        self.assumed: dict[str, str] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.binds_in_flight: set[asyncio.Task[None]] = set()
        self._rng = random.Random(seed)

    async def aclose(self) -> None:
        for task in list(self.binds_in_flight):
            task.cancel()
        for client in self.extenders:
            await client.aclose()

    async def run(self) -> None:
        """Watch nodes and pods and schedule until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch("nodes", self._on_node))
            group.create_task(self._watch("pods", self._on_pod))
            group.create_task(self._loop())

    # --- informers -------------------------------------------------------------------------------

    async def _watch(self, kind: str, handle: Any) -> None:
        while True:
            try:
                async for event in self.api.watch(kind):
                    handle(event["type"], event["object"])
            except (ApiError, OSError, ValueError) as err:
                log.warning("scheduler: %s watch broke (%s), watching again", kind, err)
            await asyncio.sleep(0.2)

    def _on_node(self, kind: str, node: Obj) -> None:
        name = node["metadata"]["name"]
        if kind == "DELETED":
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = node
            self.queue.move_all()

    def _on_pod(self, kind: str, pod: Obj) -> None:
        key = pod_key(pod)
        if kind == "DELETED":
            self.pods.pop(key, None)
            self.queue.delete(key)
            if self.assumed.pop(key, None) or (pod.get("spec") or {}).get("nodeName"):
                self.queue.move_all()
            return
        self.pods[key] = pod
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            # An assigned pod changed: as upstream for pods an extender rejected (no rejecting plugin to ask
            # for a queueing hint), every parked pod is worth another try after its backoff.
            self.queue.delete(key)
            self.assumed.pop(key, None)
            self.queue.move_all()
        elif self._wants(pod) and key not in self.assumed:
            self.queue.add(key, int((pod.get("spec") or {}).get("priority") or 0))

    def _wants(self, pod: Obj) -> bool:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        name = spec.get("schedulerName") or "default-scheduler"
        return (
            name == self.config.scheduler_name
            and not spec.get("resourceClaims")  # DRA pods: the DRA path (tests.sim.dra_scheduler) places them
            and not meta.get("deletionTimestamp")
            and not is_terminal(pod)
        )

    # --- scheduling cycle ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            key = await self.queue.pop()
            pod = self.pods.get(key)
            if pod is None or (pod.get("spec") or {}).get("nodeName") or key in self.assumed:
                self.queue.delete(key)
                continue
            await self._schedule_one(key, pod)

    async def _schedule_one(self, key: str, pod: Obj) -> None:
        try:
            host = await self._find_host(pod)
        except _UnschedulableError as why:
            await self._fail(key, pod, Outcome("unschedulable", str(why)), unschedulable=True)
            return
        except ExtenderCallError as err:
            await self._fail(key, pod, Outcome("error", str(err)), unschedulable=False)
            return
        self.assumed[key] = host
        self.outcomes[key] = Outcome("assumed", node=host)
        task = asyncio.create_task(self._bind(key, pod, host))
        self.binds_in_flight.add(task)
        task.add_done_callback(self.binds_in_flight.discard)

    def _assigned(self, node: str) -> list[Obj]:
        found = [
            p
            for p in self.pods.values()
            if (p.get("spec") or {}).get("nodeName") == node and not is_terminal(p)
        ]
        found += [self.pods[k] for k, n in self.assumed.items() if n == node and k in self.pods]
        return found

    async def _find_host(self, pod: Obj) -> str:
        nodes = [self.nodes[n] for n in sorted(self.nodes)]
        failures: dict[str, str] = {}
        feasible = []
        for node in nodes:
            name = node["metadata"]["name"]
            reason = fit_node(pod, node, self._assigned(name), self.config.ignored_resources)
            if reason is None:
                feasible.append(node)
            else:
                failures[name] = reason
        feasible = await self._run_extender_filters(pod, feasible, failures)
        if not feasible:
            raise _UnschedulableError(summarise_failures(len(nodes), failures))
        if len(feasible) == 1:
            return str(feasible[0]["metadata"]["name"])
        return await self._pick_host(pod, feasible)

    async def _run_extender_filters(
        self, pod: Obj, feasible: list[Obj], failures: dict[str, str]
    ) -> list[Obj]:
        for client in self.extenders:
            if not feasible:
                break
            if not client.config.filter_verb or not client.config.is_interested(pod):
                continue
            try:
                result = await client.filter(pod, feasible)
            except ExtenderCallError:
                if client.config.ignorable:
                    continue
                raise
            if result.error:
                if client.config.ignorable:
                    continue
                raise ExtenderCallError(result.error)
            feasible = _survivors(feasible, result, client.config.node_cache_capable)
            failures.update(result.failed)
            failures.update(result.failed_unresolvable)
        return feasible

    async def _pick_host(self, pod: Obj, feasible: list[Obj]) -> str:
        scores = {str(n["metadata"]["name"]): 0 for n in feasible}
        for client in self.extenders:
            if not client.config.prioritize_verb or not client.config.is_interested(pod):
                continue
            try:
                priorities = await client.prioritize(pod, feasible)
            except ExtenderCallError as err:
                log.info("scheduler: prioritize error ignored, as upstream: %s", err)
                continue
            for item in priorities:
                if item.host in scores:
                    scores[item.host] += item.score * client.config.weight * 10
        best = max(scores.values())
        return self._rng.choice(sorted(h for h, s in scores.items() if s == best))

    # --- binding cycle ---------------------------------------------------------------------------

    async def _bind(self, key: str, pod: Obj, host: str) -> None:
        meta = pod["metadata"]
        binder = next((c for c in self.extenders if c.config.bind_verb and c.config.is_interested(pod)), None)
        try:
            if binder is not None:
                error = await binder.bind(name=meta["name"], namespace=meta.get("namespace", "default"),
                                          uid=str(meta.get("uid", "")), node=host)  # fmt: skip
            else:
                error = await self._default_bind(pod, host)
        except ExtenderCallError as err:
            error = "" if await self._is_bound(pod) else str(err)
        if not error:
            self.queue.delete(key)
            self.outcomes[key] = Outcome("bound", node=host)
            return
        self.assumed.pop(key, None)
        await self._fail(key, pod, Outcome("error", f"Binding rejected: {error}", host), unschedulable=False)

    async def _default_bind(self, pod: Obj, host: str) -> str:
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": host}}  # fmt: skip
        try:
            await self.api.create_at(
                pod_path(meta.get("namespace", "default"), meta["name"]) + "/binding", body
            )
        except ApiError as err:
            return str(err)
        return ""

    async def _is_bound(self, pod: Obj) -> bool:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            fresh = await self.api.get(pod_path(meta.get("namespace", "default"), meta["name"]))
            return bool((fresh.get("spec") or {}).get("nodeName"))
        return False

    async def _fail(self, key: str, pod: Obj, outcome: Outcome, *, unschedulable: bool) -> None:
        previous = self.outcomes.get(key)
        self.outcomes[key] = outcome
        if unschedulable:
            self.queue.requeue_unschedulable(key)
        else:
            self.queue.requeue_error(key)
        if previous is not None and previous.message == outcome.message:
            return
        reason = "Unschedulable" if unschedulable else "SchedulerError"
        condition = {"type": "PodScheduled", "status": "False", "reason": reason, "message": outcome.message}
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.api.patch(pod_path(meta.get("namespace", "default"), meta["name"]) + "/status",
                                 {"status": {"conditions": [condition]}})  # fmt: skip


def _survivors(feasible: list[Obj], result: Any, cache_capable: bool) -> list[Obj]:
    by_name = {str(n["metadata"]["name"]): n for n in feasible}
    if cache_capable and result.node_names is not None:
        unknown = [n for n in result.node_names if n not in by_name]
        if unknown:
            raise ExtenderCallError(
                f"extender claims a filtered node {unknown[0]} which is not found in the input"
            )
        return [by_name[n] for n in result.node_names]
    if result.nodes is not None:
        return [by_name[n["metadata"]["name"]] for n in result.nodes if n["metadata"]["name"] in by_name]
    return []
