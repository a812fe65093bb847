# mypy: disable-error-code="no-untyped-call"
"""FakeDraKubelet: a test double of the kubelet's DRA side (plugin watcher + DRA manager), over real gRPC.

It does what kubelet v1.37 does (``pkg/kubelet/pluginmanager``, ``pkg/kubelet/cm/dra``), as a fake:

- **Plugin watcher.** Looks at ``plugins_registry`` every ``poll_s`` (the real one uses inotify); a new socket
  (name not starting with ``.``; a socket re-created under the same name is new) is dialled, ``GetInfo`` is
  called with the real 1 s timeout, the type must be ``DRAPlugin``, the kubelet picks the *first* of the
  plugin's ``supported_versions`` it knows (``v1.DRAPlugin``, ``v1beta1.DRAPlugin``; ``versions=`` narrows
  them, as an older kubelet), an empty endpoint means the registration socket itself, a second registration
  of the same driver and endpoint is refused; ``NotifyRegistrationStatus`` tells the plugin the outcome. A
  removed socket deregisters the driver.
- **Prepare.** :meth:`prepare_pod` reads each of the pod's claims from the API server through the real
  ``kubernetes`` client (``ResourceV1Api``), refuses a claim not reserved for the pod or not allocated, and
  fails when a driver of its results is not registered; then it records the pod in its claim cache (a
  checkpoint, before calling the driver), skips claims already prepared, and calls
  ``NodePrepareResources`` once per driver with every unprepared claim, with a per-call deadline
  (``call_timeout_s``, 45 s as the real client). Any error (an RPC error, a deadline, a claim's error, a
  result for an unknown claim, a missing claim) fails the pod; the claim stays in the cache unprepared.
- **Unprepare.** :meth:`unprepare_pod` drops the pod from its claims; a claim still used by another pod is
  left alone; for the rest ``NodeUnprepareResources`` is called and the claim forgotten only on success.
- **Hostile, as the real one:** it retries prepare after a deadline (the driver may still be working on the
  first call); it unprepares claims whose prepare never finished, or never reached the driver (the pod was
  recorded before the call failed); :meth:`restart` forgets registrations and re-reads the directory
  (registering everything again) and restores its claim cache with every claim *unprepared*
  (``newClaimInfoFromState``), so the next :meth:`prepare_pod` for one of its claims (the kubelet prepares
  when it creates a pod sandbox: a sandbox re-created, or another pod sharing the claim) calls the driver
  for claims it already prepared; it keeps calling a driver that restarted once the new socket registered.

Not reproduced: the 30 s grace before a vanished driver's ResourceSlices are wiped, health streams
(``DRAResourceHealth``), the periodic reconcile of inactive pods, ``DRAExtendedResource``, pod groups.
"""

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from kubernetes import client

from plugin.api.dra.v1 import api_pb2 as v1
from plugin.api.dra.v1 import api_pb2_grpc as v1_grpc
from plugin.api.dra.v1beta1 import api_pb2 as v1beta1
from plugin.api.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from plugin.api.pluginregistration.v1 import api_pb2 as reg
from plugin.api.pluginregistration.v1 import api_pb2_grpc as reg_grpc

__all__ = ["ClaimInfo", "DraEndpoint", "FakeDraKubelet", "PrepareError", "PreparedDevice"]

KUBELET_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
_MESSAGES = {"v1.DRAPlugin": (v1, v1_grpc), "v1beta1.DRAPlugin": (v1beta1, v1beta1_grpc)}


class PrepareError(Exception):
    """What the kubelet would report as the pod's failure to start (``FailedPrepareDynamicResources``)."""


@dataclass(frozen=True)
class PreparedDevice:
    requests: tuple[str, ...]
    pool: str
    device: str
    cdi_ids: tuple[str, ...]
    share_id: str | None = None


@dataclass
class DraEndpoint:
    driver: str
    endpoint: str
    version: str
    channel: grpc.aio.Channel
    stub: Any
    socket: str
    generation: int  # the kubelet's registration count when this one registered


@dataclass
class ClaimInfo:
    """The kubelet's claim cache entry (``ClaimInfo``), kept in its checkpoint."""

    namespace: str
    name: str
    uid: str
    drivers: frozenset[str]
    pods: set[str] = field(default_factory=set)
    prepared: bool = False
    devices: dict[str, list[PreparedDevice]] = field(default_factory=dict)


def _claim_names(pod: Mapping[str, Any]) -> list[str]:
    """``resourceClaimName``, or the generated name in ``status.resourceClaimStatuses`` for a template."""
    generated = {
        s["name"]: s.get("resourceClaimName") for s in pod.get("status", {}).get("resourceClaimStatuses", [])
    }
    names = []
    for c in pod["spec"].get("resourceClaims", []):
        name = c.get("resourceClaimName") or generated.get(c["name"])
        if name:
            names.append(name)
    return names


