"""The DRA driver's checkpoint: which claims it prepared, with what, in one JSON file written atomically.

``<state>/dra/checkpoint.json`` (``{"v": 1, "claims": {<uid>: {...}}}``): a claim is recorded *before* its
files are written (``prepared: false``) and marked prepared after, so a plugin that dies anywhere in between
still knows, after its restart, what to remove when the kubelet unprepares the claim, and what to answer
when the kubelet prepares it again. Every save writes a temporary file, fsyncs it and renames it over the
old one: a reader (the next start) sees the old or the new checkpoint, never half of one.

An unreadable checkpoint is kept aside as ``checkpoint.json.corrupt`` and the driver starts empty: unprepare
still finds a claim's files by its UID (:mod:`plugin.dra.prepare`), and the kubelet prepares again what it
still needs.
"""

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from plugin.core.dra import ClaimRef
from plugin.core.dra_plan import PreparedDevice
from vcuda.model import GpuUuid
from vcuda.shimfile import GpuLimit, ShimConfig

__all__ = ["CHECKPOINT_VERSION", "Checkpoint", "Entry"]

log = logging.getLogger(__name__)
CHECKPOINT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One claim as prepare recorded it; ``spec`` is the CDI spec written for it."""

    ref: ClaimRef
    prepared: bool
    dir_name: str
    config: ShimConfig
    devices: tuple[PreparedDevice, ...]
    spec: Mapping[str, Any]


def _config_doc(c: ShimConfig) -> dict[str, Any]:
    gpus = [[g.uuid, g.memory_limit_bytes, g.core_limit, g.soft_limit] for g in c.gpus]
    return {
        "podUID": c.pod_uid,
        "namespace": c.namespace,
        "pod": c.pod_name,
        "container": c.container,
        "gpus": gpus,
    }


def _config(doc: Mapping[str, Any]) -> ShimConfig:
    gpus = tuple(GpuLimit(GpuUuid(u), int(m), int(c), int(s)) for u, m, c, s in doc["gpus"])
    return ShimConfig(doc["podUID"], doc["namespace"], doc["pod"], doc["container"], gpus)


def _device_doc(d: PreparedDevice) -> dict[str, Any]:
    return {
        "requests": list(d.requests),
        "pool": d.pool,
        "device": d.device,
        "cdiIDs": list(d.cdi_ids),
        "shareID": d.share_id,
    }


def _device(doc: Mapping[str, Any]) -> PreparedDevice:
    return PreparedDevice(
        tuple(doc["requests"]), doc["pool"], doc["device"], tuple(doc["cdiIDs"]), doc["shareID"]
    )


def _entry_doc(e: Entry) -> dict[str, Any]:
    return {
        "namespace": e.ref.namespace,
        "name": e.ref.name,
        "prepared": e.prepared,
        "dirName": e.dir_name,
        "config": _config_doc(e.config),
        "devices": [_device_doc(d) for d in e.devices],
        "spec": e.spec,
    }


def _entry(uid: str, doc: Mapping[str, Any]) -> Entry:
    return Entry(
        ClaimRef(doc["namespace"], doc["name"], uid),
        bool(doc["prepared"]),
        doc["dirName"],
        _config(doc["config"]),
        tuple(_device(d) for d in doc["devices"]),
        doc["spec"],
    )


class Checkpoint:
    """The entries in memory and on disk; every change is saved before the method returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, Entry] = self._load()

    def _load(self) -> dict[str, Entry]:
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("v") != CHECKPOINT_VERSION:
                raise ValueError(f"checkpoint version {doc.get('v')!r}, expected {CHECKPOINT_VERSION}")
            return {uid: _entry(uid, e) for uid, e in doc["claims"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.error(
                "DRA checkpoint %s is unreadable (%s): kept as %s, starting empty", self.path, err, aside
            )
            os.replace(self.path, aside)
            return {}

    def get(self, uid: str) -> Entry | None:
        return self._entries.get(uid)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: Entry) -> None:
        self._entries[entry.ref.uid] = entry
        self._save()

    def drop(self, uid: str) -> None:
        if self._entries.pop(uid, None) is not None:
            self._save()

    def _save(self) -> None:
        doc = {"v": CHECKPOINT_VERSION, "claims": {uid: _entry_doc(e) for uid, e in self._entries.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
