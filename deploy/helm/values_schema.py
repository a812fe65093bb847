"""Write the chart's ``values.schema.json`` from ``values.yaml`` (``make chart-schema``).

Every mapping of ``values.yaml`` becomes a closed object (``additionalProperties: false``), so a misspelled
key stops ``helm install``; each leaf gets the type of its default, and :data:`OVERRIDES` adds what a default
cannot tell (choices, ranges, patterns). Free-form maps (labels, selectors, resources, affinity) stay open.
A test fails when the committed schema differs from a fresh run: add a value to ``values.yaml``, then run
``make chart-schema``. Usage: ``python deploy/helm/values_schema.py [--check]``.
"""

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "kube-vgpu"
VALUES = CHART / "values.yaml"
OUT = CHART / "values.schema.json"
FREE = {  # free-form objects/lists (Kubernetes structures or user maps)
    "commonLabels",
    "podAnnotations",
    "labels",
    "nodeSelector",
    "affinity",
    "resources",
    "initResources",
    "namespaceSelector",
    "certManagerIssuerRef",
    "alertLabels",
    "tolerations",
    "extraEnv",
    "imagePullSecrets",
    "securityContext",
    "podSecurityContext",
    "topologySpreadConstraints",
    "annotations",
}
PULL: dict[str, Any] = {"enum": ["Always", "IfNotPresent", "Never"]}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
PORT0 = {"type": "integer", "minimum": 0, "maximum": 65535}
ABS = {"type": "string", "pattern": "^/"}
DURATION = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"}
NUMERIC = "^[0-9]+(\\.[0-9]+)?$"  # helm --set passes 0.9 as a string; the templates convert it


def num(**limits: float) -> dict[str, Any]:
    return {"anyOf": [{"type": "number", **limits}, {"type": "string", "pattern": NUMERIC}]}


LABELS_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OVERRIDES: dict[str, dict[str, Any]] = {
    "scheduler.mode": {"enum": ["second", "extender"]},
    "assignmentKey.extraPublicKeys": LABELS_MAP,
    "podSecurity.enforce": {"enum": ["privileged", "baseline", "restricted"]},
    "podSecurity.warn": {"enum": ["privileged", "baseline", "restricted"]},
    "plugin.deviceListStrategy": {"enum": ["envvar", "cdi", "device-specs"]},
    "plugin.deviceIdStrategy": {"enum": ["uuid", "index"]},
    "plugin.mig.strategy": {"enum": ["none", "single", "mixed"]},
    "plugin.logLevel": {"enum": ["debug", "info", "warning", "error"]},
    "extender.logLevel": {"enum": ["debug", "info", "warning", "error"]},
    "extender.nodePolicy": {"enum": ["binpack", "spread"]},
    "extender.gpuPolicy": {"enum": ["binpack", "spread"]},
    "extender.weight": {"type": "integer", "minimum": 1},
    "extender.httpTimeout": DURATION,
    "extender.port": PORT,
    "extender.service.type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "extender.service.nodePort": {"type": "integer", "minimum": 1, "maximum": 65535},
    "webhook.port": PORT,
    "webhook.tls.mode": {"enum": ["certgen", "certManager", "secret"]},
    "webhook.tls.duration": DURATION,
    "webhook.tls.renewBefore": DURATION,
    "extender.metricsPort": PORT,
    "extender.tls.mode": {"enum": ["certManager", "secret"]},
    "extender.tls.duration": DURATION,
    "extender.tls.renewBefore": DURATION,
    "extender.tls.caDuration": DURATION,
    "networkPolicy.metricsFrom": {"type": "array", "items": {"type": "object"}},
    "networkPolicy.schedulerFrom": {"type": "array", "items": {"type": "object"}},
    "webhook.failurePolicy": {"enum": ["Fail", "Ignore"]},
    "webhook.timeoutSeconds": {"type": "integer", "minimum": 1, "maximum": 30},
    "plugin.metricsPort": PORT0,
    "plugin.healthPort": PORT0,
    "plugin.nvidiaDriverRoot": ABS,
    "plugin.kubeletRootDir": ABS,
    "plugin.mig.instanceCount": {"type": "integer", "minimum": 0},
    "plugin.mig.rediscoverSeconds": num(minimum=0),
    "plugin.maxUnavailable": {"type": ["integer", "string"]},
    "plugin.priorityClassName": {"type": "string"},
    "plugin.runtimeClassName": {"type": "string"},
    "plugin.cdiSpecVersion": {"enum": ["0.5.0", "0.6.0", "0.7.0"]},
    "plugin.cdiPrefix": {"type": "string", "pattern": "^$|^[a-z0-9.-]+/[a-zA-Z0-9._-]+$"},
    "plugin.extraArgs": {"type": "array", "items": {"type": "string"}},
    "extender.extraArgs": {"type": "array", "items": {"type": "string"}},
    "scheduler.replicas": {"type": "integer", "minimum": 1},
    "scheduler.kubeScheduler.verbosity": {"type": "integer", "minimum": 0},
    "scheduler.podDisruptionBudget.maxUnavailable": {"type": ["integer", "string"]},
    "metrics.prometheusRule.extenderLatencySeconds": num(exclusiveMinimum=0),
    "resourceDomain": {
        "type": "string",
        "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$",
    },
    # NVIDIA's config file, validated by the plugin at start (docs/nvidia-plugin.md): any mapping here.
    "plugin.nvidiaConfig.config": {"type": "object"},
    "plugin.nvidiaConfig.existingConfigMap": {
        "type": "string",
        "pattern": "^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    },
    "plugin.config.nodeConfig": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "matchLabels": LABELS_MAP,
                "deviceMemoryScaling": num(exclusiveMinimum=0, maximum=1),
            },
            "anyOf": [{"required": ["name"]}, {"required": ["matchLabels"]}],
        },
    },
}


_LEAF_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: a bool is an int in Python
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
)


def schema(value: Any, path: str) -> dict[str, Any]:
    """The schema of one value: an override, a free-form map, a closed object, or its default's type."""
    key = path.rsplit(".", 1)[-1]
    if path in OVERRIDES:
        return dict(OVERRIDES[path])
    if key in FREE:
        return {"type": "array"} if isinstance(value, list) else {"type": "object"}
    if key == "pullPolicy":
        return dict(PULL)
    if isinstance(value, dict):
        properties = {k: schema(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return {"type": "object", "additionalProperties": False, "properties": properties}
    if value is None:
        return {}
    return {"type": next(name for kind, name in _LEAF_TYPES if isinstance(value, kind))}


def render() -> str:
    top = schema(yaml.safe_load(VALUES.read_text()), "")
    top = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "kube-vgpu chart values", **top}
    top["properties"]["global"] = {"type": "object"}  # helm adds it for subcharts/umbrella charts
    return json.dumps(top, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run `make chart-schema`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
