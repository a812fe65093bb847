"""Find the driver's files for CDI under the driver root, and write the spec files (``plugin.core.cdi``).

As NVIDIA's toolkit does: ``libcuda.so.1`` is located (the root's ld cache, then the usual folders), its
version read from the file it leads to (``libcuda.so.580.65.06``), and every ``lib*.so.<version>`` in that
folder is a driver library; tools (``nvidia-smi``, ...), IPC sockets and GSP firmware are taken when present.
Paths inside the container are the paths relative to the driver root; mount sources are host paths.

The hook binary (``nvidia-cdi-hook``, or ``nvidia-ctk`` of older toolkits) is looked for where the toolkit
installs it: ``/usr/bin`` and the GPU Operator's ``/usr/local/nvidia/toolkit``, under the driver root and,
for the operator's ``/run/nvidia/driver``, under the host root it is mounted from.
"""

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from plugin.core.cdi import DEFAULT_CDI_VERSION, DriverFiles, HookTool, HostFile, gpu_spec
from plugin.core.gpu import Gpu
from plugin.core.mig_allocate import parse_mig_minors
from plugin.nvml_loader import OPERATOR_DRIVER_ROOT, DriverRoot, find_library

__all__ = ["find_driver_files", "write_gpu_spec"]

log = logging.getLogger(__name__)

BINARIES: Final = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
SOCKETS: Final = ("run/nvidia-persistenced/socket", "run/nvidia-fabricmanager/socket", "tmp/nvidia-mps")
HOOK_DIRS: Final = ("usr/bin", "usr/local/bin", "usr/local/nvidia/toolkit")
CONTROL_DEVICES: Final = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def find_driver_files(root: DriverRoot, dev: Path = Path("/dev")) -> DriverFiles:
    """The driver's files under ``root``; ``dev`` is where the plugin sees the host's ``/dev``."""
    libcuda = find_library(root.path, "libcuda.so.1").found
    version = _version(libcuda)
    libraries: tuple[HostFile, ...] = ()
    folders: tuple[str, ...] = ()
    if libcuda is None or version is None:
        log.warning(
            "no libcuda.so.1 under the driver root %s: CDI specs carry no driver libraries", root.path
        )
    else:
        libraries = _libraries(root, libcuda.parent, version)
        folders = (_inside(root, libcuda.parent),)
    return DriverFiles(
        control_devices=_control_devices(dev),
        libraries=libraries,
        binaries=_binaries(root),
        sockets=tuple(f for s in SOCKETS for f in _present(root, [s])),
        firmware=_firmware(root, version),
        library_folders=folders,
        libcuda_folder=folders[0] if folders else None,
        hook=_hook(root),
    )


def _version(libcuda: Path | None) -> str | None:
    match = re.fullmatch(r"libcuda\.so\.(\d+(?:\.\d+)+)", libcuda.name) if libcuda else None
    return match[1] if match else None


def _inside(root: DriverRoot, path: Path) -> str:
    return "/" + str(path.relative_to(root.path))


def _host(root: DriverRoot, path: Path) -> HostFile:
    inside = _inside(root, path)
    return HostFile(str(root.host_path / inside.lstrip("/")), inside)


def _libraries(root: DriverRoot, folder: Path, version: str) -> tuple[HostFile, ...]:
    suffix = f".so.{version}"
    names = sorted(p for p in folder.iterdir() if p.name.startswith("lib") and p.name.endswith(suffix))
    return tuple(_host(root, p) for p in names if p.is_file() and not p.is_symlink())


def _present(root: DriverRoot, relative: list[str], one: bool = False) -> list[HostFile]:
    found = [_host(root, root.path / r) for r in relative if (root.path / r).exists()]
    return found[:1] if one else found


def _binaries(root: DriverRoot) -> tuple[HostFile, ...]:
    found = []
    for name in BINARIES:
        found += _present(root, [f"usr/bin/{name}", f"bin/{name}"], one=True)
    return tuple(found)


def _firmware(root: DriverRoot, version: str | None) -> tuple[HostFile, ...]:
    folder = root.path / "lib/firmware/nvidia" / (version or "-")
    if version is None or not folder.is_dir():
        return ()
    return tuple(_host(root, p) for p in sorted(folder.iterdir()) if p.is_file())


def _control_devices(dev: Path) -> tuple[str, ...]:
    """The control nodes: the three CUDA needs always (the runtime fails clearly if one is missing), the
    modeset node only when it exists."""
    required = CONTROL_DEVICES[:3]
    optional = tuple(d for d in CONTROL_DEVICES[3:] if (dev / d).exists())
    return tuple(f"/dev/{d}" for d in (*required, *optional))


def _hook_roots(root: DriverRoot) -> list[DriverRoot]:
    roots = [root]
    if root.path.parts[-3:] == OPERATOR_DRIVER_ROOT.parts:  # the host's own root holds the toolkit
        roots.append(DriverRoot(root.path.parents[2], root.host_path.parents[2]))
    return roots


def _hook(root: DriverRoot) -> HookTool | None:
    styles: tuple[Literal["nvidia-cdi-hook", "nvidia-ctk"], ...] = ("nvidia-cdi-hook", "nvidia-ctk")
    for style in styles:
        for base in _hook_roots(root):
            for folder in HOOK_DIRS:
                candidate = base.path / folder / style
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return HookTool(str(base.host_path / folder / style), style)
    log.warning("no nvidia-cdi-hook or nvidia-ctk under %s: CDI specs carry no ldcache hook", root.path)
    return None


def write_gpu_spec(
    cdi_dir: Path, kind: str, gpus: Sequence[Gpu], files: DriverFiles, version: str = DEFAULT_CDI_VERSION
) -> Path:
    """``<cdi-dir>/<vendor>-<class>.json``, replaced atomically (a runtime never reads half a file)."""
    spec: dict[str, Any] = gpu_spec(kind, gpus, files, version)
    cdi_dir.mkdir(parents=True, exist_ok=True)
    path = cdi_dir / (kind.replace("/", "-") + ".json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(spec, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_mig_minors(path: Path) -> dict[str, int]:
    """The driver's MIG capability minors (``mig-minors``); empty when the file is absent (no MIG, or no
    driver): a MIG device is then refused with a clear error by whoever needs one."""
    try:
        return parse_mig_minors(path.read_text())
    except OSError:
        return {}
