"""Drive the FAKE ``libnvidia-ml.so.1`` from tests: real pynvml over a fake node, changed at run time.

The fake (C, ``tests/fakes/nvml/src``, built by ``make`` into ``build/fakes/nvml/libnvidia-ml.so.1``) reads a node
description (JSON, ``tests/fakes/nvml/nodes/*.json``, format in ``tests/fakes/nvml/README.md``) from the path in
``FAKE_NVML_CONFIG`` at ``nvmlInit``, and applies JSON lines appended to its control file
(``<config>.ctl``) before every NVML call. This module writes both.

In a test (one node per test; the fixture points this process's pynvml at it)::

    from tests.fakes.nvml.harness import fake_nvml_fixture  # noqa: F401  (registers the fixture "fake_nvml")

    def test_xid_79_marks_the_gpu_unhealthy(fake_nvml):
        node = fake_nvml("h100x8")                 # writes the config into tmp_path, activates it
        uuid = node.uuid(3)
        ...                                        # start the code under test (it calls nvmlInit)
        node.inject_xid(uuid, 79)                  # or gpu_instance_id=..., compute_instance_id=...
        node.lose_gpu(uuid); node.recover_gpu(uuid)
        node.set_processes(uuid, [FakeProcess(pid=4242, used_mib=1024, sm=35)])

Without pytest: ``node = FakeNvml.write(directory, "a10x4")`` then ``node.activate()`` (this process) or
``subprocess.Popen(..., env={**os.environ, **node.env()})`` (another process).

**One process, several node descriptions.** pynvml loads its library once per process (``pynvml.nvmlLib``)
and keeps global state; the fake therefore re-reads its description at every ``nvmlInit`` whose config
path or file changed. :meth:`FakeNvml.activate` sets the path (``fakeNvmlSetConfigPath`` in the fake; it
wins over ``FAKE_NVML_CONFIG``, which stays untouched), so the next ``nvmlInit`` in this process sees the new
node. Only one node is live per library at a time; handles from the previous node must not be used after the
switch. Re-initialising the same unchanged file keeps the run-time state (MIG instances created through NVML
survive an ``nvmlShutdown``/``nvmlInit``, as on a real node).

**Several fake nodes at once** (the simulated cluster), either:

1. one plugin process per node, each started with ``env=node.env()`` (``FAKE_NVML_CONFIG`` plus
   ``LD_LIBRARY_PATH`` so that ``CDLL("libnvidia-ml.so.1")`` finds the fake); or
2. in one process, :meth:`FakeNvml.private_pynvml` per node: a separately imported pynvml module bound to a
   private copy of the library (its own state), handed to ``plugin.nvml.Nvml(library=...)``.

Control lines are shared through the file, so injections reach every process using the node; MIG instances
created through NVML live in the process that created them.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

__all__ = [
    "LIBRARY",
    "NODES",
    "NODES_DIR",
    "FakeNvml",
    "FakeProcess",
    "fake_nvml_fixture",
    "load_fake_library",
    "node_description",
]

REPO = Path(__file__).resolve().parents[3]
LIBRARY = REPO / "build" / "fakes" / "nvml" / "libnvidia-ml.so.1"
NODES_DIR = Path(__file__).resolve().parent / "nodes"
NODES = ("h100x8", "h200x8", "a10x4", "a100x4-mig")

_build_lock = threading.Lock()


def _ensure_built() -> Path:
    """Builds the fake with make when it is missing (``make test`` builds it first anyway)."""
    with _build_lock:
        if not LIBRARY.exists():
            subprocess.run(["make", "-s", "-C", str(REPO), str(LIBRARY.relative_to(REPO))], check=True)
    return LIBRARY


def load_fake_library() -> Any:
    """Points this process's pynvml at the fake (once) and returns the loaded library.

    Raises RuntimeError when pynvml already loaded another (real) NVML in this process.
    """
    import pynvml

    with pynvml.libLoadLock:
        if pynvml.nvmlLib is None:
            pynvml.nvmlLib = ctypes.CDLL(str(_ensure_built()))
        lib = pynvml.nvmlLib
    if not hasattr(lib, "fakeNvmlSetConfigPath"):
        raise RuntimeError(
            "pynvml has already loaded a real libnvidia-ml in this process; the fake cannot be used"
        )
    return lib


def node_description(node: str) -> dict[str, Any]:
    """The shipped description ``tests/fakes/nvml/nodes/<node>.json`` as a dict (a fresh copy)."""
    loaded: dict[str, Any] = json.loads((NODES_DIR / f"{node}.json").read_text())
    return loaded


@dataclass(frozen=True, slots=True)
class FakeProcess:
    """A process the fake reports on a GPU: host PID, memory, SM/memory utilisation in percent."""

    pid: int
    used_mib: int
    sm: int = 0
    mem: int = 0
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None

    def to_json(self) -> dict[str, int]:
        out = {"pid": self.pid, "used_mib": self.used_mib, "sm": self.sm, "mem": self.mem}
        if self.gpu_instance_id is not None:
            out["gpu_instance_id"] = self.gpu_instance_id
        if self.compute_instance_id is not None:
            out["compute_instance_id"] = self.compute_instance_id
        return out


class FakeNvml:
    """One FAKE node: its description file, its control file, and helpers to change it at run time.

    Every change is one JSON line appended to :attr:`control_path`; the fake applies it at its next NVML call
    (an XID reaches event sets registered before it; a waiting ``nvmlEventSetWait_v2`` sees it within 5 ms).
    """

    def __init__(self, config_path: Path, description: Mapping[str, Any]) -> None:
        self.config_path = config_path
        self.control_path = Path(f"{config_path}.ctl")
        self.description = dict(description)

    @classmethod
    def write(cls, directory: Path, node: str | Mapping[str, Any] = "h100x8") -> FakeNvml:
        """Writes ``node`` (a shipped name from :data:`NODES`, or a description dict) into ``directory``."""
        description = node_description(node) if isinstance(node, str) else dict(node)
        name = node if isinstance(node, str) else "custom"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / f"{name}.json"
        config.write_text(json.dumps(description, indent=1))
        config.with_name(config.name + ".ctl").write_text("")
        return cls(config, description)

    # ---- what the node holds ----

    @property
    def gpus(self) -> list[dict[str, Any]]:
        gpus: list[dict[str, Any]] = self.description["gpus"]
        return gpus

    @property
    def uuids(self) -> list[str]:
        return [g["uuid"] for g in self.gpus]

    def uuid(self, index: int) -> str:
        return self.uuids[index]

    # ---- pointing NVML at it ----

    def env(self) -> dict[str, str]:
        """Environment for a process that should see this node through ``CDLL("libnvidia-ml.so.1")``."""
        library_dir = str(_ensure_built().parent)
        path = os.environ.get("LD_LIBRARY_PATH", "")
        return {
            "FAKE_NVML_CONFIG": str(self.config_path),
            "LD_LIBRARY_PATH": f"{library_dir}:{path}" if path else library_dir,
        }

    def activate(self) -> None:
        """Makes this node the one the next ``nvmlInit`` of this process loads."""
        load_fake_library().fakeNvmlSetConfigPath(str(self.config_path).encode())

    def private_pynvml(self, directory: Path) -> ModuleType:
        """A fresh pynvml module bound to a private copy of the fake that serves only this node.

        For running several nodes in one process; pass it to ``plugin.nvml.Nvml(library=...)``.
        """
        copy = directory / "libnvidia-ml.so.1"
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_ensure_built(), copy)  # another inode: the dynamic loader maps a separate instance
        import pynvml

        spec = importlib.util.spec_from_file_location(f"pynvml_fake_{id(self)}", pynvml.__file__)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # pynvml looks itself up there while importing
        spec.loader.exec_module(module)
        lib = ctypes.CDLL(str(copy))
        lib.fakeNvmlSetConfigPath(str(self.config_path).encode())
        setattr(module, "nvmlLib", lib)  # noqa: B010 (a module attribute mypy cannot see)
        return module

    # ---- run-time changes ----

    def control(self, line: Mapping[str, Any]) -> None:
        """Appends one control line (see ``tests/fakes/nvml/src/control.c`` for every op)."""
        with self.control_path.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def inject_xid(
        self,
        uuid: str,
        xid: int,
        *,
        gpu_instance_id: int | None = None,
        compute_instance_id: int | None = None,
    ) -> None:
        """An XID error event on a GPU (or a MIG device: its UUID, or the GPU's with instance ids)."""
        line: dict[str, Any] = {"op": "xid", "uuid": uuid, "xid": xid}
        if gpu_instance_id is not None:
            line["gpu_instance_id"] = gpu_instance_id
        if compute_instance_id is not None:
            line["compute_instance_id"] = compute_instance_id
        self.control(line)

    def lose_gpu(self, uuid: str, *, xid: int | None = None) -> None:
        """The GPU falls off the bus: every call on it answers NVML_ERROR_GPU_IS_LOST (optionally an XID first)."""
        if xid is not None:
            self.inject_xid(uuid, xid)
        self.control({"op": "lose", "uuid": uuid})

    def recover_gpu(self, uuid: str) -> None:
        self.control({"op": "recover", "uuid": uuid})

    def set_processes(self, uuid: str, processes: Iterable[FakeProcess]) -> None:
        """Replaces the GPU's running processes (memory used follows their sum unless set explicitly)."""
        self.control({"op": "processes", "uuid": uuid, "processes": [p.to_json() for p in processes]})

    def set_utilization(self, uuid: str, *, gpu: int, memory: int = 0) -> None:
        self.control({"op": "utilization", "uuid": uuid, "gpu": gpu, "memory": memory})

    def set_memory_used(self, uuid: str, mib: int | None) -> None:
        """Overrides the GPU's used memory; ``None`` returns to the processes' sum."""
        self.control({"op": "memory_used", "uuid": uuid, "mib": mib})

    def reset_gpu(self, uuid: str) -> None:
        """A GPU reset: a pending MIG mode takes effect (and its MIG instances are gone)."""
        self.control({"op": "reset", "uuid": uuid})


@pytest.fixture(name="fake_nvml")
def fake_nvml_fixture(tmp_path: Path) -> Callable[..., FakeNvml]:
    """Factory fixture: ``fake_nvml("a10x4")`` -> an activated :class:`FakeNvml` written under ``tmp_path``.

    Accepts a shipped node name or a description dict. Each call activates its node for this process.
    """
    count = 0

    def make(node: str | Mapping[str, Any] = "h100x8") -> FakeNvml:
        nonlocal count
        count += 1
        fake = FakeNvml.write(tmp_path / f"fake-nvml-{count}", node)
        fake.activate()
        return fake

    return make
