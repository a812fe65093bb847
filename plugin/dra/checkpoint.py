"""The DRA driver's checkpoint: the claims it prepared and with what, one JSON file per claim, atomic.

``<state>/dra/claims/<claim-uid>.json`` (``{"v": 1, ...}``): a claim is recorded *before* its files are
written (``prepared: false``) and marked prepared after, so a plugin that dies anywhere in between still
knows, after its restart, what to remove when the kubelet unprepares the claim, and what to answer when the
kubelet prepares it again. A record is written to a temporary name and renamed over the old one: the next
start reads the old or the new record, never half of one. One file per claim keeps a prepare O(1) however
many claims the node holds.

No fsync: a plugin restart keeps the page cache, and what a power loss could take back is recovered without
the record: every file of a claim is named by its UID (unprepare finds them by it), and after a reboot the
kubelet prepares its claims again. An unreadable record is kept aside as ``<uid>.json.corrupt``; its claim
is then unknown, which unprepare handles the same way.
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
    """The records in memory and on disk; every change is on disk before the method returns."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._entries: dict[str, Entry] = self._load()

    def _load(self) -> dict[str, Entry]:
        found = {}
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            uid = path.name.removesuffix(".json")
            try:
                doc = json.loads(path.read_text())
                if doc.get("v") != CHECKPOINT_VERSION:
                    raise ValueError(f"record version {doc.get('v')!r}, expected {CHECKPOINT_VERSION}")
                found[uid] = _entry(uid, doc)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                aside = path.with_name(path.name + ".corrupt")
                log.error("DRA checkpoint record %s is unreadable (%s): kept as %s", path, err, aside)
                os.replace(path, aside)
        return found

    def get(self, uid: str) -> Entry | None:
        return self._entries.get(uid)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: Entry) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{entry.ref.uid}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"v": CHECKPOINT_VERSION, **_entry_doc(entry)}, separators=(",", ":")))
        os.replace(tmp, path)
        self._entries[entry.ref.uid] = entry

    def drop(self, uid: str) -> None:
        (self.folder / f"{uid}.json").unlink(missing_ok=True)
        self._entries.pop(uid, None)
