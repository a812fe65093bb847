"""The SIMULATED default scheduler's DRA path and the resourceclaim controller, for pods that use
ResourceClaims (``spec.resourceClaims``) and the default scheduler.

What it does as upstream, in one loop (every ``period_s``, over the API server's current objects):

- **resourceclaim controller** (``pkg/controller/resourceclaim``): for a pod entry naming a
  ResourceClaimTemplate, creates the claim (``generateName: <pod>-<entry>-``, owned by the pod, annotation
  ``resource.kubernetes.io/pod-claim-name``) and records it in the pod's ``status.resourceClaimStatuses``;
  deletes the generated claims of pods that are gone (as the garbage collector does through the owner);
- **scheduler** (``DynamicResources`` plugin): allocates every unallocated claim of the pod on the first DRA
  node (by name) where all of them fit, with :func:`tests.sim.dra_allocator.allocate` over the node's
  ResourceSlices and the DeviceClasses in the API server, writes each claim's ``status.allocation`` and adds
  the pod to ``status.reservedFor`` (a whole-object update carrying the claim's resourceVersion: a 409 means
  another writer won and the pod is tried again), then binds the pod; a claim already allocated pins the pod
  to its node. A pod that fits nowhere gets ``PodScheduled=False``, reason ``Unschedulable``.

Not simulated: claims shared by pods on different nodes, deallocation of a claim whose pods are gone while
the claim stays, preemption, ``allocationMode: All``, extended-resource mapping (``DRAExtendedResource``).
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Final

from tests.sim.dra_allocator import Unallocatable, allocate
from tests.sim.fit import is_terminal
from tests.sim.kubeapi import ApiError, KubeApi, Obj, pod_path

__all__ = ["SimDraScheduler", "device_classes"]

log = logging.getLogger(__name__)
DRA_PATH: Final = "/apis/resource.k8s.io/v1"
CLAIM_NAME_ANNOTATION: Final = "resource.kubernetes.io/pod-claim-name"


def device_classes(domain: str) -> list[Obj]:
    """The chart's DeviceClasses (``dra.enabled``, ``dra.migDeviceClass``); a contract test compares them."""
    driver = f"kube-vgpu.{domain}"

    def selecting(kind: str) -> Obj:
        expression = f'device.driver == "{driver}" && device.attributes["{driver}"].type == "{kind}"'
        return {"selectors": [{"cel": {"expression": expression}}]}

    return [
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}
        for name, spec in (
            (f"vgpu.{domain}", selecting("gpu")),
            (f"gpu.{domain}", selecting("gpu")),
            (f"mig.{domain}", selecting("mig")),
        )
    ]


