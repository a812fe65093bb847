"""Prepare and unprepare claims: read, plan (:mod:`plugin.core.dra_plan`), write files, keep the checkpoint.

Per claim, never per call: one claim's bad content, unreadable body or failed write is that claim's error
string in the answer; the other claims of the call are prepared all the same. Calls are serialised by one
lock (the checkpoint must see the previous decision); the API reads happen before it, concurrently.

- **Idempotent.** A claim already prepared answers the recorded devices (its files are written again if
  something removed them, e.g. ``/var/run/cdi`` after a reboot); the kubelet retries after a timeout and
  prepares again after its own restart.
- **Crash-safe.** The claim is checkpointed (not yet prepared) before any file is written, and marked
  prepared after. A claim recorded but not prepared is planned again on the next prepare.
- **MIG instances** (a claim of ``mig-<uuid>`` devices) get a CDI spec with the instance's device nodes and
  no shim: no config, no usage directory (the capability minors are read from the driver's ``mig-minors``
  at each prepare, so an instance created since start is found).
- **Unprepare removes everything:** the CDI spec, the state directory (config, usage) and the node record
  directory, found from the checkpoint or, for a claim the checkpoint does not know (the kubelet unprepares
  claims it never finished preparing), by the claim's UID, which names all of them.
"""

import asyncio
import json
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from plugin.cdi import read_mig_minors
from plugin.core.allocate import CONFIG_FILE_NAME, PlanOptions
from plugin.core.cdi import DriverFiles
from plugin.core.dra import ClaimError, ClaimRef, claim_container, read_allocation
from plugin.core.dra_plan import PreparedDevice, check_room, claim_spec, plan_claim
from plugin.core.gpu import Gpu
from plugin.core.mig import MigDevice
from plugin.core.mig_allocate import MIG_MINORS_PATH
from plugin.dra.checkpoint import Checkpoint, Entry
from plugin.dra.claims import ClaimSource
from plugin.kube import KubeError
from plugin.statedir import StateDir

__all__ = ["ClaimPreparer", "DriverInfo", "Outcome"]

log = logging.getLogger(__name__)
_UID_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


@dataclass(frozen=True, slots=True)
class DriverInfo:
    """The driver's node-wide settings."""

    driver: str
    domain: str
    pool: str
    cdi_kind: str
    cdi_dir: Path
    cdi_version: str
    plan: PlanOptions
    files: DriverFiles
    mig_minors: Path = Path(MIG_MINORS_PATH)
    """The driver's MIG capability minors (a test points it elsewhere)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One claim's answer: its devices, or why not."""

    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


