"""The plugin's files on the node: per-container shim config and usage, ``ld.so.preload``, the CDI spec.

Layout under the state directory (shared with :mod:`plugin.metrics.usage`)::

    <state>/ld.so.preload                         the shim's path, mounted at /etc/ld.so.preload
    <state>/node/placed/<gpu-uuid>                the throttled containers placed on each GPU (plugin only)
    <state>/node/tenants/<pod-uid>_<container>/   that container's record files, one per GPU (writable by it
                                                  alone; every other container sees them read-only)
    <state>/containers/<pod-uid>_<container>/
        vcuda.config                              shim limits (vcuda.shimfile), read-only in the container
        usage/usage.bin                           shim counters; the usage dir is writable in the container
        allocation.json                           the device IDs and attribution (plugin only)

Every file is written to a temporary name and renamed into place, so a reader never sees half a file and
a crash leaves at most a ``.tmp`` file, which start-up removes.
"""

import contextlib
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from plugin.core.allocate import CONFIG_FILE_NAME, CONTAINERS_DIR, NODE_DIR_NAME
from plugin.core.attribution import ContainerKey, PodRef
from plugin.core.nvallocate import REPLICAS_DIR
from plugin.core.reclaim import ContainerDir
from vcuda import names
from vcuda.errors import ContractError
from vcuda.shimfile import (
    NODE_PLACED_DIR,
    NODE_TENANTS_DIR,
    ShimConfig,
    decode_config,
    empty_usage_file,
    encode_config,
    encode_placement,
)
from vcuda.tenantfile import write_tenant_file
from vcuda.units import CORE_PER_GPU

__all__ = ["AllocationRecord", "StateDir", "driver_files"]

log = logging.getLogger(__name__)
RECORD_FILE: Final = "allocation.json"
TMP_SUFFIX: Final = ".tmp"


@dataclass(frozen=True, slots=True)
class AllocationRecord:
    """What ``Allocate`` decided for one container, kept on disk so a restarted plugin can verify it."""

    dir_name: str
    device_ids: tuple[str, ...]
    owner: ContainerKey
    confirmed: bool = False

    def to_json(self) -> str:
        pod = self.owner.pod
        doc = {"v": 1, "deviceIDs": list(self.device_ids), "podUID": pod.uid, "namespace": pod.namespace}
        doc |= {"pod": pod.name, "container": self.owner.container, "confirmed": self.confirmed}
        return json.dumps(doc)

    @classmethod
    def from_json(cls, dir_name: str, text: str) -> "AllocationRecord":
        doc = json.loads(text)
        pod = PodRef(doc["namespace"], doc["pod"], doc["podUID"])
        return cls(
            dir_name, tuple(doc["deviceIDs"]), ContainerKey(pod, doc["container"]), bool(doc["confirmed"])
        )


@functools.cache
def _empty_usage(gpu_count: int) -> bytes:
    return empty_usage_file(gpu_count)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


