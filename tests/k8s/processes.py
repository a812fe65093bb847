"""Child processes of the real-Kubernetes tier (etcd, kube-apiserver, kube-scheduler, the extender) and bounded
waits on them. Each child writes to its own log file, printed when a wait fails, and gets SIGTERM when the
test process dies (``PR_SET_PDEATHSIG`` set by a tiny exec wrapper), so no control plane outlives a test run.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from tests.ports import free_port

__all__ = ["Process", "WaitTimeoutError", "free_port", "wait_for"]

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class WaitTimeoutError(AssertionError):
    """Something the tier waited for did not happen in time; the message says what."""


def wait_for(probe: Callable[[], T | None], *, timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; raise :class:`WaitTimeoutError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


class Process:
    """One child; ``start`` after ``stop`` restarts it, appending to the same log."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name, self.argv, self.log = name, list(argv), log
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> "Process":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-S", "-c", _DIE_WITH_PARENT, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive:
            raise AssertionError(f"{self.name} exited:\n{self.tail()}")