class FakeDraKubelet:
    def __init__(
        self,
        registry_dir: Path,
        api: client.ApiClient,
        *,
        versions: Sequence[str] = KUBELET_VERSIONS,
        call_timeout_s: float = 45.0,
        poll_s: float = 0.02,
    ) -> None:
        self.registry_dir = registry_dir
        self.resource: Any = client.ResourceV1Api(api)  # raw dict bodies, _preload_content=False replies
        self.versions = tuple(versions)
        self.call_timeout_s = call_timeout_s
        self.poll_s = poll_s
        self.plugins: dict[str, DraEndpoint] = {}
        self.refused: dict[str, str] = {}  # socket path -> why registration failed
        self.claims: dict[tuple[str, str], ClaimInfo] = {}
        self.calls: dict[str, int] = {"prepare": 0, "unprepare": 0, "get_info": 0}
        self._registered = asyncio.Condition()
        self._watcher: asyncio.Task[None] | None = None
        self._seen: dict[str, tuple[int, int]] = {}  # socket -> (inode, ctime): a re-created socket is new
        self.generation = 0

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for ep in list(self.plugins.values()):
            await ep.channel.close(None)
        self.plugins.clear()
        self._seen.clear()

    async def restart(self) -> None:
        """A kubelet restart: registrations forgotten and redone; the claim cache from the checkpoint, every
        claim unprepared (``newClaimInfoFromState``)."""
        await self.stop()
        for info in self.claims.values():
            info.prepared = False
        await self.start()

    async def wait_registered(self, driver: str, timeout: float = 5.0, *, after: int = 0) -> DraEndpoint:
        """The driver's endpoint once registered (by a registration later than generation ``after``)."""

        async def wait() -> DraEndpoint:
            async with self._registered:
                await self._registered.wait_for(
                    lambda: driver in self.plugins and self.plugins[driver].generation > after
                )
                return self.plugins[driver]

        return await asyncio.wait_for(wait(), timeout)

    # --- plugin watcher -------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            present = {}
            for entry in os.scandir(self.registry_dir):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    if not entry.name.startswith(".") and stat.S_ISSOCK(st.st_mode):
                        present[entry.path] = (st.st_ino, st.st_ctime_ns)
            for path in [p for p, ino in self._seen.items() if present.get(p) != ino]:
                await self._deregister(path)
            for path, identity in present.items():
                if path not in self._seen:
                    self._seen[path] = identity
                    await self._register(path)
            await asyncio.sleep(self.poll_s)

    async def _deregister(self, path: str) -> None:
        del self._seen[path]
        for driver, ep in list(self.plugins.items()):
            if ep.socket == path:
                await ep.channel.close(None)
                del self.plugins[driver]

    async def _register(self, path: str) -> None:
        async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
            stub = reg_grpc.RegistrationStub(channel)
            try:
                self.calls["get_info"] += 1
                info = await stub.GetInfo(reg.InfoRequest(), timeout=1.0)
                error = self._validate(info)
                if not error:
                    await self._add(info, path)
                if error:
                    self.refused[path] = error
                await stub.NotifyRegistrationStatus(
                    reg.RegistrationStatus(plugin_registered=not error, error=error), timeout=5.0
                )
            except grpc.aio.AioRpcError as err:
                self.refused[path] = f"RegisterPlugin error -- {err.code().name}: {err.details()}"
        async with self._registered:
            self._registered.notify_all()

    def _validate(self, info: reg.PluginInfo) -> str:
        if info.type != "DRAPlugin":
            return f"RegisterPlugin error -- no handler registered for plugin type: {info.type}"
        if not info.supported_versions:
            return "empty list of supported gRPC services (aka supported versions)"
        if not any(v in self.versions for v in info.supported_versions):
            return f"none of services supported by the plugin ({list(info.supported_versions)}) are supported"
        old = self.plugins.get(info.name)
        if old is not None and old.endpoint == (info.endpoint or ""):
            return f"endpoint {info.endpoint} already registered for DRA driver plugin {info.name}"
        return ""

    async def _add(self, info: reg.PluginInfo, path: str) -> None:
        version = next(v for v in info.supported_versions if v in self.versions)
        endpoint = info.endpoint or path
        channel = grpc.aio.insecure_channel(f"unix://{endpoint}")
        old = self.plugins.get(info.name)
        if old is not None:
            await old.channel.close(None)
        stub = _MESSAGES[version][1].DRAPluginStub(channel)
        self.generation += 1
        self.plugins[info.name] = DraEndpoint(
            info.name, endpoint, version, channel, stub, path, self.generation
        )

    # --- prepare / unprepare ----------------------------------------------------------------------

    def _read_claim(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            reply = self.resource.read_namespaced_resource_claim(name, namespace, _preload_content=False)
        except client.ApiException as err:
            raise PrepareError(f"fetch ResourceClaim {name}: {err.status} {err.reason}") from err
        body: dict[str, Any] = json.loads(reply.data)
        return body

    async def prepare_pod(self, pod: Mapping[str, Any]) -> dict[str, list[PreparedDevice]]:
        """Prepare the pod's claims; returns claim name -> devices; raises :class:`PrepareError`."""
        meta = pod["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        infos = []
        for name in _claim_names(pod):
            body = await asyncio.to_thread(self._read_claim, namespace, name)
            reserved = {r.get("uid") for r in body.get("status", {}).get("reservedFor", [])}
            if uid not in reserved:
                raise PrepareError(f"pod {meta['name']} ({uid}) is not allowed to use ResourceClaim {name}")
            allocation = body["status"].get("allocation")
            if allocation is None:
                raise PrepareError(f"ResourceClaim {name}: claim not allocated")
            drivers = frozenset(r["driver"] for r in allocation["devices"]["results"])
            for driver in drivers:
                if driver not in self.plugins:
                    raise PrepareError(f"DRA driver {driver} is not registered")
            infos.append(ClaimInfo(namespace, name, body["metadata"]["uid"], drivers))
        batches: dict[str, list[ClaimInfo]] = {}
        for fresh in infos:
            info = self.claims.setdefault((namespace, fresh.name), fresh)
            if info.uid != fresh.uid:
                raise PrepareError(
                    f"old ResourceClaim with same name {fresh.name} and different UID still exists"
                )
            info.pods.add(uid)  # checkpointed before any driver call: unprepare will call for it
            if not info.prepared:
                for driver in info.drivers:
                    batches.setdefault(driver, []).append(info)
        for driver, claims in batches.items():
            reply = await self.call_prepare(driver, claims)
            self._take_prepared(driver, claims, reply)
        for infos_batch in batches.values():
            for info in infos_batch:
                info.prepared = True
        return {
            i.name: [d for ds in self.claims[(namespace, i.name)].devices.values() for d in ds] for i in infos
        }

    async def call_prepare(self, driver: str, claims: Iterable[ClaimInfo]) -> Any:
        """One ``NodePrepareResources`` call, as the kubelet makes it (raises :class:`PrepareError`)."""
        ep = self.plugins[driver]
        messages = _MESSAGES[ep.version][0]
        request = messages.NodePrepareResourcesRequest(
            claims=[messages.Claim(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]
        )
        self.calls["prepare"] += 1
        try:
            return await ep.stub.NodePrepareResources(request, timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as err:
            raise PrepareError(f"NodePrepareResources: {err.code().name}: {err.details()}") from err

    def _take_prepared(self, driver: str, claims: Sequence[ClaimInfo], reply: Any) -> None:
        by_uid = {c.uid: c for c in claims}
        for uid, result in reply.claims.items():
            info = by_uid.get(uid)
            if info is None:
                raise PrepareError(f"NodePrepareResources returned result for unknown claim UID {uid}")
            if result.error:
                raise PrepareError(
                    f"NodePrepareResources failed for ResourceClaim {info.name}: {result.error}"
                )
            info.devices[driver] = [
                PreparedDevice(
                    tuple(d.request_names),
                    d.pool_name,
                    d.device_name,
                    tuple(d.cdi_device_ids),
                    d.share_id if d.HasField("share_id") else None,
                )
                if "share_id" in d.DESCRIPTOR.fields_by_name
                else PreparedDevice(
                    tuple(d.request_names), d.pool_name, d.device_name, tuple(d.cdi_device_ids)
                )
                for d in result.devices
            ]
        missing = len(claims) - len(reply.claims)
        if missing:
            raise PrepareError(f"NodePrepareResources skipped {missing} ResourceClaims")

    async def unprepare_pod(self, pod: Mapping[str, Any]) -> None:
        """The pod is gone: unprepare its claims no other pod uses (raises :class:`PrepareError`)."""
        meta = pod["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        batches: dict[str, list[ClaimInfo]] = {}
        for info in [i for i in self.claims.values() if i.namespace == namespace and uid in i.pods]:
            if len(info.pods) > 1:
                info.pods.discard(uid)
                continue
            for driver in info.drivers:
                batches.setdefault(driver, []).append(info)
        for driver, claims in batches.items():
            reply = await self.call_unprepare(driver, claims)
            for claim_uid, result in reply.claims.items():
                if result.error:
                    raise PrepareError(f"NodeUnprepareResources failed for {claim_uid}: {result.error}")
            if len(reply.claims) != len(claims):
                raise PrepareError("NodeUnprepareResources skipped ResourceClaims")
        for claims in batches.values():
            for info in claims:
                self.claims.pop((info.namespace, info.name), None)

    async def call_unprepare(self, driver: str, claims: Iterable[ClaimInfo]) -> Any:
        ep = self.plugins[driver]
        messages = _MESSAGES[ep.version][0]
        request = messages.NodeUnprepareResourcesRequest(
            claims=[messages.Claim(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]
        )
        self.calls["unprepare"] += 1
        try:
            return await ep.stub.NodeUnprepareResources(request, timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as err:
            raise PrepareError(f"NodeUnprepareResources: {err.code().name}: {err.details()}") from err
