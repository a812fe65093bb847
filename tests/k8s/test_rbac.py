"""The chart's RBAC as the real authorizer decides it, and kube-vgpu's annotations against a tenant.

Cases (SubjectAccessReviews for the chart's service accounts, as ``kubectl auth can-i --as`` asks them):
each API call the extender and the plugin make (listed from their code) is allowed; a table of powers
neither needs is denied. The extender and kube-scheduler of this session already run with the tokens of the
accounts the chart gives them, so the scheduling tests prove the same RBAC in use. Against a tenant (a namespace's
``default`` account with full rights on pods in its namespace, authenticated by its own token): creating a pod that
carries the signed-assignment annotation is refused, and so is adding it to a bound pod, once the chart
ships a ValidatingAdmissionPolicy for it.
"""

import json
from typing import Any, Final

import pytest
from kubernetes.client.exceptions import ApiException

from tests.k8s.cluster import NAMES, K8sCluster
from tests.k8s.processes import wait_for

Access = tuple[str, str, str, str]  # verb, resource, subresource, namespace ("" = cluster-wide)

NEEDS: Final[dict[str, list[Access]]] = {
    "extender": [  # extender/kube.py: list+watch nodes and pods, read a pod, create its Binding, read namespaces
        ("list", "nodes", "", ""), ("watch", "nodes", "", ""), ("list", "pods", "", ""),
        ("watch", "pods", "", ""), ("get", "pods", "", "team"), ("create", "pods", "binding", "team"),
        ("get", "namespaces", "", ""),
    ],
    "plugin": [  # plugin/kube.py: its pods, their status annotation, its Node (watched) and status, events
        ("list", "pods", "", ""), ("patch", "pods", "", "team"), ("get", "nodes", "", ""),
        ("list", "nodes", "", ""), ("watch", "nodes", "", ""), ("patch", "nodes", "", ""),
        ("patch", "nodes", "status", ""), ("create", "events", "", "team"),
    ],
}  # fmt: skip
NEVER: Final[list[Access]] = [
    ("get", "secrets", "", "team"), ("list", "secrets", "", ""), ("create", "pods", "", "team"),
    ("delete", "pods", "", "team"), ("delete", "nodes", "", ""), ("update", "pods", "", "team"),
    ("create", "serviceaccounts", "token", "kube-system"), ("impersonate", "users", "", ""),
    ("escalate", "clusterroles", "", ""), ("create", "clusterrolebindings", "", ""),
]  # fmt: skip
NEVER_BY: Final[dict[str, list[Access]]] = {
    "extender": [
        ("patch", "nodes", "", ""),
        ("patch", "pods", "", "team"),
        ("update", "namespaces", "", ""),
        ("list", "namespaces", "", ""),
    ],
    "plugin": [("create", "pods", "binding", "team"), ("watch", "secrets", "", "")],
}


def allowed(k8s: K8sCluster, component: str, access: Access) -> bool:

    verb, resource, subresource, namespace = access
    group = "rbac.authorization.k8s.io" if resource.startswith("cluster") else ""
    attributes = {"verb": verb, "resource": resource, "subresource": subresource, "namespace": namespace,
                  "group": group}  # fmt: skip
    review = {
        "spec": {
            "user": f"system:serviceaccount:kube-system:{k8s.account(component)}",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        }
    }
    answer = k8s.client("AuthorizationV1Api").create_subject_access_review(review)
    return bool(answer.status.allowed)


def _cases(table: dict[str, list[Access]]) -> list[Any]:
    return [
        pytest.param(a, x, id=f"{a}: {' '.join(p for p in x if p)}") for a, xs in table.items() for x in xs
    ]


@pytest.mark.parametrize(("component", "access"), _cases(NEEDS))
def test_chart_rbac_allows_what_the_code_calls(k8s: K8sCluster, component: str, access: Access) -> None:
    assert allowed(k8s, component, access)


@pytest.mark.parametrize(
    ("component", "access"),
    [*_cases({a: NEVER for a in NEEDS}), *_cases(NEVER_BY)],
)
def test_chart_rbac_denies_what_neither_needs(k8s: K8sCluster, component: str, access: Access) -> None:
    assert not allowed(k8s, component, access)


@pytest.fixture(scope="module")
def tenant(k8s: K8sCluster, namespace: str) -> Any:
    """A client authenticated as ``<namespace>:default``, which may do anything to pods in its namespace (what
    the built-in ``edit`` role grants; ``edit`` itself is filled by kube-controller-manager, absent here)."""
    from kubernetes import config

    rbac = k8s.client("RbacAuthorizationV1Api")
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "tenant"}, "rules": rules})
    binding = {
        "metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
    }
    rbac.create_namespaced_role_binding(namespace, binding)
    path = k8s.plane.kubeconfig(f"tenant-{namespace}", token=k8s.token("default", namespace))
    api = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    yield k8s.client("CoreV1Api", api)
    api.close()


def _pod(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    limits = {NAMES.core: "50", NAMES.memory: "1024"}
    return {"metadata": {"name": name, "annotations": annotations},
            "spec": {"containers": [{"name": "c0", "image": "cuda", "resources": {"limits": limits}}]}}  # fmt: skip


def test_tenant_cannot_create_a_pod_with_an_assignment(tenant: Any, namespace: str) -> None:
    forged = json.dumps({"v": 1, "node": "k8s-h100"})
    with pytest.raises(ApiException) as caught:
        tenant.create_namespaced_pod(namespace, _pod("forged", {NAMES.assignment: forged}))
    message = json.loads(str(caught.value.body))["message"]
    assert NAMES.assignment in message or "is written by kube-vgpu only" in message, message


def test_tenant_cannot_annotate_a_bound_pod_with_an_assignment(
    k8s: K8sCluster, core: Any, tenant: Any, namespace: str
) -> None:
    """The webhook sees only CREATE: an UPDATE that adds the annotation is the policy's to refuse."""
    policies = k8s.client("AdmissionregistrationV1Api").list_validating_admission_policy().items
    if not policies:
        pytest.skip(
            "the chart ships no ValidatingAdmissionPolicy yet: an annotation added on UPDATE is not checked"
        )
    tenant.create_namespaced_pod(namespace, _pod("victim", {}))
    wait_for(
        lambda: tenant.read_namespaced_pod("victim", namespace).spec.node_name, timeout_s=60, what="binding"
    )
    patch = {"metadata": {"annotations": {NAMES.assignment: json.dumps({"v": 1})}}}
    with pytest.raises(ApiException) as caught:
        tenant.patch_namespaced_pod("victim", namespace, patch)
    assert caught.value.status in (403, 422)


def test_tenant_cannot_label_its_namespace_for_gpu_translation(tenant: Any, namespace: str) -> None:
    """The translation's trust rule (docs/security.md): only the Namespace's label turns it on, and a tenant
    who may do anything to its pods cannot set it."""
    with pytest.raises(ApiException) as caught:
        tenant.patch_namespace(namespace, {"metadata": {"labels": {NAMES.translation: "enabled"}}})
    assert caught.value.status == 403