class StateDir:
    """Reads and writes the state directory; the only code that knows its layout (besides metrics)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.containers = root / CONTAINERS_DIR
        self._configs: dict[str, tuple[tuple[int, int, int], ShimConfig | None]] = {}
        """Decoded configs by directory name, with the (inode, mtime, size) they were read at: placements are
        rewritten on every allocation, and decoding every container's config each time is O(containers)."""

    def prepare(self) -> None:
        """Create the layout, write ``ld.so.preload`` and remove crash leftovers (``.tmp`` files)."""
        self.containers.mkdir(parents=True, exist_ok=True)
        self._prepare_node_dir()
        _write_atomic(self.root / "ld.so.preload", (names.CONTAINER_SHIM_PATH + "\n").encode())
        for tmp in self._leftovers():
            log.info("removing leftover %s", tmp)
            tmp.unlink(missing_ok=True)

    def _leftovers(self) -> list[Path]:
        """Temporaries of the agent's own writes (a crash mid-write), at the fixed places it writes them: the
        root, each container's directory and its usage file (``write_tenant_file``), ``node/placed``. Never a
        walk into a directory a tenant writes (its usage directory's subdirectories, ``node/tenants``): a
        subdirectory swapped for a symlink mid-walk would have root delete files elsewhere. ``unlink`` of a
        matched name a tenant made a symlink removes the link only."""
        patterns = ("*", "containers/*/*", "containers/*/usage/.*", f"{NODE_DIR_NAME}/{NODE_PLACED_DIR}/*")
        return [
            p
            for pattern in patterns
            for p in self.root.glob(pattern + TMP_SUFFIX)
            if p.is_symlink() or p.is_file()
        ]

    def write_container(self, record: AllocationRecord, config: ShimConfig) -> None:
        self.write_files(record.dir_name, config)
        _write_atomic(self.containers / record.dir_name / RECORD_FILE, record.to_json().encode())

    def write_files(self, dir_name: str, config: ShimConfig) -> None:
        """A container's (or DRA claim's) config, usage file, own record directory, and the placements."""
        folder = self.containers / dir_name
        usage = folder / "usage"
        usage.mkdir(parents=True, exist_ok=True)
        usage.chmod(0o777)  # the container's user, whoever it is, runs the shim that writes here
        usage_file = usage / names.USAGE_FILE_NAME
        if not usage_file.exists():
            # the usage dir is the tenant's: never through a name it planted (vcuda.tenantfile)
            write_tenant_file(usage, names.USAGE_FILE_NAME, _empty_usage(len(config.gpus)), 0o666)
        _write_atomic(folder / CONFIG_FILE_NAME, encode_config(config))
        tenant = self.root / NODE_DIR_NAME / NODE_TENANTS_DIR / dir_name
        tenant.mkdir(exist_ok=True)
        tenant.chmod(0o777)  # the container's processes, whatever their user, create its record files here
        self.write_placements()

    def write_replica(self, dir_name: str, config: ShimConfig) -> None:
        """The shim files of isolated time-slicing replicas (plugin.core.nvallocate): ``replicas/<dir>``,
        rewritten by every Allocate of the same replicas (one directory per replica set, so bounded)."""
        folder = self.root / REPLICAS_DIR / dir_name
        usage = folder / "usage"
        usage.mkdir(parents=True, exist_ok=True)
        usage.chmod(0o777)  # the container's user, whoever it is, runs the shim that writes here
        write_tenant_file(usage, names.USAGE_FILE_NAME, _empty_usage(len(config.gpus)), 0o666)
        _write_atomic(folder / CONFIG_FILE_NAME, encode_config(config))
        tenant = self.root / NODE_DIR_NAME / NODE_TENANTS_DIR / dir_name
        tenant.mkdir(parents=True, exist_ok=True)
        tenant.chmod(0o777)
        self.write_placements()  # the replicas of a GPU are each other's neighbours (docs/shim.md)

    def write_config(self, dir_name: str, config: ShimConfig) -> None:
        _write_atomic(self.containers / dir_name / CONFIG_FILE_NAME, encode_config(config))

    def write_record(self, record: AllocationRecord) -> None:
        _write_atomic(self.containers / record.dir_name / RECORD_FILE, record.to_json().encode())

    def remove_record(self, dir_name: str) -> None:
        """Forget an ``Allocate`` the kubelet lost; the config stays until the directory is rewritten or
        reclaimed; the kubelet holds no answer with its IDs, so no container starts with it."""
        (self.containers / dir_name / RECORD_FILE).unlink(missing_ok=True)

    def poison_config(self, dir_name: str) -> None:
        """Make the config unreadable for the shim (it then fails CUDA initialisation): never wrong limits."""
        _write_atomic(self.containers / dir_name / CONFIG_FILE_NAME, b"")

    def read_config(self, dir_name: str) -> ShimConfig | None:
        try:
            return decode_config((self.containers / dir_name / CONFIG_FILE_NAME).read_bytes())
        except (OSError, ContractError):
            return None

    def records(self) -> list[AllocationRecord]:
        found = []
        for folder in self._folders():
            try:
                found.append(AllocationRecord.from_json(folder.name, (folder / RECORD_FILE).read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def scan(self, now: float | None = None) -> list[ContainerDir]:
        now = time.time() if now is None else now
        found = []
        for folder in self._folders():
            config = self.read_config(folder.name)
            age = now - folder.stat().st_mtime
            pod = (config.namespace, config.pod_name) if config else None
            found.append(ContainerDir(folder.name, age, config.pod_uid if config else None, pod))
        return found

    def remove(self, dir_names: Iterable[str]) -> None:
        for name in dir_names:
            log.info("reclaiming per-container files %s", name)
            shutil.rmtree(self.containers / name, ignore_errors=True)
            shutil.rmtree(self.root / NODE_DIR_NAME / NODE_TENANTS_DIR / name, ignore_errors=True)
        self.write_placements()

    def _prepare_node_dir(self) -> None:
        """``<state>/node``: read-only in every container except each container's own ``tenants/<name>``."""
        node = self.root / NODE_DIR_NAME
        for folder in (node, node / NODE_TENANTS_DIR, node / NODE_PLACED_DIR):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)
        self.write_placements()

    def write_placements(self) -> None:
        """``<state>/node/placed/<gpu uuid>``: the throttled containers on each GPU, from the configs on disk.
        A shim counts only these as neighbours, whatever any tenant writes (docs/shim.md)."""
        placed = self.root / NODE_DIR_NAME / NODE_PLACED_DIR
        if not placed.is_dir():
            return
        tenants: dict[str, list[tuple[str, int]]] = {}
        folders = [*self._folders(), *self._replica_folders()]
        for gone in self._configs.keys() - {str(folder) for folder in folders}:
            del self._configs[gone]  # removed containers leave the cache
        for folder in folders:
            config = self._cached_config(folder)
            for gpu in config.gpus if config else ():
                if gpu.core_limit < CORE_PER_GPU:
                    tenants.setdefault(gpu.uuid, []).append((folder.name, gpu.core_limit))
        for uuid, entries in tenants.items():
            data = encode_placement(entries)
            with contextlib.suppress(OSError):
                if (placed / uuid).read_bytes() == data:
                    continue  # unchanged: no rewrite (a shim re-reads the list only when it changes)
            _write_atomic(placed / uuid, data)
        for stale in placed.iterdir():
            if stale.name not in tenants and not stale.name.endswith(TMP_SUFFIX):
                stale.unlink(missing_ok=True)

    def _replica_folders(self) -> list[Path]:
        """Isolated time-slicing replicas' shim directories (``replicas/``): placed like containers."""
        try:
            return sorted(p for p in (self.root / REPLICAS_DIR).iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def _cached_config(self, folder: Path) -> ShimConfig | None:
        """The shim config in ``folder``, decoded again only when the file changed."""
        path = folder / CONFIG_FILE_NAME
        try:
            st = path.stat()
        except OSError:
            self._configs.pop(str(folder), None)
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # every write is a rename: a new inode
        cached = self._configs.get(str(folder))
        if cached is None or cached[0] != key:
            cached = (key, self._read_config_at(path))
            self._configs[str(folder)] = cached
        return cached[1]

    @staticmethod
    def _read_config_at(path: Path) -> ShimConfig | None:
        try:
            return decode_config(path.read_bytes())
        except (OSError, ContractError):
            return None

    def _folders(self) -> list[Path]:
        try:
            return sorted(p for p in self.containers.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []


_LIB_DIRS: Final = ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib", "lib64", "lib/x86_64-linux-gnu")
_LIB_PREFIXES: Final = ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so")
_BINARIES: Final = ("nvidia-smi",)


def driver_files(root: Path, host_root: Path) -> dict[str, str]:
    """Driver libraries and tools under ``root``, as container path -> host path (device-specs strategy).

    Libraries go to ``/usr/local/nvidia/lib64`` and tools to ``/usr/local/nvidia/bin``, where CUDA images
    look (their ``LD_LIBRARY_PATH`` and ``PATH`` include them), as tkestack/gpu-manager does.
    """
    found: dict[str, str] = {}
    for lib_dir in _LIB_DIRS:
        folder = root / lib_dir
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(_LIB_PREFIXES):
                target = f"/usr/local/nvidia/lib64/{entry.name}"
                found.setdefault(target, str(host_root / entry.relative_to(root)))
    for tool in _BINARIES:
        for bin_dir in ("usr/bin", "bin"):
            if (root / bin_dir / tool).exists():
                found.setdefault(f"/usr/local/nvidia/bin/{tool}", str(host_root / bin_dir / tool))
    return found
