"""The plugin's only door to NVML: discovery, health, per-process readings and MIG, over pynvml.

Everything here translates: pynvml handles, structs and return codes in; :mod:`plugin.core.gpu` values,
small readings and :class:`NvmlError` out. Decisions (how NVLinks add up per pair) live in
:mod:`plugin.core.topology`. GPUs are named by UUID everywhere, never by index.

Every method blocks (NVML is a C library): call them from a worker thread in async code. The one exception is
:meth:`Nvml.xid_events`, whose stream blocks in NVML's event wait in a thread of its own.

The pynvml module is a constructor argument (default: ``pynvml``) so that one process can drive several fake
nodes (``tests/fakes/nvml/harness.py``); only this module imports pynvml.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import pynvml

from plugin.core.gpu import Gpu, MigInstance, NodeGpus, XidEvent
from plugin.core.topology import NvLinkEnd, build_links, count_nvlinks, pair_key
from vcuda.model import GpuLink, GpuUuid, PcieLevel

__all__ = ["GpuUsage", "MigProfile", "Nvml", "NvmlError", "ProcessUsage", "XidEventStream"]

log = logging.getLogger(__name__)

MIB = 1 << 20
_NO_INSTANCE = 0xFFFFFFFF
# NVML_COMPUTE_INSTANCE_PROFILE_* by compute slices.
_CI_PROFILE_BY_SLICES = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


class NvmlError(Exception):
    """An NVML call failed. ``code`` is NVML's return code (``None`` for our own checks)."""

    def __init__(self, message: str, *, code: int | None = None, uuid: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.uuid = uuid


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """A physical GPU now. Utilisation is NVML's percentage over its sample window (None: not reported)."""

    uuid: GpuUuid
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_pct: int | None
    memory_utilization_pct: int | None


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """One compute process on a GPU, by host PID. ``None``: NVML has no figure (no sample, not available)."""

    uuid: GpuUuid
    host_pid: int
    used_bytes: int | None
    sm_pct: int | None = None
    memory_pct: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


@dataclass(frozen=True, slots=True)
class MigProfile:
    """A GPU instance profile the GPU offers, e.g. ``3g.20gb`` (``profile_id`` is what creation takes)."""

    name: str
    profile_id: int
    slices: int
    instances: int
    memory_mib: int
    multiprocessors: int


def _bind_library(nv: Any, path: Path) -> None:
    """Load NVML from an absolute path before pynvml's ``CDLL("libnvidia-ml.so.1")`` runs.

    Two holds, so no pynvml internals are needed for correctness: the dynamic loader answers a later
    ``dlopen("libnvidia-ml.so.1")`` with an already-loaded object of that SONAME (glibc ``_dl_map_object``),
    and pynvml skips its own search when ``nvmlLib`` is set (the documented way to choose the library).
    """
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise NvmlError(f"NVML library {path} cannot be loaded: {err}") from err
    lock = getattr(nv, "libLoadLock", None)
    with lock if lock is not None else nullcontext():
        if getattr(nv, "nvmlLib", None) is None:
            nv.nvmlLib = lib


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _instance_id(value: Any) -> int | None:
    return None if value is None or int(value) == _NO_INSTANCE else int(value)


def _mig_name(gpu_instance_profile: str, gpu_slices: int, compute_slices: int) -> str:
    """``MIG 3g.20gb`` -> ``3g.20gb``; a compute instance smaller than its GPU instance -> ``1c.3g.20gb``."""
    name = gpu_instance_profile.removeprefix("MIG ").strip()
    return name if compute_slices >= gpu_slices else f"{compute_slices}c.{name}"


def _cuda_version(value: int) -> str:
    """NVML's 13000 -> ``13.0``."""
    return f"{value // 1000}.{value % 1000 // 10}"


class Nvml:
    """:class:`plugin.core.gpu.GpuSource` over pynvml, plus the readings and MIG calls the plugin needs.

    Open it (``with Nvml() as nvml:`` or :meth:`open`/:meth:`close`); NVML counts opens, so several users may
    share the library. ``event_poll_ms`` bounds each blocking wait of the XID stream's thread (an event ends
    the wait at once): an idle node wakes once per period, and ``aclose`` takes at most one.
    """

    def __init__(
        self,
        *,
        library: ModuleType | None = None,
        event_poll_ms: int = 1000,
        library_path: Path | None = None,
    ) -> None:
        self._nv: Any = library if library is not None else pynvml
        self._poll_ms = event_poll_ms
        self._library_path = library_path
        self._streams: weakref.WeakSet[XidEventStream] = weakref.WeakSet()

    # ---- session ----

    def open(self) -> None:
        """``nvmlInit``; ``library_path`` (from :mod:`plugin.nvml_loader`) is loaded first when given."""
        if self._library_path is not None:
            _bind_library(self._nv, self._library_path)
        with self._errors("init"):
            self._nv.nvmlInit()

    def close(self) -> None:
        """Ends this session's XID streams, waits for their threads to free their event sets, then
        ``nvmlShutdown``: a set freed after the shutdown is a stale handle, and the driver hands a freed
        address to the next set created (another session's), which the late free would then destroy."""
        for stream in list(self._streams):
            stream.close()
            stream.join(timeout_s=2 * self._poll_ms / 1000 + 1)
        with self._errors("shutdown"):
            self._nv.nvmlShutdown()

    def __enter__(self) -> Nvml:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _errors(self, what: str, uuid: str | None = None) -> Iterator[None]:
        try:
            yield
        except self._nv.NVMLError as err:
            where = f" on GPU {uuid}" if uuid else ""
            raise NvmlError(f"NVML {what}{where} failed: {err}", code=int(err.value), uuid=uuid) from err

    def _code(self, err: Exception) -> int:
        return int(getattr(err, "value", -1))

    def _handle(self, uuid: str) -> Any:
        return self._nv.nvmlDeviceGetHandleByUUID(uuid)

    # ---- discovery ----

    def discover(self) -> NodeGpus:
        """Every reachable GPU (a lost one is left out, with a warning), their pairwise links and versions."""
        with self._errors("discover"):
            handles = self._physical_handles()
            gpus = tuple(self._describe(uuid, h) for uuid, h in handles.items())
            links = self._links(handles, {g.uuid: g.pci_bus_id for g in gpus})
            driver = _text(self._nv.nvmlSystemGetDriverVersion())
            cuda = _cuda_version(int(self._nv.nvmlSystemGetCudaDriverVersion()))
        return NodeGpus(gpus=gpus, links=links, driver_version=driver, cuda_version=cuda)

    def _physical_handles(self) -> dict[GpuUuid, Any]:
        handles: dict[GpuUuid, Any] = {}
        for index in range(int(self._nv.nvmlDeviceGetCount())):
            try:
                handle = self._nv.nvmlDeviceGetHandleByIndex(index)
                handles[GpuUuid(_text(self._nv.nvmlDeviceGetUUID(handle)))] = handle
            except self._nv.NVMLError as err:
                if self._code(err) != self._nv.NVML_ERROR_GPU_IS_LOST:
                    raise
                log.warning(
                    "GPU at index %d is lost; left out of discovery", index, extra={"gpu_index": index}
                )
        return handles

    def _describe(self, uuid: GpuUuid, handle: Any) -> Gpu:
        nv = self._nv
        with self._errors("describe", uuid):
            major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
            current, pending = self._mig_mode(handle)
            return Gpu(
                uuid=uuid,
                index=int(nv.nvmlDeviceGetIndex(handle)),
                minor=int(nv.nvmlDeviceGetMinorNumber(handle)),
                model=_text(nv.nvmlDeviceGetName(handle)),
                memory_mib=int(nv.nvmlDeviceGetMemoryInfo(handle).total) // MIB,
                pci_bus_id=_text(nv.nvmlDeviceGetPciInfo(handle).busId),
                numa_node=self._numa_node(handle),
                compute_capability=(int(major), int(minor)),
                mig_enabled=current,
                mig_pending=pending,
                mig_instances=self._mig_devices(uuid, handle) if current else (),
            )

    def _optional(self, call: Any, *args: Any) -> Any:
        """``call(*args)``, or None where the GPU or driver does not offer it."""
        nv = self._nv
        absent = (
            nv.NVML_ERROR_NOT_SUPPORTED,
            nv.NVML_ERROR_FUNCTION_NOT_FOUND,
            nv.NVML_ERROR_INVALID_ARGUMENT,
        )
        try:
            return call(*args)
        except nv.NVMLError as err:
            if self._code(err) in absent:
                return None
            raise

    def _numa_node(self, handle: Any) -> int:
        node = self._optional(self._nv.nvmlDeviceGetNumaNodeId, handle)
        return -1 if node is None else int(node)

    def _mig_mode(self, handle: Any) -> tuple[bool, bool]:
        mode = self._optional(self._nv.nvmlDeviceGetMigMode, handle)
        enabled = self._nv.NVML_DEVICE_MIG_ENABLE
        return (False, False) if mode is None else (mode[0] == enabled, mode[1] == enabled)

    # ---- topology ----

    def _links(self, handles: dict[GpuUuid, Any], bus_ids: dict[GpuUuid, str]) -> tuple[GpuLink, ...]:
        ends = {uuid: self._nvlink_ends(uuid, h) for uuid, h in handles.items()}
        pcie: dict[tuple[GpuUuid, GpuUuid], PcieLevel] = {}
        uuids = sorted(handles)
        for i, a in enumerate(uuids):
            for b in uuids[i + 1 :]:
                with self._errors("topology", a):
                    level = self._nv.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b])
                pcie[pair_key(a, b)] = PcieLevel(int(level))
        return build_links(uuids, count_nvlinks(ends, bus_ids), pcie)

    def _nvlink_ends(self, uuid: GpuUuid, handle: Any) -> list[NvLinkEnd]:
        nv = self._nv
        ends: list[NvLinkEnd] = []
        with self._errors("NVLink", uuid):
            for link in range(nv.NVML_NVLINK_MAX_LINKS):
                if not self._optional(nv.nvmlDeviceGetNvLinkState, handle, link):
                    continue  # absent (NOT_SUPPORTED / INVALID_ARGUMENT) or inactive
                remote = nv.nvmlDeviceGetNvLinkRemotePciInfo(handle, link)
                kind = self._optional(nv.nvmlDeviceGetNvLinkRemoteDeviceType, handle, link)
                ends.append(
                    NvLinkEnd(_text(remote.busId), to_switch=kind == nv.NVML_NVLINK_DEVICE_TYPE_SWITCH)
                )
        return ends

    # ---- health ----

    def is_reachable(self, uuid: GpuUuid) -> bool:
        """False when NVML can no longer talk to the GPU (lost, fallen off the bus, gone)."""
        try:
            self._nv.nvmlDeviceGetUUID(self._handle(uuid))
        except self._nv.NVMLError as err:
            if self._code(err) == self._nv.NVML_ERROR_UNINITIALIZED:
                raise NvmlError(
                    f"NVML is not initialised (asked about GPU {uuid})", code=self._code(err)
                ) from err
            log.debug("GPU %s unreachable: %s", uuid, err, extra={"gpu": uuid})
            return False
        return True

    def xid_events(self) -> XidEventStream:
        """XID events of every reachable GPU, registered now (events before this call are not seen).

        A GPU lost at this moment is not watched: open a new stream once it is reachable again.
        """
        with self._errors("register XID events"):
            stream = XidEventStream(self._nv, self._physical_handles(), self._poll_ms)
        self._streams.add(stream)
        return stream

    # ---- readings for the metrics exporter ----

    def gpu_usage(self, uuid: GpuUuid) -> GpuUsage:
        with self._errors("read usage", uuid):
            handle = self._handle(uuid)
            memory = self._nv.nvmlDeviceGetMemoryInfo(handle)
            rates = self._optional(self._nv.nvmlDeviceGetUtilizationRates, handle)
        return GpuUsage(
            uuid=uuid,
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
            utilization_pct=None if rates is None else int(rates.gpu),
            memory_utilization_pct=None if rates is None else int(rates.memory),
        )

    def process_usage(self, uuid: GpuUuid, *, since_us: int = 0) -> tuple[ProcessUsage, ...]:
        """Compute processes on the GPU (host PIDs), with SM use from samples newer than ``since_us``.

        A process with a utilisation sample but no memory record is included with ``used_bytes=None``.
        """
        with self._errors("read processes", uuid):
            handle = self._handle(uuid)
            processes = {int(p.pid): p for p in self._nv.nvmlDeviceGetComputeRunningProcesses(handle)}
            samples = self._utilization_samples(handle, since_us)
        out = []
        for pid in sorted(processes.keys() | samples.keys()):
            proc, sample = processes.get(pid), samples.get(pid)
            used = None if proc is None or proc.usedGpuMemory is None else int(proc.usedGpuMemory)
            out.append(
                ProcessUsage(
                    uuid=uuid,
                    host_pid=pid,
                    used_bytes=used,
                    sm_pct=None if sample is None else int(sample.smUtil),
                    memory_pct=None if sample is None else int(sample.memUtil),
                    gpu_instance_id=None if proc is None else _instance_id(proc.gpuInstanceId),
                    compute_instance_id=None if proc is None else _instance_id(proc.computeInstanceId),
                )
            )
        return tuple(out)

    def _utilization_samples(self, handle: Any, since_us: int) -> dict[int, Any]:
        try:
            samples = self._nv.nvmlDeviceGetProcessUtilization(handle, since_us)
        except self._nv.NVMLError as err:
            if self._code(err) in (self._nv.NVML_ERROR_NOT_FOUND, self._nv.NVML_ERROR_NOT_SUPPORTED):
                return {}  # no sample newer than since_us, or not offered (MIG)
            raise
        return {int(s.pid): s for s in samples}

    # ---- MIG ----

    def mig_profiles(self, uuid: GpuUuid) -> tuple[MigProfile, ...]:
        """GPU instance profiles valid for this GPU (empty when it is not MIG capable)."""
        with self._errors("list MIG profiles", uuid):
            return self._profiles(self._handle(uuid))

    def _profiles(self, handle: Any) -> tuple[MigProfile, ...]:
        out = []
        for index in range(self._nv.NVML_GPU_INSTANCE_PROFILE_COUNT):
            info = self._optional(self._nv.nvmlDeviceGetGpuInstanceProfileInfo, handle, index)
            if info is None:
                continue
            out.append(
                MigProfile(
                    name=_mig_name(_text(info.name), 1, 1),
                    profile_id=int(info.id),
                    slices=int(info.sliceCount),
                    instances=int(info.instanceCount),
                    memory_mib=int(info.memorySizeMB),
                    multiprocessors=int(info.multiprocessorCount),
                )
            )
        return tuple(out)

    def _profile_named(self, handle: Any, uuid: GpuUuid, name: str) -> MigProfile:
        profiles = self._profiles(handle)
        for profile in profiles:
            if profile.name == name:
                return profile
        valid = ", ".join(p.name for p in profiles) or "none: the GPU is not MIG capable"
        raise NvmlError(f"MIG profile {name!r} is not valid for GPU {uuid} (valid: {valid})", uuid=uuid)

    def mig_instances(self, uuid: GpuUuid) -> tuple[MigInstance, ...]:
        with self._errors("list MIG instances", uuid):
            return self._mig_devices(uuid, self._handle(uuid))

    def _mig_devices(self, uuid: GpuUuid, handle: Any) -> tuple[MigInstance, ...]:
        nv = self._nv
        profiles = {p.profile_id: p for p in self._profiles(handle)}
        out = []
        for index in range(int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
            except nv.NVMLError as err:
                if self._code(err) == nv.NVML_ERROR_NOT_FOUND:
                    continue
                raise
            out.append(self._mig_instance(uuid, handle, mig, profiles))
        return tuple(out)

    def _mig_instance(
        self, uuid: GpuUuid, handle: Any, mig: Any, profiles: dict[int, MigProfile]
    ) -> MigInstance:
        nv = self._nv
        gi_id = int(nv.nvmlDeviceGetGpuInstanceId(mig))
        attributes = nv.nvmlDeviceGetAttributes(mig)
        info = nv.nvmlGpuInstanceGetInfo(nv.nvmlDeviceGetGpuInstanceById(handle, gi_id))
        profile = profiles.get(int(info.profileId))
        base = profile.name if profile else f"{attributes.gpuInstanceSliceCount}g.unknown"
        return MigInstance(
            uuid=_text(nv.nvmlDeviceGetUUID(mig)),
            parent_uuid=uuid,
            profile=_mig_name(
                base, int(attributes.gpuInstanceSliceCount), int(attributes.computeInstanceSliceCount)
            ),
            gpu_instance_id=gi_id,
            compute_instance_id=int(nv.nvmlDeviceGetComputeInstanceId(mig)),
            memory_mib=int(attributes.memorySizeMB),
            multiprocessors=int(attributes.multiprocessorCount),
        )

    def set_mig_mode(self, uuid: GpuUuid, *, enabled: bool) -> bool:
        """Requests MIG on or off. True: in effect now; False: pending until the GPU is reset."""
        nv = self._nv
        with self._errors("set MIG mode", uuid):
            mode = nv.NVML_DEVICE_MIG_ENABLE if enabled else nv.NVML_DEVICE_MIG_DISABLE
            activation = nv.nvmlDeviceSetMigMode(self._handle(uuid), mode)
        return int(activation) == int(nv.NVML_SUCCESS)

    def mig_capacity(self, uuid: GpuUuid, profile: str) -> int:
        """How many more instances of ``profile`` fit on the GPU now."""
        with self._errors("read MIG capacity", uuid):
            handle = self._handle(uuid)
            chosen = self._profile_named(handle, uuid, profile)
            return int(self._nv.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, chosen.profile_id))

    def create_mig_instance(
        self, uuid: GpuUuid, profile: str, *, compute_slices: int | None = None
    ) -> MigInstance:
        """Creates a GPU instance of ``profile`` (e.g. ``3g.20gb``) and one compute instance in it.

        ``compute_slices`` defaults to the whole GPU instance. On failure nothing is left behind.
        """
        nv = self._nv
        with self._errors(f"create MIG instance {profile}", uuid):
            handle = self._handle(uuid)
            chosen = self._profile_named(handle, uuid, profile)
            slices = compute_slices or chosen.slices
            if slices not in _CI_PROFILE_BY_SLICES:
                raise NvmlError(f"no compute instance profile with {slices} slices (GPU {uuid})", uuid=uuid)
            gpu_instance = nv.nvmlDeviceCreateGpuInstance(handle, chosen.profile_id)
            try:
                engine = nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                ci_profile = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gpu_instance, _CI_PROFILE_BY_SLICES[slices], engine
                )
                compute = nv.nvmlGpuInstanceCreateComputeInstance(gpu_instance, ci_profile.id)
            except Exception:
                nv.nvmlGpuInstanceDestroy(gpu_instance)
                raise
            ids = (
                int(nv.nvmlGpuInstanceGetInfo(gpu_instance).id),
                int(nv.nvmlComputeInstanceGetInfo(compute).id),
            )
            created = [
                m
                for m in self._mig_devices(uuid, handle)
                if (m.gpu_instance_id, m.compute_instance_id) == ids
            ]
        log.info(
            "created MIG instance %s on GPU %s",
            created[0].uuid,
            uuid,
            extra={"gpu": uuid, "profile": profile},
        )
        return created[0]

    def destroy_mig_instance(self, uuid: GpuUuid, gpu_instance_id: int) -> None:
        """Destroys a GPU instance and its compute instances (NVML refuses while processes use them)."""
        nv = self._nv
        with self._errors(f"destroy MIG GPU instance {gpu_instance_id}", uuid):
            gpu_instance = nv.nvmlDeviceGetGpuInstanceById(self._handle(uuid), gpu_instance_id)
            for compute in self._compute_instances(gpu_instance):
                nv.nvmlComputeInstanceDestroy(compute)
            nv.nvmlGpuInstanceDestroy(gpu_instance)
        log.info("destroyed MIG GPU instance %d on GPU %s", gpu_instance_id, uuid, extra={"gpu": uuid})

    def _compute_instances(self, gpu_instance: Any) -> list[Any]:
        nv = self._nv
        engine = nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        found: list[Any] = []
        for index in range(nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            info = self._optional(
                nv.nvmlGpuInstanceGetComputeInstanceProfileInfo, gpu_instance, index, engine
            )
            if info is None:
                continue
            array = (nv.c_nvmlComputeInstance_t * max(1, int(info.instanceCount)))()
            count = ctypes.c_uint(0)
            nv.nvmlGpuInstanceGetComputeInstances(gpu_instance, info.id, array, ctypes.byref(count))
            found.extend(array[i] for i in range(count.value))
        return found


class XidEventStream:
    """Async iterator of :class:`XidEvent` from one NVML event set, registered when constructed.

    A daemon thread (started by the first ``__anext__``) blocks in ``nvmlEventSetWait_v2`` for up to
    ``wait_ms`` at a time; NVML returns as soon as an event arrives, so an XID reaches the loop at once and
    an idle node costs one wake-up per ``wait_ms``. Events wait in a queue, so a read cancelled mid-way loses
    nothing. A failed wait ends the stream with :class:`NvmlError`. Close it (``await stream.aclose()``): the
    set is freed at once, or by the thread when its wait in flight returns (at most ``wait_ms``).
    """

    def __init__(self, nv: Any, handles: dict[GpuUuid, Any], wait_ms: int) -> None:
        self._nv = nv
        self._wait_ms = wait_ms
        self._lock = threading.Lock()  # held by the thread while it waits; the set is freed under it
        self._queue: asyncio.Queue[XidEvent | BaseException | None] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._freed = asyncio.Event()  # set by the thread once it freed the set and ended
        self._thread: threading.Thread | None = None
        self._closed = False
        self._set = nv.nvmlEventSetCreate()
        self._uuid_by_handle: dict[int | None, GpuUuid] = {}
        for uuid, handle in handles.items():
            supported = int(nv.nvmlDeviceGetSupportedEventTypes(handle))
            if not supported & nv.nvmlEventTypeXidCriticalError:
                log.warning("GPU %s reports no XID events", uuid, extra={"gpu": uuid})
                continue
            nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, self._set)
            self._uuid_by_handle[ctypes.cast(handle, ctypes.c_void_p).value] = uuid

    def __aiter__(self) -> XidEventStream:
        return self

    async def __anext__(self) -> XidEvent:
        if self._loop is None and not self._closed:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._run, args=(self._loop,), name="nvml-xid-wait", daemon=True
            )
            self._thread.start()
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._closed = True  # the thread has ended: a failed stream stays ended
            raise item
        return item

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The waiting thread: hands each event (then an error or the end, ``None``) to the loop."""
        end: NvmlError | None = None
        try:
            while not self._closed:
                event = self._wait_once()
                if event is not None:
                    self._post(loop, event)
        except NvmlError as err:
            end = err
        finally:
            with self._lock:
                self._free()
            self._post(loop, end)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._freed.set)

    def _post(self, loop: asyncio.AbstractEventLoop, item: XidEvent | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            self._closed = True

    def _wait_once(self) -> XidEvent | None:
        nv = self._nv
        with self._lock:
            if self._closed or self._set is None:
                return None
            try:
                data = nv.nvmlEventSetWait_v2(self._set, self._wait_ms)
            except nv.NVMLError as err:
                if int(err.value) == nv.NVML_ERROR_TIMEOUT:
                    return None
                raise NvmlError(f"NVML event wait failed: {err}", code=int(err.value)) from err
        uuid = self._uuid_by_handle.get(ctypes.cast(data.device, ctypes.c_void_p).value)
        if uuid is None or not int(data.eventType) & nv.nvmlEventTypeXidCriticalError:
            return None
        return XidEvent(
            uuid=uuid,
            xid=int(data.eventData),
            gpu_instance_id=_instance_id(data.gpuInstanceId),
            compute_instance_id=_instance_id(data.computeInstanceId),
        )

    def _free(self) -> None:
        """Frees the event set once; call under the lock."""
        if self._set is not None:
            try:
                self._nv.nvmlEventSetFree(self._set)
            except self._nv.NVMLError as err:
                log.debug("freeing the NVML event set failed: %s", err)
            self._set = None

    def close(self) -> None:
        """Ends the stream; frees the set now, or the thread does when its wait returns. Idempotent."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._free()
            finally:
                self._lock.release()
        if self._loop is not None:
            self._post(self._loop, None)  # wakes a reader blocked in __anext__

    def join(self, timeout_s: float) -> None:
        """After :meth:`close`: waits (at most ``timeout_s``) until the thread freed the set and ended."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the NVML XID thread did not end within %.1f s", timeout_s)

    async def aclose(self) -> None:
        """:meth:`close`, then waits (at most one ``wait_ms``) until the thread freed the set and ended."""
        self.close()
        if self._loop is not None:
            await self._freed.wait()
