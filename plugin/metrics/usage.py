"""Read the plugin's per-container state directory: shim configs (limits) and usage files (live counters).

The directory layout is known to exactly one function, :func:`container_files`. Configs are written once at
``Allocate``, so they are decoded once per (mtime, size); usage files change constantly and are decoded every
scrape with :func:`decode_live_slots`, a fast reader of the :data:`vcuda.shimfile.USAGE_FILE` layout that
unpacks only live slots (``decode_usage`` unpacks all 64 slots x 16 GPUs and is ~1 ms per file).

The usage directory is writable inside the container, so ``usage.bin`` is read with
:func:`vcuda.tenantfile.read_tenant_file`: no symlink followed, no FIFO waited on, regular files only, never
more than the layout's size. A refused or corrupt file counts as unreadable and is logged once per path and
reason (not every scrape); the container's other series stay.
"""

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from plugin.core.allocate import CONFIG_FILE_NAME, CONTAINERS_DIR
from vcuda.errors import ContractError
from vcuda.layout import Struct
from vcuda.names import USAGE_FILE_NAME
from vcuda.shimfile import (
    CONFIG_HEADER,
    GPU_USAGE,
    MAX_GPUS,
    PROC_SLOT,
    USAGE_FILE,
    USAGE_MAGIC,
    USAGE_VERSION,
    GpuCounters,
    ProcessSlot,
    ShimConfig,
    decode_config,
)
from vcuda.tenantfile import TenantFileError, read_tenant_file

__all__ = [
    "CONFIG_FILE_NAME",
    "ContainerFiles",
    "ContainerState",
    "StateReader",
    "StateSnapshot",
    "container_files",
    "decode_live_slots",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContainerFiles:
    """One container's files in the state directory (``name`` is its directory name)."""

    name: str
    config: Path
    usage: Path


def container_files(state_dir: Path) -> list[ContainerFiles]:
    """``<state>/containers/<pod-uid>_<container>/{vcuda.config, usage/usage.bin}``, sorted by directory."""
    try:
        entries = sorted((e.name, e.path) for e in os.scandir(state_dir / CONTAINERS_DIR) if e.is_dir())
    except FileNotFoundError:
        return []
    return [
        ContainerFiles(name, Path(path, CONFIG_FILE_NAME), Path(path, "usage", USAGE_FILE_NAME))
        for name, path in entries
    ]


def _prefix(layout: Struct, stop: str) -> struct.Struct:
    fields = layout.fields[: [f.name for f in layout.fields].index(stop)]
    return struct.Struct(Struct(layout.name, fields).format)


_FILE_HEAD: Final = _prefix(USAGE_FILE, "memory_used")  # magic, version, size, gpu_count, slot_count
_SLOT_HEAD: Final = _prefix(PROC_SLOT, "gpus")  # pid, state, start_time, host_pid, pad
_GPU: Final = struct.Struct(GPU_USAGE.format)
_SLOTS_AT: Final = USAGE_FILE.offset("slots")
_GPUS_AT: Final = PROC_SLOT.offset("gpus")
_SLOT_COUNT: Final = next(f for f in USAGE_FILE.fields if f.name == "slots").count


def decode_live_slots(data: bytes) -> tuple[ProcessSlot, ...]:
    """Same answer as :func:`vcuda.shimfile.decode_usage`, unpacking only the live slots."""
    if len(data) < USAGE_FILE.size:
        raise ContractError(f"usage file is {len(data)} bytes, expected {USAGE_FILE.size}")
    magic, version, _size, gpu_count, _slots = _FILE_HEAD.unpack_from(data, 0)
    if magic != USAGE_MAGIC or version != USAGE_VERSION:
        raise ContractError("usage file: bad magic or unknown version")
    count = min(gpu_count, MAX_GPUS)
    live = []
    for at in range(_SLOTS_AT, _SLOTS_AT + _SLOT_COUNT * PROC_SLOT.size, PROC_SLOT.size):
        pid, state, start_time, host_pid, _pad = _SLOT_HEAD.unpack_from(data, at)
        if state != 1 or pid <= 0:
            continue
        gpus = tuple(
            GpuCounters(*_GPU.unpack_from(data, at + _GPUS_AT + i * _GPU.size)) for i in range(count)
        )
        live.append(ProcessSlot(pid=pid, host_pid=host_pid, start_time=start_time, gpus=gpus))
    return tuple(live)


@dataclass(frozen=True, slots=True)
class ContainerState:
    """A container's limits and its live shim processes (GPU counters in config-record order)."""

    name: str
    config: ShimConfig
    processes: tuple[ProcessSlot, ...]


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    containers: tuple[ContainerState, ...]
    unreadable: int
    readable: bool = True  # False when the state directory itself could not be listed


class StateReader:
    """Reads the state directory each scrape, caching decoded configs by (path, mtime, size)."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._configs: dict[Path, tuple[int, int, ShimConfig]] = {}
        self._refusals: dict[
            Path, str
        ] = {}  # the reason last logged per path, so a scrape does not repeat it

    def read(self) -> StateSnapshot:
        containers: list[ContainerState] = []
        unreadable = 0
        seen: set[Path] = set()
        try:
            listing = container_files(self._state_dir)
        except OSError:
            return StateSnapshot((), 0, readable=False)
        for files in listing:
            seen.add(files.config)
            config = self._config(files.config)
            if config is None:
                unreadable += files.config.exists()
                continue
            seen.add(files.usage)
            processes = self._processes(files.usage)
            unreadable += processes is None
            containers.append(ContainerState(files.name, config, processes or ()))
        self._configs = {p: v for p, v in self._configs.items() if p in seen}
        self._refusals = {p: v for p, v in self._refusals.items() if p in seen}
        return StateSnapshot(tuple(containers), unreadable)

    def _config(self, path: Path) -> ShimConfig | None:
        try:
            st = path.stat()
            cached = self._configs.get(path)
            if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
                return cached[2]
            config = decode_config(read_tenant_file(path, CONFIG_HEADER.size))
        except (OSError, ContractError):
            return None
        self._configs[path] = (st.st_mtime_ns, st.st_size, config)
        return config

    def _processes(self, path: Path) -> tuple[ProcessSlot, ...] | None:
        """Live slots; () when the container has not started CUDA yet; None when refused or corrupt."""
        try:
            processes = decode_live_slots(read_tenant_file(path, USAGE_FILE.size))
        except FileNotFoundError:
            processes = ()
        except TenantFileError as err:
            self._refused(path, str(err))
            return None
        except ContractError as err:
            self._refused(path, f"{path}: {err}")
            return None
        self._refusals.pop(path, None)
        return processes

    def _refused(self, path: Path, reason: str) -> None:
        if self._refusals.get(path) != reason:
            log.warning(
                "usage file unreadable, its counters are left out: %s", reason, extra={"path": str(path)}
            )
            self._refusals[path] = reason
