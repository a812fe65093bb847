"""Find the driver's ``libnvidia-ml.so.1`` under the driver root, as NVIDIA's device plugin does.

The plugin image carries no driver and sets no library path: NVML lives on the node, under the driver root
(``/`` for a host install, ``/run/nvidia/driver`` for the GPU Operator's driver container), which the chart
mounts into the pod. :func:`locate_driver_root` picks the root like the GPU Operator's toolkit does
(``<root>/run/nvidia/driver`` when a driver lives there, else ``<root>``); :func:`find_library` looks in
``<root>/etc/ld.so.cache`` and then in the usual library folders of that root. Only when the root holds no
NVML does :mod:`plugin.nvml` fall back to the dynamic loader's own search (``LD_LIBRARY_PATH``, the
image's cache). A failure names every path tried.

Reads files only; :class:`plugin.nvml.Nvml` does the loading (the only pynvml importer).
"""

import logging
import platform
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from plugin.core.ldcache import LdCacheError, parse_ld_cache

__all__ = [
    "LIBRARY_DIRS",
    "NVML_LIBRARY",
    "OPERATOR_DRIVER_ROOT",
    "DriverRoot",
    "LibrarySearch",
    "find_library",
    "locate_driver_root",
]

log = logging.getLogger(__name__)

NVML_LIBRARY: Final = "libnvidia-ml.so.1"
# Where the GPU Operator's driver container exposes the driver on the host.
OPERATOR_DRIVER_ROOT: Final = PurePosixPath("run/nvidia/driver")
# The folders NVIDIA's library locator searches under a root after its ld cache (container-toolkit).
LIBRARY_DIRS: Final = (
    "usr/lib64",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib64",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib",
    "lib",
)


@dataclass(frozen=True, slots=True)
class DriverRoot:
    """The driver's root as the plugin sees it (``path``) and as the host sees it (``host_path``)."""

    path: Path
    host_path: Path


@dataclass(frozen=True, slots=True)
class LibrarySearch:
    """The outcome of a search: the library found (or None) and every path looked at, in order."""

    found: Path | None
    tried: tuple[str, ...]

    def describe(self) -> str:
        return ", ".join(self.tried) or "(nothing)"


def locate_driver_root(root: Path, host_root: Path) -> DriverRoot:
    """``<root>/run/nvidia/driver`` when the GPU Operator's driver container put NVML there, else ``root``."""
    operator = DriverRoot(root / OPERATOR_DRIVER_ROOT, host_root / OPERATOR_DRIVER_ROOT)
    if find_library(operator.path, NVML_LIBRARY).found is not None:
        return operator
    return DriverRoot(root, host_root)


def find_library(root: Path, name: str, machine: str | None = None) -> LibrarySearch:
    """``name`` under ``root``: the root's ld cache first, then :data:`LIBRARY_DIRS`. ``found`` is the file
    the name leads to, symlinks followed inside ``root`` (an absolute target is taken relative to the root,
    as in a chroot), so that loading it never strays onto the plugin image's own files."""
    tried: list[str] = []
    cached = _from_ld_cache(root, name, machine or platform.machine(), tried)
    if cached is not None:
        return LibrarySearch(cached, tuple(tried))
    for folder in LIBRARY_DIRS:
        candidate = root / folder / name
        tried.append(str(candidate))
        resolved = _resolve_in_root(root, candidate)
        if resolved is not None:
            return LibrarySearch(resolved, tuple(tried))
    return LibrarySearch(None, tuple(tried))


def _from_ld_cache(root: Path, name: str, machine: str, tried: list[str]) -> Path | None:
    cache = root / "etc" / "ld.so.cache"
    try:
        entries = parse_ld_cache(cache.read_bytes(), machine)
    except FileNotFoundError:
        return None
    except (OSError, LdCacheError) as err:
        log.warning("ignoring the driver root's ld cache %s: %s", cache, err)
        return None
    target = entries.get(name)
    if target is None:
        tried.append(f"{cache} (no {name})")
        return None
    candidate = root / target.lstrip("/")
    tried.append(f"{candidate} (from {cache})")
    return _resolve_in_root(root, candidate)


def _resolve_in_root(root: Path, path: Path, hops: int = 16) -> Path | None:
    """The regular file ``path`` leads to, following symlinks the way they resolve inside ``root``."""
    for _ in range(hops):
        if not path.is_symlink():
            return path if path.is_file() else None
        target = Path(path.readlink())
        path = root / str(target).lstrip("/") if target.is_absolute() else path.parent / target
    return None
