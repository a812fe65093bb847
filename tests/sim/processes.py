"""Start and stop the REAL kube-vgpu binaries (plugin, extender) as child processes of the simulation.

Each child gets a kubeconfig pointing at the simulated API server and its output in a log file under the
cluster's work directory (printed when a start times out, so failures are diagnosable).
"""

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Child", "console_script", "write_kubeconfig"]

PR_SET_PDEATHSIG = 1


# Exec'd in front of every child: ask for SIGTERM when the simulation's process dies (so no plugin outlives
# it), then exec the real command. A wrapper rather than ``preexec_fn``: forking a process that runs gRPC
# threads is unsafe (gRPC warns and skips its fork handlers).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    f"ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def console_script(name: str) -> list[str]:
    """The installed entry point next to this interpreter (``.venv/bin/<name>``)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    module = {"kube-vgpu-plugin": "plugin", "kube-vgpu-extender": "extender"}[name]
    return [sys.executable, "-c", f"import sys; from {module}.__main__ import main; sys.exit(main())"]


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
        f"clusters:\n- name: sim\n  cluster:\n    server: {server}\n"
        "users:\n- name: sim\n  user:\n    token: simulated\n"
        "contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n"
    )
    return path


class Child:
    """One child process; ``start`` twice restarts it (the log file is appended to)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, list(argv), dict(env), log
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-S", "-c", _DIE_WITH_PARENT, *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.env}, start_new_session=True,
            )  # fmt: skip
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, *, kill: bool = False, timeout_s: float = 5.0) -> None:
        """SIGTERM (or SIGKILL with ``kill``), then SIGKILL after ``timeout_s``."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
