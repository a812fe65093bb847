"""One MPS control daemon per MPS-shared GPU, started, watched and stopped by the plugin.

For each GPU: ``nvidia-cuda-mps-control -d`` with ``CUDA_VISIBLE_DEVICES=<uuid>`` and its own
``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY`` under ``<mps-root>/<uuid>/`` (``-d`` forks the daemon
and returns). The defaults every client gets are then set on the daemon itself
(``set_default_active_thread_percentage``, ``set_default_device_pinned_mem_limit 0``: the one GPU the
daemon sees), as NVIDIA's MPS daemon does, so a client that drops its environment is still held to its
share. Health is the control program answering ``get_default_active_thread_percentage``; a daemon that
stops answering is started again with a backoff (0.5 s doubling to 30 s). On shutdown (and
``--uninstall``) each daemon is told ``quit``.
"""

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MpsGpu", "MpsSupervisor", "quit_daemons"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MpsGpu:
    """One MPS-shared GPU and the per-client defaults of its daemon."""

    uuid: str
    thread_percentage: int
    pinned_memory_mib: int


def _env(root: Path, uuid: str) -> dict[str, str]:
    return {
        **os.environ,  # the driver's library path (LD_LIBRARY_PATH) included
        "CUDA_VISIBLE_DEVICES": uuid,
        "CUDA_MPS_PIPE_DIRECTORY": str(root / uuid / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(root / uuid / "log"),
    }


async def _control(
    control: Path, env: dict[str, str], *args: str, stdin: str | None = None
) -> tuple[int, str]:
    """Run the control program once; (exit code, its output). A missing binary is exit code 127."""
    try:
        proc = await asyncio.create_subprocess_exec(
            str(control),
            *args,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            # -d: nothing read; the daemon it forks may keep an inherited output pipe open for its life
            stdout=asyncio.subprocess.DEVNULL if "-d" in args else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as err:
        return 127, str(err)
    out, _ = await proc.communicate(stdin.encode() if stdin is not None else None)
    return proc.returncode or 0, (out or b"").decode(errors="replace").strip()


async def quit_daemons(control: Path, root: Path, uuids: Sequence[str]) -> None:
    """``echo quit | nvidia-cuda-mps-control`` for each GPU's daemon (best effort: it may be gone)."""
    for uuid in uuids:
        code, out = await _control(control, _env(root, uuid), stdin="quit\n")
        log.info("MPS daemon of %s told to quit (exit %d%s)", uuid, code, f": {out}" if code else "")


class MpsSupervisor:
    def __init__(
        self,
        gpus: Sequence[MpsGpu],
        control: Path,
        root: Path,
        *,
        check_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._gpus = tuple(gpus)
        self._control = control
        self._root = root
        self._check_s = check_s
        self._max_backoff_s = max_backoff_s
        self.starts: dict[str, int] = {g.uuid: 0 for g in gpus}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Supervise every daemon until cancelled; then tell each to quit."""
        if not self._gpus:
            return
        try:
            async with asyncio.TaskGroup() as tasks:
                for gpu in self._gpus:
                    tasks.create_task(self._supervise(gpu))
        finally:
            await asyncio.shield(quit_daemons(self._control, self._root, [g.uuid for g in self._gpus]))

    async def _start(self, gpu: MpsGpu) -> bool:
        env = _env(self._root, gpu.uuid)
        for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        self.starts[gpu.uuid] += 1
        code, out = await _control(self._control, env, "-d")
        if code != 0:
            log.error("MPS daemon of %s did not start (%s exited %d): %s", gpu.uuid, self._control, code, out)
            return False
        # The daemon sees one GPU (CUDA_VISIBLE_DEVICES), device 0. Its defaults are a second line behind
        # the clients' environment: a refusal is logged, the daemon still serves.
        for line in (
            f"set_default_active_thread_percentage {gpu.thread_percentage}\n",
            f"set_default_device_pinned_mem_limit 0 {gpu.pinned_memory_mib}M\n",
        ):
            code, out = await _control(self._control, env, stdin=line)
            if code != 0:
                log.warning("MPS daemon of %s refused %r: %s", gpu.uuid, line.strip(), out)
        log.info(
            "MPS daemon of %s started (%d%% threads, %d MiB per client)",
            gpu.uuid,
            gpu.thread_percentage,
            gpu.pinned_memory_mib,
        )
        return True

    async def _healthy(self, gpu: MpsGpu) -> bool:
        code, _ = await _control(
            self._control, _env(self._root, gpu.uuid), stdin="get_default_active_thread_percentage\n"
        )
        return code == 0

    async def _supervise(self, gpu: MpsGpu) -> None:
        failures = 0
        while True:
            if await self._start(gpu):
                failures = 0
                self._mark_ready()
                while await self._healthy(gpu):
                    await asyncio.sleep(self._check_s)
                log.error("MPS daemon of %s stopped answering: starting it again", gpu.uuid)
            failures += 1
            await asyncio.sleep(min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 16)))

    def _mark_ready(self) -> None:
        if all(n > 0 for n in self.starts.values()):
            self.ready.set()
