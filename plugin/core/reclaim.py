"""Which per-container directories may be removed. Standard library only.

A directory is kept while *any* source says its pod may still run: the API server lists the pod on this node
(by the directory's pod UID or the UID written in its config), or the kubelet's PodResources lists the
pod by namespace and name. Directories younger than the grace period are kept too (a pod being admitted
has its files before the API or kubelet report it). Only a directory that every source has forgotten is
removed; when a source cannot be read, nothing is removed.
"""

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ContainerDir", "LiveSet", "to_remove"]


@dataclass(frozen=True, slots=True)
class ContainerDir:
    """One ``<state>/containers/<pod-uid>_<container>`` directory as found on disk."""

    name: str
    age_s: float
    config_pod_uid: str | None = None
    config_pod: tuple[str, str] | None = None  # (namespace, name) from the config file

    @property
    def dir_pod_uid(self) -> str:
        return self.name.rpartition("_")[0] or self.name


@dataclass(frozen=True, slots=True)
class LiveSet:
    """Pods that may still run: UIDs from the API server, (namespace, name) pairs from PodResources."""

    uids: frozenset[str]
    pods: frozenset[tuple[str, str]]


def _alive(d: ContainerDir, live: LiveSet) -> bool:
    return (
        d.dir_pod_uid in live.uids
        or (d.config_pod_uid is not None and d.config_pod_uid in live.uids)
        or (d.config_pod is not None and d.config_pod in live.pods)
    )


def to_remove(dirs: Iterable[ContainerDir], live: LiveSet, grace_s: float) -> list[str]:
    """Names of directories no source knows and older than ``grace_s``, sorted."""
    return sorted(d.name for d in dirs if d.age_s >= grace_s and not _alive(d, live))
