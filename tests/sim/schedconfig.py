"""The extender entry of the shipped ``KubeSchedulerConfiguration``, read the way kube-scheduler reads it.

The SIMULATED scheduler uses ``deploy/scheduler/kube-vgpu-scheduler.yaml`` (the file the Helm chart mounts),
so the demo and the e2e tests exercise the verbs, weight, timeout and ``nodeCacheCapable`` mode that ship;
only ``urlPrefix`` is replaced by the address of the simulated cluster's extender.
"""

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_CONFIG", "ExtenderConfig", "ManagedResource", "SchedulerConfig", "load_scheduler_config"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "scheduler" / "kube-vgpu-scheduler.yaml"
DEFAULT_EXTENDER_TIMEOUT_S = 5.0  # DefaultExtenderTimeout, used when httpTimeout is unset or 0


@dataclass(frozen=True, slots=True)
class ManagedResource:
    name: str
    ignored_by_scheduler: bool


@dataclass(frozen=True, slots=True)
class ExtenderConfig:
    url_prefix: str
    filter_verb: str
    prioritize_verb: str
    bind_verb: str
    weight: int
    node_cache_capable: bool
    http_timeout_s: float
    ignorable: bool
    managed_resources: tuple[ManagedResource, ...]

    def url(self, verb: str) -> str:
        return f"{self.url_prefix.rstrip('/')}/{verb}"

    def is_interested(self, pod: dict[str, Any]) -> bool:
        """kube-scheduler asks an extender only about pods naming one of its managed resources (requests or
        limits, containers or init containers), or about every pod when it manages none."""
        if not self.managed_resources:
            return True
        wanted = {r.name for r in self.managed_resources}
        spec = pod.get("spec") or {}
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            resources = container.get("resources") or {}
            named = set(resources.get("requests") or {}) | set(resources.get("limits") or {})
            if named & wanted:
                return True
        return False


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    scheduler_name: str
    extenders: tuple[ExtenderConfig, ...]

    @property
    def ignored_resources(self) -> frozenset[str]:
        """Resources ``NodeResourcesFit`` does not count (``ignoredByScheduler: true``)."""
        return frozenset(
            r.name for e in self.extenders for r in e.managed_resources if r.ignored_by_scheduler
        )


def _duration_s(raw: object) -> float:
    if raw in (None, "", 0, "0", "0s"):
        return DEFAULT_EXTENDER_TIMEOUT_S
    total, text = 0.0, str(raw)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    for number, unit in re.findall(r"([0-9.]+)(ms|h|m|s)", text):
        total += float(number) * units[unit]
    return total or DEFAULT_EXTENDER_TIMEOUT_S


def _extender(raw: dict[str, Any]) -> ExtenderConfig:
    weight = int(raw.get("weight") or 0)
    if raw.get("prioritizeVerb") and weight <= 0:
        raise ValueError("extender weight must be > 0 when prioritizeVerb is set")
    return ExtenderConfig(
        url_prefix=str(raw["urlPrefix"]),
        filter_verb=str(raw.get("filterVerb") or ""),
        prioritize_verb=str(raw.get("prioritizeVerb") or ""),
        bind_verb=str(raw.get("bindVerb") or ""),
        weight=weight,
        node_cache_capable=bool(raw.get("nodeCacheCapable", False)),
        http_timeout_s=_duration_s(raw.get("httpTimeout")),
        ignorable=bool(raw.get("ignorable", False)),
        managed_resources=tuple(
            ManagedResource(str(m["name"]), bool(m.get("ignoredByScheduler", False)))
            for m in raw.get("managedResources") or []
        ),
    )


def load_scheduler_config(path: Path = DEFAULT_CONFIG, *, url_prefix: str | None = None) -> SchedulerConfig:
    """Read the configuration; ``url_prefix`` (when given) replaces every extender's ``urlPrefix``."""
    doc = yaml.safe_load(path.read_text())
    if (
        doc.get("apiVersion") != "kubescheduler.config.k8s.io/v1"
        or doc.get("kind") != "KubeSchedulerConfiguration"
    ):
        raise ValueError(f"{path}: not a kubescheduler.config.k8s.io/v1 KubeSchedulerConfiguration")
    extenders = tuple(_extender(e) for e in doc.get("extenders") or [])
    if sum(1 for e in extenders if e.bind_verb) > 1:
        raise ValueError("at most one extender may set bindVerb")
    if url_prefix is not None:
        extenders = tuple(replace(e, url_prefix=url_prefix) for e in extenders)
    # Ignorable extenders run last, as kube-scheduler orders them.
    extenders = tuple(sorted(extenders, key=lambda e: e.ignorable))
    profiles = doc.get("profiles") or [{"schedulerName": "default-scheduler"}]
    return SchedulerConfig(scheduler_name=str(profiles[0]["schedulerName"]), extenders=extenders)
