"""The chart's rendered objects against the real kube-apiserver (server-side apply; dry runs store nothing).

Cases: every variant of the chart is accepted whole (OpenAPI validation, defaulting, CEL compilation of the
webhooks' match conditions, RBAC escalation checks on the roles it grants), except objects of operators' CRDs
(cert-manager, Prometheus operator: :data:`tests.k8s.chart.OPERATOR_GROUPS`) this control plane lacks; a broken object of the same
chart is refused, so the acceptance means something; the objects the session applied are stored; the
kube-scheduler built from the pinned release accepts the chart's KubeSchedulerConfiguration and refuses a
broken one; the second scheduler holds its leader-election Lease with the chart's RBAC.
"""

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import ApplyError, apply, render, served
from tests.k8s.cluster import SECOND_SCHEDULER, K8sCluster
from tests.k8s.controlplane import BIN_DIR


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param((), id="defaults (second scheduler)"),
        pytest.param(
            ("scheduler.mode=extender", "extender.service.type=NodePort"), id="default-scheduler extender"
        ),
        pytest.param(
            ("webhook.matchConditions=false", "webhook.failurePolicy=Ignore"), id="webhook without CEL"
        ),
        pytest.param(
            ("runtimeClass.create=true", "plugin.deviceListStrategy=cdi"), id="runtime class and CDI"
        ),
        pytest.param(("dra.enabled=true",), id="DRA device classes, RBAC and own-slices policy"),
    ],
)
def test_rendered_chart_is_accepted_by_the_api_server(
    k8s: K8sCluster, tmp_path: Path, settings: tuple[str, ...]
) -> None:
    """A release of its own, so that the dry run creates every object instead of merging into the session's."""
    objects, _operators = served(k8s.api, render(tmp_path, *settings, release="variant"))
    applied = apply(k8s.api, objects, dry_run=True)
    assert [(o["kind"], o["metadata"]["name"]) for o in applied] == [
        (o["kind"], o["metadata"]["name"]) for o in objects
    ]


def _broken_match_condition(objects: list[dict[str, Any]]) -> None:
    hook = next(o for o in objects if o["kind"] == "ValidatingWebhookConfiguration")["webhooks"][0]
    hook["matchConditions"][0]["expression"] = "object.spec.containers.exists(c, c.resources.limits"


def _container_without_image(objects: list[dict[str, Any]]) -> None:
    daemonset = next(o for o in objects if o["kind"] == "DaemonSet")
    del daemonset["spec"]["template"]["spec"]["containers"][0]["image"]


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        pytest.param(
            _broken_match_condition, "compilation failed", id="CEL match condition does not compile"
        ),
        pytest.param(_container_without_image, "image", id="plugin container without image"),
    ],
)
def test_a_broken_chart_object_is_refused(
    k8s: K8sCluster, tmp_path: Path, break_it: Any, message: str
) -> None:
    objects = render(tmp_path, release="broken")
    break_it(objects)
    with pytest.raises(ApplyError, match=message):
        apply(k8s.api, objects, dry_run=True)


def test_the_session_chart_is_stored(k8s: K8sCluster) -> None:
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(k8s.api)  # type: ignore[no-untyped-call]
    for obj in k8s.objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace", "kube-system") if resource.namespaced else None
        stored = resource.get(name=obj["metadata"]["name"], namespace=namespace)
        assert stored.metadata.uid, obj["metadata"]["name"]


def test_the_second_scheduler_holds_its_leader_election_lease(k8s: K8sCluster) -> None:
    """Leader election through the chart's Role: kube-scheduler would not schedule without the Lease."""

    held = k8s.client("CoordinationV1Api").read_namespaced_lease(SECOND_SCHEDULER, "kube-system")
    assert held.spec.holder_identity


def test_kube_scheduler_refuses_a_configuration_with_two_binding_extenders(
    k8s: K8sCluster, tmp_path: Path
) -> None:
    """The check our contract test re-implements, done by kube-scheduler itself: it exits before serving."""
    config_map = next(
        o for o in k8s.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == SECOND_SCHEDULER
    )
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    second = copy.deepcopy(config["extenders"][0])
    second["urlPrefix"] = "http://127.0.0.1:1/other"
    second["managedResources"] = []
    config["extenders"].append(second)
    config["clientConnection"] = {"kubeconfig": str(k8s.plane.admin_kubeconfig)}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(BIN_DIR / "kube-scheduler"), f"--config={path}", "--secure-port=0", "--leader-elect=false"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "only one extender can implement bind" in done.stderr