def _wants(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (
        bool(spec.get("resourceClaims"))
        and not spec.get("nodeName")
        and spec.get("schedulerName") in (None, "default-scheduler")
        and not is_terminal(pod)
    )


class SimDraScheduler:
    def __init__(self, api: KubeApi, nodes: Sequence[str], *, period_s: float = 0.1) -> None:
        self.api, self.nodes, self.period_s = api, sorted(nodes), period_s
        self.unschedulable: dict[str, str] = {}  # pod key -> message last written

    async def run(self) -> None:
        while True:
            with contextlib.suppress(ApiError, OSError, ValueError):
                await self.step()
            await asyncio.sleep(self.period_s)

    async def step(self) -> None:
        pods = await self.api.list("pods")
        for pod in pods:
            if _wants(pod):
                await self._schedule(pod)
        await self._collect_garbage({p["metadata"]["uid"] for p in pods})

    # --- resourceclaim controller ------------------------------------------------------------------

    async def _claim_names(self, pod: Obj) -> list[str]:
        meta, spec = pod["metadata"], pod["spec"]
        ns = meta.get("namespace", "default")
        statuses = {
            s["name"]: s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        names, changed = [], False
        for entry in spec["resourceClaims"]:
            name = entry.get("resourceClaimName") or statuses.get(entry["name"])
            if name is None:
                template = await self.api.get(
                    f"{DRA_PATH}/namespaces/{ns}/resourceclaimtemplates/{entry['resourceClaimTemplateName']}"
                )
                owner = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
                body = {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceClaim",
                    "metadata": {"generateName": f"{meta['name']}-{entry['name']}-", "namespace": ns,
                                 "annotations": {CLAIM_NAME_ANNOTATION: entry["name"]}, "ownerReferences": [owner]},
                    "spec": template["spec"]["spec"],
                }  # fmt: skip
                name = (await self.api.create("resourceclaims", body))["metadata"]["name"]
                statuses[entry["name"]] = name
                changed = True
            names.append(name)
        if changed:
            recorded = [{"name": k, "resourceClaimName": v} for k, v in statuses.items()]
            await self.api.patch(
                pod_path(ns, meta["name"]) + "/status", {"status": {"resourceClaimStatuses": recorded}}
            )
        return names

    async def _collect_garbage(self, live_pods: set[str]) -> None:
        for claim in await self.api.list("resourceclaims"):
            owners = [o for o in claim["metadata"].get("ownerReferences") or [] if o.get("kind") == "Pod"]
            if owners and not any(o["uid"] in live_pods for o in owners):
                meta = claim["metadata"]
                with contextlib.suppress(ApiError):
                    await self.api.delete(
                        f"{DRA_PATH}/namespaces/{meta['namespace']}/resourceclaims/{meta['name']}"
                    )

    # --- scheduler ---------------------------------------------------------------------------------

    async def _schedule(self, pod: Obj) -> None:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        names = await self._claim_names(pod)
        claims = [await self.api.get(f"{DRA_PATH}/namespaces/{ns}/resourceclaims/{n}") for n in names]
        slices = await self.api.list("resourceslices")
        classes = {c["metadata"]["name"]: c for c in await self.api.list("deviceclasses")}
        allocated = [
            c for c in await self.api.list("resourceclaims") if (c.get("status") or {}).get("allocation")
        ]
        for node in self._candidates(claims):
            plan = self._plan(claims, node, slices, classes, allocated)
            if plan is not None:
                await self._commit(pod, plan, node)
                return
        await self._unschedulable(
            pod, f"0/{len(self.nodes)} nodes are available: cannot allocate all claims."
        )

    def _candidates(self, claims: Sequence[Obj]) -> list[str]:
        pinned = {
            term["matchFields"][0]["values"][0]
            for c in claims
            for term in (((c.get("status") or {}).get("allocation") or {}).get("nodeSelector") or {}).get("nodeSelectorTerms", [])
        }  # fmt: skip
        return sorted(pinned) if pinned else self.nodes

    def _plan(self, claims: Sequence[Obj], node: str, slices: Sequence[Obj], classes: Mapping[str, Obj],
              allocated: Sequence[Obj]) -> list[Obj] | None:  # fmt: skip
        """Every claim with its allocation on ``node`` (claims allocated before keep theirs), or None."""
        done = list(allocated)
        out = []
        for claim in claims:
            status = claim.get("status") or {}
            if status.get("allocation"):
                out.append(claim)
                continue
            answer = allocate(claim, node=node, slices=slices, classes=classes, claims=done)
            if isinstance(answer, Unallocatable):
                return None
            claim = claim | {"status": status | {"allocation": answer}}
            done.append(claim)
            out.append(claim)
        return out

    async def _commit(self, pod: Obj, claims: Sequence[Obj], node: str) -> None:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        me = {"resource": "pods", "name": meta["name"], "uid": meta["uid"]}
        for claim in claims:
            status = dict(claim.get("status") or {})
            reserved = [r for r in status.get("reservedFor") or [] if r.get("uid") != meta["uid"]]
            body = claim | {"status": status | {"reservedFor": [*reserved, me]}}
            try:
                await self.api.put(
                    f"{DRA_PATH}/namespaces/{ns}/resourceclaims/{claim['metadata']['name']}", body
                )
            except ApiError as err:
                log.info(
                    "dra scheduler: claim %s changed meanwhile (%s); %s tried again",
                    claim["metadata"]["name"],
                    err,
                    meta["name"],
                )
                return
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"], "uid": meta["uid"]},
                   "target": {"kind": "Node", "name": node}}  # fmt: skip
        with contextlib.suppress(ApiError):
            await self.api.create_at(pod_path(ns, meta["name"]) + "/binding", binding)
        self.unschedulable.pop(f"{ns}/{meta['name']}", None)

    async def _unschedulable(self, pod: Obj, message: str) -> None:
        meta = pod["metadata"]
        key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        if self.unschedulable.get(key) == message:
            return
        self.unschedulable[key] = message
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        with contextlib.suppress(ApiError):
            await self.api.patch(pod_path(meta.get("namespace", "default"), meta["name"]) + "/status",
                                 {"status": {"conditions": [condition]}})  # fmt: skip
