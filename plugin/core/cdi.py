"""CDI specs as NVIDIA's container toolkit (``nvidia-ctk cdi generate``) writes them, from plain values.

A GPU device carries its device node (``/dev/nvidia<minor>``); the spec's common edits carry what every GPU
container needs on a CDI-only runtime (containerd or CRI-O without the nvidia runtime): the control device
nodes, the driver's user-space libraries and tools (bind mounts, read-only), its IPC sockets (persistenced,
fabric manager, MPS) and GSP firmware, ``NVIDIA_VISIBLE_DEVICES=void`` (so a legacy nvidia hook in the same
runtime injects nothing twice), and the toolkit's ``createContainer`` hooks: ``update-ldcache`` so the
container's loader finds the mounted libraries, ``create-symlinks`` for ``libcuda.so``.

Pure: :class:`DriverFiles` (found on the node by :mod:`plugin.cdi`) in, a JSON-ready dict out.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from plugin.core.gpu import Gpu

__all__ = [
    "CDI_VERSIONS",
    "DEFAULT_CDI_VERSION",
    "DriverFiles",
    "HookTool",
    "HostFile",
    "common_edits",
    "gpu_spec",
    "with_common_edits",
]

# Spec versions containerd (1.7: CDI 0.5+, 2.x: 0.8) and CRI-O (1.27+: 0.5+) accept; the features used here
# need only 0.3.0, so every version listed is valid for the same content.
CDI_VERSIONS: Final = ("0.5.0", "0.6.0", "0.7.0")
DEFAULT_CDI_VERSION: Final = "0.5.0"
_READ_ONLY: Final = ("ro", "nosuid", "nodev", "bind")
_SOCKET: Final = (*_READ_ONLY, "noexec")


@dataclass(frozen=True, slots=True)
class HostFile:
    """A file to bind-mount: where the host has it, where the container sees it."""

    host_path: str
    container_path: str


@dataclass(frozen=True, slots=True)
class HookTool:
    """The toolkit's hook binary (host path) and how it is called: ``nvidia-cdi-hook <hook>`` or
    ``nvidia-ctk hook <hook>`` (toolkits before 1.16 ship only the latter)."""

    path: str
    style: Literal["nvidia-cdi-hook", "nvidia-ctk"]

    def args(self, hook: str, *rest: str) -> list[str]:
        head = ["nvidia-cdi-hook"] if self.style == "nvidia-cdi-hook" else ["nvidia-ctk", "hook"]
        return [*head, hook, *rest]


@dataclass(frozen=True, slots=True)
class DriverFiles:
    """What the driver installed on this node, as the container will see it."""

    control_devices: tuple[str, ...] = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
    libraries: tuple[HostFile, ...] = ()
    binaries: tuple[HostFile, ...] = ()
    sockets: tuple[HostFile, ...] = ()
    firmware: tuple[HostFile, ...] = ()
    library_folders: tuple[str, ...] = ()
    """Container folders of the libraries, for ``update-ldcache``."""
    libcuda_folder: str | None = None
    """Container folder of ``libcuda.so.1``, where ``libcuda.so`` is linked to it."""
    hook: HookTool | None = None


def _mounts(files: Sequence[HostFile], options: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"hostPath": f.host_path, "containerPath": f.container_path, "options": list(options)} for f in files
    ]


def _hooks(files: DriverFiles) -> list[dict[str, Any]]:
    hook = files.hook
    if hook is None or not files.library_folders:
        return []
    found = []
    if files.libcuda_folder is not None:
        link = f"libcuda.so.1::{files.libcuda_folder}/libcuda.so"
        found.append(
            {
                "hookName": "createContainer",
                "path": hook.path,
                "args": hook.args("create-symlinks", "--link", link),
            }
        )
    folders = [arg for folder in files.library_folders for arg in ("--folder", folder)]
    found.append(
        {"hookName": "createContainer", "path": hook.path, "args": hook.args("update-ldcache", *folders)}
    )
    return found


def common_edits(files: DriverFiles) -> dict[str, Any]:
    """The edits every GPU device of the spec shares."""
    edits: dict[str, Any] = {
        "env": ["NVIDIA_VISIBLE_DEVICES=void"],
        "deviceNodes": [{"path": p} for p in files.control_devices],
    }
    mounts = [
        *_mounts(files.libraries, _READ_ONLY),
        *_mounts(files.binaries, _READ_ONLY),
        *_mounts(files.firmware, _READ_ONLY),
        *_mounts(files.sockets, _SOCKET),
    ]
    if mounts:
        edits["mounts"] = mounts
    hooks = _hooks(files)
    if hooks:
        edits["hooks"] = hooks
    return edits


def gpu_spec(
    kind: str, gpus: Sequence[Gpu], files: DriverFiles, version: str = DEFAULT_CDI_VERSION
) -> dict[str, Any]:
    """One device per GPU, named by UUID (what ``Allocate`` returns as ``<kind>=<uuid>``)."""
    devices = [
        {"name": g.uuid, "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{g.minor}"}]}} for g in gpus
    ]
    return {"cdiVersion": version, "kind": kind, "devices": devices, "containerEdits": common_edits(files)}


def with_common_edits(
    spec: Mapping[str, Any], files: DriverFiles, version: str = DEFAULT_CDI_VERSION
) -> dict[str, Any]:
    """``spec`` (e.g. the MIG spec) with the driver's common edits; its own device nodes come first."""
    edits = common_edits(files)
    own = [n for n in spec.get("containerEdits", {}).get("deviceNodes", []) if n not in edits["deviceNodes"]]
    edits["deviceNodes"] = [*edits["deviceNodes"], *own]
    return {**spec, "cdiVersion": version, "containerEdits": edits}