class ClaimPreparer:
    def __init__(
        self,
        *,
        info: DriverInfo,
        claims: ClaimSource,
        state: StateDir,
        checkpoint: Checkpoint,
        gpus: Callable[[], Mapping[str, Gpu | MigDevice]],
        unhealthy: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.info = info
        """The driver's settings (a test may point ``mig_minors`` elsewhere before the first prepare)."""
        self._claims = claims
        self._state = state
        self.checkpoint = checkpoint
        self._gpus = gpus
        """This node's shareable GPUs and MIG instances by device name (plugin.core.dra.node_devices)."""
        self._unhealthy = unhealthy
        """UUIDs of GPUs out of service now (the health monitor): new claims on them are refused."""
        self._lock = asyncio.Lock()
        self._unprepared_during: list[set[str]] = []
        """One set per prepare call in flight: the claims unprepared since it began reading (it must not
        prepare them: the kubelet's last word on them was unprepare)."""

    # --- kubelet calls ----------------------------------------------------------------------------

    async def prepare(
        self, refs: Sequence[ClaimRef], expired: Callable[[], bool] = lambda: False
    ) -> dict[str, Outcome]:
        """``expired``: the caller's deadline passed. Then nothing is written: the kubelet has given up on
        this call and may already have unprepared its claims (it retries prepare, with a new call)."""
        todo = [r for r in refs if not self._is_prepared(r)]
        unprepared: set[str] = set()
        self._unprepared_during.append(unprepared)
        try:
            bodies = await asyncio.gather(*(self._read(r) for r in todo))
            read = {r.uid: b for r, b in zip(todo, bodies, strict=True)}
            async with self._lock:
                if expired():
                    log.warning("prepare of %d claims abandoned: the kubelet's deadline passed", len(refs))
                    return {r.uid: Outcome(error="kube-vgpu: the call's deadline passed") for r in refs}
                return {
                    r.uid: _raced(r) if r.uid in unprepared else self._prepare_one(r, read.get(r.uid))
                    for r in refs
                }
        finally:
            self._unprepared_during.remove(unprepared)

    async def unprepare(self, refs: Sequence[ClaimRef]) -> dict[str, str]:
        async with self._lock:
            for waiting in self._unprepared_during:
                waiting.update(r.uid for r in refs)
            return {r.uid: self._unprepare_one(r) for r in refs}

    def restore(self) -> int:
        """At start-up: write again the files of every prepared claim (a reboot empties ``/var/run/cdi``).
        One claim whose files cannot be written is logged and left to the kubelet's next prepare (which
        writes missing files again), never a plugin that cannot start. Returns how many were written."""
        count = 0
        for entry in self.checkpoint:
            if not entry.prepared:
                continue
            try:
                self._write(entry)
                count += 1
            except Exception:  # that claim only: the driver must start to serve the others
                log.exception(
                    "cannot restore the files of claim %s", entry.ref, extra={"claim": str(entry.ref)}
                )
        return count

    def claim_dirs(self) -> dict[tuple[str, str], str]:
        """(namespace, claim name) -> state directory of each prepared claim the shim runs for (the watchdog
        finds a claim's processes by the claims their pods name; the directory may name another pod)."""
        return {(e.ref.namespace, e.ref.name): e.dir_name for e in self.checkpoint if e.config.gpus}

    # --- one claim --------------------------------------------------------------------------------

    def _is_prepared(self, ref: ClaimRef) -> bool:
        entry = self.checkpoint.get(ref.uid)
        return entry is not None and entry.prepared

    async def _read(self, ref: ClaimRef) -> Any:
        try:
            return await self._claims.read(ref)
        except KubeError as err:
            return err

    def _prepare_one(self, ref: ClaimRef, body: Any) -> Outcome:
        try:
            entry = self.checkpoint.get(ref.uid)
            if entry is not None and entry.prepared:
                config = self._state.containers / entry.dir_name / CONFIG_FILE_NAME
                if not self._spec_path(ref.uid).exists() or (entry.config.gpus and not config.exists()):
                    self._write(entry)
                log.info("claim %s is prepared already: the recorded devices", ref, extra={"claim": str(ref)})
                return Outcome(entry.devices)
            if body is None:  # prepared when the call began, unprepared since by a concurrent call
                return _raced(ref)
            if isinstance(body, KubeError):
                raise body
            return Outcome(self._prepare_new(ref, body).devices)
        except (ClaimError, KubeError) as err:
            log.warning("prepare %s failed: %s", ref, err, extra={"claim": str(ref)})
            return Outcome(error=str(err))
        except Exception as err:  # a failed write or a bug: this claim fails, the plugin and the others go on
            log.exception("prepare %s failed", ref, extra={"claim": str(ref)})
            return Outcome(error=f"kube-vgpu: preparing claim {ref} failed: {err}")

    def _prepare_new(self, ref: ClaimRef, body: Any) -> Entry:
        info = self.info
        alloc = read_allocation(body, ref, info.driver, info.domain)
        plan = plan_claim(
            alloc,
            self._gpus(),
            pool=info.pool,
            kind=info.cdi_kind,
            unhealthy=self._unhealthy(),
            minors=read_mig_minors(info.mig_minors),
        )
        check_room(plan, (e.config for e in self.checkpoint if e.ref.uid != ref.uid))
        spec = claim_spec(plan, info.files, info.plan, kind=info.cdi_kind, version=info.cdi_version)
        entry = Entry(ref, False, plan.dir_name, plan.config, plan.devices, spec)
        earlier = self.checkpoint.get(ref.uid)  # a prepare that died half-way, maybe for another owner pod
        if earlier is not None and earlier.dir_name != entry.dir_name:
            self._state.remove([earlier.dir_name])
        self.checkpoint.put(entry)  # before any file: a crash from here on leaves a record to clean up by
        self._write(entry)
        done = Entry(ref, True, entry.dir_name, entry.config, entry.devices, entry.spec)
        self.checkpoint.put(done)
        cores = [f"{g.uuid}:{g.core_limit}%/{g.memory_limit_bytes >> 20}MiB" for g in plan.config.gpus]
        cores += [f"{name.removeprefix(ref.uid + '-')}:whole" for name, _ in plan.migs]
        log.info("prepared claim %s: %s", ref, " ".join(cores), extra={"claim": str(ref)})
        return done

    def _write(self, entry: Entry) -> None:
        if entry.config.gpus:  # MIG instances only: no shim, so no config or usage directory
            self._state.write_files(entry.dir_name, entry.config)
        path = self._spec_path(entry.ref.uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")  # not *.json: runtimes never read a half-written spec
        tmp.write_text(json.dumps(entry.spec, indent=2, sort_keys=True))
        os.replace(tmp, path)

    def _unprepare_one(self, ref: ClaimRef) -> str:
        if not ref.uid or not set(ref.uid) <= _UID_SAFE:
            return f"claim {ref}: UID {ref.uid!r} is not a Kubernetes UID"
        try:
            entry = self.checkpoint.get(ref.uid)
            dirs = [entry.dir_name] if entry else self._dirs_of(ref.uid)
            self._spec_path(ref.uid).unlink(missing_ok=True)
            self._state.remove(dirs)
            self.checkpoint.drop(ref.uid)
            log.info(
                "unprepared claim %s (%s)", ref, "known" if entry else "unknown", extra={"claim": str(ref)}
            )
            return ""
        except Exception as err:  # the kubelet calls again; nothing else is affected
            log.exception("unprepare %s failed", ref, extra={"claim": str(ref)})
            return f"kube-vgpu: unpreparing claim {ref} failed: {err}"

    def _dirs_of(self, uid: str) -> list[str]:
        """State directories named for claim ``uid`` (``<owner>_dra-<uid>``)."""
        return sorted(p.name for p in self._state.containers.glob(f"*_{claim_container(uid)}") if p.is_dir())

    def _spec_path(self, uid: str) -> Path:
        return self.info.cdi_dir / f"{self.info.cdi_kind.replace('/', '-')}_{uid}.json"


def _raced(ref: ClaimRef) -> Outcome:
    """A claim the kubelet unprepared while this prepare call waited: nothing is written for it."""
    return Outcome(error=f"claim {ref} was unprepared while this call waited; try again")
