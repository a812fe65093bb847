"""One MPS control daemon per MPS-shared GPU, started, watched and stopped by the plugin.

For each GPU: ``nvidia-smi -i <uuid> -c EXCLUSIVE_PROCESS`` (``nvidia-smi`` beside the control program; a
GPU that cannot be switched gets no daemon: its clients would not be held by it), then
``nvidia-cuda-mps-control -d`` with ``CUDA_VISIBLE_DEVICES=<uuid>`` and its own
``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY`` under ``<mps-root>/<uuid>/`` (``-d`` forks the daemon
and returns). The defaults every client gets are then set on the daemon itself
(``set_default_active_thread_percentage``, ``set_default_device_pinned_mem_limit 0``: the one GPU the
daemon sees), as NVIDIA's MPS daemon does, so a client that drops its environment is still held to its
share. Health is the control program answering ``get_default_active_thread_percentage``; a daemon that
stops answering is started again with a backoff (0.5 s doubling to 30 s, reset only once a started daemon
has answered: ``-d`` exits 0 before the daemon it forks can die). On shutdown (and
``--uninstall``) each daemon is told ``quit`` and its GPU goes back to ``DEFAULT``.

A plugin SIGKILLed, or whose GPU moved from MPS to another mode, would leave the GPU ``EXCLUSIVE_PROCESS``
(one process: a whole-GPU pod's second process, or vcuda tenants, would fail). So every GPU is recorded in
``<mps-root>/exclusive.json`` before it is switched and removed once it is back to ``DEFAULT``; at start, each
recorded GPU no daemon of this plan serves goes back to ``DEFAULT``. An unreadable record: every GPU of the
node not shared by MPS now goes back (it may have been).

The daemons' and clients' ``/dev/shm`` is ``<mps-root>/shm``: before the daemons start, a previous mount there
is unmounted and what is left removed, then a tmpfs is mounted with ``rw,nosuid,nodev,noexec,relatime,
size=<size>`` (NVIDIA's ``mps-control-daemon mount-shm``; size default half the node's memory, as NVIDIA's):
no setuid program or executable in memory every MPS client shares, bounded, and nothing of a previous run.
When the daemons stop it is unmounted and emptied. A mount that fails (no ``CAP_SYS_ADMIN``) is logged;
the plain directory, emptied, is used then. The mount call is a :class:`Mounter`; :class:`SystemMounter` runs
``mount(8)``/``umount(8)``.
"""

import asyncio
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "EXCLUSIVE_FILE",
    "SHM_OPTIONS",
    "Mounter",
    "MpsGpu",
    "MpsShm",
    "MpsSupervisor",
    "SystemMounter",
    "default_shm_size",
    "quit_daemons",
    "reset_left_exclusive",
]

SHM_OPTIONS = ("rw", "nosuid", "nodev", "noexec", "relatime")
"""NVIDIA's options for the MPS tmpfs; ``size=`` is added."""

EXCLUSIVE_FILE = "exclusive.json"
"""Under the MPS root: the GPUs this plugin set ``EXCLUSIVE_PROCESS`` and has not set back to ``DEFAULT``."""

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


def _smi(control: Path) -> Path:
    """``nvidia-smi`` beside the control program: both are the driver's (``<driver root>/usr/bin``)."""
    return control.parent / "nvidia-smi"


async def _compute_mode(control: Path, uuid: str, mode: str) -> tuple[int, str]:
    return await _control(_smi(control), {**os.environ}, "-i", uuid, "-c", mode)


def _read_exclusive(root: Path) -> frozenset[str] | None:
    """The recorded GPUs; empty when there is no record, None when it is unreadable."""
    try:
        doc = json.loads((root / EXCLUSIVE_FILE).read_text())
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError) as err:
        log.error(
            "the record of GPUs set EXCLUSIVE_PROCESS (%s) is unreadable: %s", root / EXCLUSIVE_FILE, err
        )
        return None
    if not isinstance(doc, list) or not all(isinstance(u, str) for u in doc):
        log.error(
            "the record of GPUs set EXCLUSIVE_PROCESS (%s) is not a list of UUIDs", root / EXCLUSIVE_FILE
        )
        return None
    return frozenset(doc)


def _write_exclusive(root: Path, uuids: Collection[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{EXCLUSIVE_FILE}.tmp"
    tmp.write_text(json.dumps(sorted(uuids)))
    os.replace(tmp, root / EXCLUSIVE_FILE)


def _record(root: Path, add: Collection[str] = (), remove: Collection[str] = ()) -> None:
    """Add and remove GPUs of the record (an unreadable one is rewritten: its GPUs were reset at start)."""
    recorded = _read_exclusive(root) or frozenset()
    changed = (recorded | set(add)) - set(remove)
    if changed != recorded or not (root / EXCLUSIVE_FILE).exists():
        _write_exclusive(root, changed)


async def reset_left_exclusive(
    control: Path, root: Path, *, keep: Collection[str], every: Collection[str]
) -> list[str]:
    """Set back to ``DEFAULT`` each recorded GPU not in ``keep`` (the GPUs MPS shares now); with an unreadable
    record, each of ``every`` not in ``keep``. Answers the GPUs set back; one that fails stays recorded."""
    recorded = _read_exclusive(root)
    stale = sorted((set(every) if recorded is None else recorded) - set(keep))
    done = []
    for uuid in stale:
        code, out = await _compute_mode(control, uuid, "DEFAULT")
        if code == 0:
            log.info(
                "GPU %s: compute mode set back to DEFAULT (left EXCLUSIVE_PROCESS by an MPS daemon)", uuid
            )
            done.append(uuid)
        else:
            log.error("GPU %s: compute mode not set back to DEFAULT (exit %d): %s", uuid, code, out)
    if recorded is None:
        _write_exclusive(root, (set(stale) - set(done)) | (set(every) & set(keep)))
    elif done:
        _record(root, remove=done)
    return done


async def quit_daemons(control: Path, root: Path, uuids: Sequence[str]) -> None:
    """``echo quit | nvidia-cuda-mps-control`` for each GPU's daemon (best effort: it may be gone), then the
    GPU's compute mode back to ``DEFAULT`` (whole GPUs and vcuda shares run several processes)."""
    for uuid in uuids:
        code, out = await _control(control, _env(root, uuid), stdin="quit\n")
        log.info("MPS daemon of %s told to quit (exit %d%s)", uuid, code, f": {out}" if code else "")
        code, out = await _compute_mode(control, uuid, "DEFAULT")
        if code != 0:
            log.error("GPU %s: compute mode not set back to DEFAULT (exit %d): %s", uuid, code, out)
        else:
            _record(root, remove=[uuid])


class Mounter(Protocol):
    def mounted(self, path: Path) -> bool: ...

    def mount_tmpfs(self, path: Path, options: Sequence[str]) -> None:
        """Raises OSError when the mount fails."""

    def unmount(self, path: Path) -> None:
        """Raises OSError when the unmount fails."""


class SystemMounter:
    """``mount -t tmpfs`` and ``umount`` (NVIDIA's, via mount-utils); mounts from /proc/self/mountinfo."""

    def mounted(self, path: Path) -> bool:
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return False
        target = str(path.resolve())
        return any(len(f := line.split()) > 4 and f[4].replace("\\040", " ") == target for line in lines)

    def mount_tmpfs(self, path: Path, options: Sequence[str]) -> None:
        self._run("mount", "-t", "tmpfs", "-o", ",".join(options), "shm", str(path))

    def unmount(self, path: Path) -> None:
        self._run("umount", str(path))

    @staticmethod
    def _run(*argv: str) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise OSError(f"{argv[0]}: {err}") from err
        if done.returncode != 0:
            raise OSError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[:500]}")


def default_shm_size(meminfo: str) -> str:
    """Half of ``MemTotal`` (``/proc/meminfo`` text), NVIDIA's default; 65536k when it cannot be read."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.removeprefix("MemTotal:").split()
            if parts and parts[0].isdigit():
                return f"{int(parts[0]) // 2}{parts[1][0] if len(parts) > 1 else ''}"
    return "65536k"


@dataclass(frozen=True, slots=True)
class MpsShm:
    """The MPS shared memory at ``path`` (``<mps-root>/shm``): a fresh bounded tmpfs while daemons run."""

    path: Path
    size: str
    mounter: Mounter

    def prepare(self) -> bool:
        """Clear what a previous run left, then mount the tmpfs; False (logged) when it cannot be mounted."""
        self.release()
        self.path.mkdir(parents=True, exist_ok=True)
        options = (*SHM_OPTIONS, f"size={self.size}")
        try:
            self.mounter.mount_tmpfs(self.path, options)
        except OSError as err:
            log.warning(
                "MPS shared memory %s is not a tmpfs (%s): the plain directory is used, emptied, with no "
                "size limit and exec allowed; give the plugin CAP_SYS_ADMIN (the chart's privileged pod)",
                self.path,
                err,
            )
            return False
        log.info("MPS shared memory %s: tmpfs %s", self.path, ",".join(options))
        return True

    def release(self) -> None:
        """Unmount every mount at ``path`` (best effort) and remove what is left in the directory."""
        for _ in range(8):  # stacked mounts of earlier runs; bounded
            if not self.mounter.mounted(self.path):
                break
            try:
                self.mounter.unmount(self.path)
            except OSError as err:
                log.error("MPS shared memory %s not unmounted: %s", self.path, err)
                break
        _empty(self.path)


def _empty(folder: Path) -> None:
    """Remove what is in ``folder`` (never following a link out of it)."""
    try:
        entries = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except OSError as err:
            log.warning("cannot remove %s from the MPS shared memory: %s", entry, err)


class MpsSupervisor:
    def __init__(
        self,
        gpus: Sequence[MpsGpu],
        control: Path,
        root: Path,
        *,
        check_s: float = 5.0,
        max_backoff_s: float = 30.0,
        every: Collection[str] = (),
        shm: MpsShm | None = None,
    ) -> None:
        """``every``: the node's GPUs (reset when the record of GPUs left exclusive is unreadable)."""
        self._gpus = tuple(gpus)
        self._every = frozenset(every)
        self._shm = shm
        self._control = control
        self._root = root
        self._check_s = check_s
        self._max_backoff_s = max_backoff_s
        self.starts: dict[str, int] = {g.uuid: 0 for g in gpus}
        self.ready = asyncio.Event()

    async def reset_left(self) -> list[str]:
        """Set back to ``DEFAULT`` the GPUs an earlier run left exclusive that no daemon of this one serves
        (before any resource is served: a whole-GPU pod must not land on an exclusive GPU)."""
        mine = [g.uuid for g in self._gpus]
        return await reset_left_exclusive(self._control, self._root, keep=mine, every=self._every)

    async def run(self) -> None:
        """Supervise every daemon until cancelled; then tell each to quit. The shared memory is set up before
        the first daemon and cleared after the last one stops (not when one of several restarts: they share
        it)."""
        if not self._gpus:
            return
        if self._shm is not None:
            await asyncio.to_thread(self._shm.prepare)
        try:
            async with asyncio.TaskGroup() as tasks:
                for gpu in self._gpus:
                    tasks.create_task(self._supervise(gpu))
        finally:
            await asyncio.shield(self._stop())

    async def _stop(self) -> None:
        await quit_daemons(self._control, self._root, [g.uuid for g in self._gpus])
        if self._shm is not None:
            await asyncio.to_thread(self._shm.release)

    async def _start(self, gpu: MpsGpu) -> bool:
        env = _env(self._root, gpu.uuid)
        for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        self.starts[gpu.uuid] += 1
        # Exclusive-process, as NVIDIA's MPS daemon sets it: the MPS server is then the GPU's one process,
        # so a client that drops CUDA_MPS_PIPE_DIRECTORY cannot run beside it on the bare GPU, unlimited.
        _record(self._root, add=[gpu.uuid])  # before: a SIGKILL after the switch still finds it recorded
        code, out = await _compute_mode(self._control, gpu.uuid, "EXCLUSIVE_PROCESS")
        if code != 0:
            log.error("GPU %s: compute mode not set to EXCLUSIVE_PROCESS (exit %d): %s", gpu.uuid, code, out)
            return False
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
                self._mark_ready()
                while await self._healthy(gpu):
                    failures = 0  # only a daemon that answered was a success: one dying at once backs off
                    await asyncio.sleep(self._check_s)
                log.error("MPS daemon of %s stopped answering: starting it again", gpu.uuid)
            failures += 1
            await asyncio.sleep(min(self._max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 16)))

    def _mark_ready(self) -> None:
        if all(n > 0 for n in self.starts.values()):
            self.ready.set()
