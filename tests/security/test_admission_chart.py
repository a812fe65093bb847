"""The chart's admission policies, RBAC and keys, checked the way an attacker would probe them.

- The two ValidatingAdmissionPolicies render for Kubernetes >= 1.30 (the per-version ``kubernetes-validate
  --strict`` run in tests/contract/test_deploy_chart.py checks their schema) and are skipped on 1.29.
- Their CEL is evaluated here with cel-python (a CEL interpreter; the Kubernetes-only ``join`` of the
  message is not evaluated) over AdmissionRequest-shaped activations, case by case: who may set, change or
  remove each internal annotation, and that a plugin writes only its own Node and the pods bound to it. The
  real API server tier (tests/k8s) can apply the same rendered objects.
- RBAC grants exactly the API calls the code makes (found by grepping the adapters for client methods).
- The extender has a service account of its own; kube-scheduler's roles are bound to kube-scheduler's only.
- The key pair the chart's keygen Job makes (run against kmock) works: the Secret's private key signs, the
  ConfigMap's public key verifies (through the real loaders of both components); the plugin mounts no Secret.
"""

import base64
import re
from pathlib import Path
from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from extender.signing import load_signer
from plugin.signing import load_keyring
from tests.fixtures.chart import HELM, ROOT, find, render

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")

Obj = dict[str, Any]
NS = "kube-system"
EXTENDER = f"system:serviceaccount:{NS}:kube-vgpu-extender"
PLUGIN = f"system:serviceaccount:{NS}:kube-vgpu-plugin"
TENANT = "system:serviceaccount:team-a:default"
ASSIGNMENT, STATUS, INVENTORY = (
    "nvidia.com/vgpu-assignment",
    "nvidia.com/vgpu-status",
    "nvidia.com/vgpu-inventory",
)
_ENV = celpy.Environment()


@pytest.fixture(scope="module")
def objects(helm_home: Path) -> list[Obj]:
    return render(helm_home, [])


def policy(objects: list[Obj], suffix: str) -> Obj:
    return find(objects, "ValidatingAdmissionPolicy", suffix)


def evaluate(expression: str, activation: dict[str, Any]) -> Any:
    program = _ENV.program(_ENV.compile(expression))
    return program.evaluate(activation)


def admitted(spec: Obj, request: Obj, obj: Obj | None, old: Obj | None) -> bool:
    """What the API server decides for one request under one policy: match conditions, then variables in
    order, then every validation (all must hold)."""
    activation: dict[str, Any] = {
        "request": json_to_cel(request),
        "object": json_to_cel(obj),
        "oldObject": json_to_cel(old),
    }
    if not all(evaluate(c["expression"], activation) for c in spec.get("matchConditions", [])):
        return True
    variables: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        activation["variables"] = celpy.celtypes.MapType(variables)
        variables[celpy.celtypes.StringType(variable["name"])] = evaluate(variable["expression"], activation)
    activation["variables"] = celpy.celtypes.MapType(variables)
    return all(bool(evaluate(v["expression"], activation)) for v in spec["validations"])


def req(user: str, operation: str, resource: str = "pods", *, name: str = "p", node: str | None = None,
        groups: tuple[str, ...] = ()) -> Obj:  # fmt: skip
    extra = {"authentication.kubernetes.io/node-name": [node]} if node else {}
    return {
        "operation": operation,
        "name": name,
        "resource": {"group": "", "version": "v1", "resource": resource},
        "userInfo": {"username": user, "groups": ["system:authenticated", *groups], "extra": extra},
    }


def pod(annotations: dict[str, str] | None = None, node: str = "n1") -> Obj:
    meta: Obj = {"name": "p", "namespace": "team-a"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"nodeName": node, "containers": []}}


SIGNED = {ASSIGNMENT: '{"v":2,"sig":"genuine"}'}

INTERNAL_CASES = [
    # (id, user, operation, new object, old object, admitted)
    ("tenant creates a pod with an assignment", TENANT, "CREATE", pod(SIGNED), None, False),
    ("tenant creates a pod with a status", TENANT, "CREATE", pod({STATUS: "{}"}), None, False),
    ("tenant creates a plain pod", TENANT, "CREATE", pod(), None, True),
    ("tenant creates a pod with its own annotations", TENANT, "CREATE", pod({"team": "a"}), None, True),
    ("tenant removes its assignment", TENANT, "UPDATE", pod({}), pod(SIGNED), False),
    ("tenant removes every annotation", TENANT, "UPDATE", pod(), pod(SIGNED), False),
    ("tenant edits its assignment", TENANT, "UPDATE", pod({ASSIGNMENT: "{}"}), pod(SIGNED), False),
    ("tenant copies an assignment in", TENANT, "UPDATE", pod(SIGNED), pod({}), False),
    ("tenant writes a status", TENANT, "UPDATE", pod({STATUS: '{"phase":"allocated"}'}), pod(), False),
    ("tenant edits another annotation", TENANT, "UPDATE", pod({**SIGNED, "x": "1"}), pod(SIGNED), True),
    ("extender's Binding carries the assignment", EXTENDER, "CREATE", pod(SIGNED), None, True),
    ("extender writes a status", EXTENDER, "UPDATE", pod({STATUS: "{}"}), pod(), False),
    ("plugin writes its status", PLUGIN, "UPDATE", pod({**SIGNED, STATUS: "{}"}), pod(SIGNED), True),
    ("plugin re-signs an assignment", PLUGIN, "UPDATE", pod({ASSIGNMENT: "{}"}), pod(SIGNED), False),
    ("plugin removes an assignment", PLUGIN, "UPDATE", pod({}), pod(SIGNED), False),
    ("kube-scheduler binds with an assignment", "system:kube-scheduler", "CREATE", pod(SIGNED), None, False),
]


@pytest.mark.parametrize(("user", "operation", "new", "old", "allowed"), [c[1:] for c in INTERNAL_CASES],
                         ids=[c[0] for c in INTERNAL_CASES])  # fmt: skip
def test_only_the_owning_component_writes_each_internal_annotation(
    objects, user, operation, new, old, allowed
):
    spec = policy(objects, "-internal-annotations")["spec"]
    assert admitted(spec, req(user, operation), new, old) is allowed


def test_a_node_inventory_is_the_plugins_alone(objects):
    spec = policy(objects, "-internal-annotations")["spec"]
    node = {"metadata": {"name": "n1", "annotations": {INVENTORY: "{}"}}}
    assert admitted(spec, req(PLUGIN, "UPDATE", "nodes", name="n1"), node, {"metadata": {"name": "n1"}})
    assert not admitted(spec, req("some-admin-tool", "UPDATE", "nodes", name="n1"), node, {"metadata": {}})
    assert admitted(spec, req("root", "UPDATE", "nodes", groups=("system:masters",)), node, {"metadata": {}})


OWN_NODE_CASES = [
    (
        "its own node",
        req(PLUGIN, "UPDATE", "nodes", name="n1", node="n1"),
        {"metadata": {"name": "n1"}},
        True,
    ),
    (
        "another node",
        req(PLUGIN, "UPDATE", "nodes", name="n2", node="n1"),
        {"metadata": {"name": "n2"}},
        False,
    ),
    ("a pod bound to its node", req(PLUGIN, "UPDATE", node="n1"), pod(node="n1"), True),
    ("a pod on another node", req(PLUGIN, "UPDATE", node="n1"), pod(node="n2"), False),
    (
        "a token naming no node",
        req(PLUGIN, "UPDATE", "nodes", name="n1"),
        {"metadata": {"name": "n1"}},
        False,
    ),
    ("creating a pod", req(PLUGIN, "CREATE", node="n1"), pod(node="n1"), False),
    ("someone else (not matched)", req(TENANT, "UPDATE", node="n1"), pod(node="n2"), True),
]


@pytest.mark.parametrize(("request_", "obj", "allowed"), [c[1:] for c in OWN_NODE_CASES],
                         ids=[c[0] for c in OWN_NODE_CASES])  # fmt: skip
def test_a_plugin_writes_only_its_own_node_and_its_pods(objects, request_, obj, allowed):
    spec = policy(objects, "-plugin-own-node")["spec"]
    assert admitted(spec, request_, obj, obj) is allowed


def test_policies_are_bound_to_deny_and_skipped_before_1_30(objects, helm_home):
    bindings = {
        b["spec"]["policyName"]: b for b in objects if b["kind"] == "ValidatingAdmissionPolicyBinding"
    }
    assert set(bindings) == {"kube-vgpu-internal-annotations", "kube-vgpu-plugin-own-node"}
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings.values())
    assert all(policy(objects, s)["spec"]["failurePolicy"] == "Fail" for s in ("-annotations", "-own-node"))
    old = render(helm_home, [], kube_version="1.29.0")
    assert not [o for o in old if o["kind"].startswith("ValidatingAdmissionPolicy")]


def test_a_custom_domain_moves_the_protected_keys(helm_home):
    objs = render(helm_home, ["resourceDomain=gpu.example.com"])
    internal = policy(objs, "-internal-annotations")["spec"]["variables"][0]["expression"]
    assert "'gpu.example.com/vgpu-assignment'" in internal
    assert "nvidia.com" not in internal


# --- RBAC: exactly the calls the code makes ----------------------------------------------------------------

CLIENT_CALLS = {  # kubernetes.client.CoreV1Api method -> (resource, verbs it needs)
    "list_pod_for_all_namespaces": ("pods", {"list"}),
    "patch_namespaced_pod": ("pods", {"patch"}),
    "read_namespaced_pod": ("pods", {"get"}),
    "read_node": ("nodes", {"get"}),
    "read_namespace": ("namespaces", {"get"}),
    "list_node": ("nodes", {"list"}),
    "patch_node": ("nodes", {"patch"}),
    "patch_node_status": ("nodes/status", {"patch"}),
    "create_namespaced_event": ("events", {"create"}),
    "create_namespaced_pod_binding": ("pods/binding", {"create"}),
    "create_namespaced_pod_eviction": ("pods/eviction", {"create"}),
    "read_namespaced_resource_claim": ("resourceclaims", {"get"}),  # ResourceV1Api (plugin/dra/claims.py)
}
OPTIONAL = {("pods/eviction", "create")}
"""The plugin's watchdog evicts only with ``--watchdog-evict``, which the chart does not set: not granted."""


def called(package: str) -> set[tuple[str, str]]:
    """Every API call in the package's code (``kube_vgpu_kubectl`` runs as the user: not scanned)."""
    found: set[tuple[str, str]] = set()
    for source in (ROOT / package).rglob("*.py"):
        for method in re.findall(r"\b(?:_core|_resource|CoreV1Api\([^)]*\))\.(\w+)", source.read_text()):
            resource, verbs = CLIENT_CALLS[method]  # a new call must be added here and to the chart
            found |= {(resource, v) for v in verbs}
    return found


def granted(role: Obj) -> set[tuple[str, str]]:
    return {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}


def test_the_plugin_is_granted_exactly_what_its_code_calls(objects):
    watches = {("nodes", "watch")}  # NodePublisher watches its Node (list_node with watch=True)
    assert granted(find(objects, "ClusterRole", "-plugin")) == (called("plugin") - OPTIONAL) | watches


def test_the_extender_is_granted_exactly_what_its_code_calls_plus_watches(objects):
    watches = {("nodes", "watch"), ("pods", "watch")}  # Watcher streams the lists it makes
    assert granted(find(objects, "ClusterRole", "-extender")) == called("extender") | watches


@pytest.mark.parametrize("mode", ["second", "extender"])
def test_the_extender_runs_under_its_own_service_account(helm_home, mode):
    objs = render(helm_home, [f"scheduler.mode={mode}", "extender.service.type=NodePort"])
    binding = find(objs, "ClusterRoleBinding", "kube-vgpu-extender")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kube-vgpu-extender", "namespace": NS}]
    pod = find(objs, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    extender = next(c for c in pod["containers"] if c["name"] == "extender")
    if mode == "extender":
        assert pod["serviceAccountName"] == "kube-vgpu-extender"
        assert not [
            o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"].endswith("-scheduler")
        ]
        return
    assert pod["serviceAccountName"] == "kube-vgpu-scheduler"  # kube-scheduler's
    token = next(
        m
        for m in extender["volumeMounts"]
        if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    )
    volume = next(v for v in pod["volumes"] if v["name"] == token["name"])
    secret = find(objs, "Secret", volume["secret"]["secretName"])
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "kube-vgpu-extender"
    scheduler_bindings = [
        b for b in objs if b["kind"] == "ClusterRoleBinding" and b["roleRef"]["name"].startswith("system:")
    ]
    assert scheduler_bindings
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "kube-vgpu-scheduler", "namespace": NS}]
        for b in scheduler_bindings
    )


def test_pod_security_labels_for_the_release_namespace(helm_home):
    objs = render(helm_home, ["podSecurity.manageNamespace=true"])
    labels = find(objs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "baseline"
    assert not [o for o in render(helm_home, []) if o["kind"] == "Namespace"]


# --- keys ----------------------------------------------------------------------------------------------------


def _keys_made_by_the_chart_job(objs: list[Obj], tmp_path: Path) -> tuple[Path, Path]:
    """Runs the chart's keygen Job (its rendered args, the real entry point) against kmock; the private key
    file and a directory of the public-keys ConfigMap's files, as the extender and the plugin mount them."""
    from tests.fakes.kmock import KmockCluster
    from tests.keygen_job import kubeconfig_for, run_keygen_job

    with KmockCluster() as cluster:
        assert run_keygen_job(objs, kubeconfig_for(cluster.url, tmp_path / "kubeconfig"), tmp_path) == 0
        core = cluster.core()
        secret = core.read_namespaced_secret("kube-vgpu-assignment-key", NS)
        public = core.read_namespaced_config_map("kube-vgpu-assignment-public-keys", NS)
    private = tmp_path / "key"
    private.write_bytes(base64.b64decode(secret.data["key"]))
    public_dir = tmp_path / "public"
    public_dir.mkdir()
    for name, text in public.data.items():
        (public_dir / name).write_text(text)
    return private, public_dir


def test_the_generated_key_pair_signs_and_verifies_through_both_loaders(objects, tmp_path):
    private, public_dir = _keys_made_by_the_chart_job(objects, tmp_path)
    signer = load_signer(private)
    keyring = load_keyring(public_dir)
    assert keyring.key_ids == {signer.key_id}
    assert keyring.verify(signer.key_id, b"payload", signer.sign(b"payload"))


def test_a_rotation_window_ships_both_public_keys(helm_home, tmp_path):
    from tests.signing_keys import OTHER_SIGNER, public_pem

    old = tmp_path / "old.pem"
    old.write_bytes(public_pem(OTHER_SIGNER))
    objs = render(helm_home, [f"assignmentKey.extraPublicKeys.previous={old.read_text()}"])
    private, public_dir = _keys_made_by_the_chart_job(objs, tmp_path)
    assert {p.name for p in public_dir.iterdir()} == {"signing.pem", "previous.pem"}
    assert load_keyring(public_dir).key_ids == {OTHER_SIGNER.key_id, load_signer(private).key_id}


def _slice(node: str | None, driver: str = "kube-vgpu.nvidia.com") -> Obj:
    spec: Obj = {"driver": driver, "pool": {"name": node or "x", "generation": 1, "resourceSliceCount": 1}}
    return {"metadata": {"name": "s"}, "spec": spec | ({"nodeName": node} if node else {"allNodes": True})}


OWN_SLICE_CASES = [
    # (id, request, new object, old object, admitted)
    ("creating its node's slice", req(PLUGIN, "CREATE", "resourceslices", node="n1"), _slice("n1"), None, True),
    ("updating its node's slice", req(PLUGIN, "UPDATE", "resourceslices", node="n1"), _slice("n1"), _slice("n1"), True),
    ("deleting its node's slice", req(PLUGIN, "DELETE", "resourceslices", node="n1"), None, _slice("n1"), True),
    ("creating another node's slice", req(PLUGIN, "CREATE", "resourceslices", node="n1"), _slice("n2"), None, False),
    ("deleting another node's slice", req(PLUGIN, "DELETE", "resourceslices", node="n1"), None, _slice("n2"), False),
    ("a slice of another driver", req(PLUGIN, "CREATE", "resourceslices", node="n1"),
     _slice("n1", "gpu.nvidia.com"), None, False),
    ("a slice for all nodes", req(PLUGIN, "CREATE", "resourceslices", node="n1"), _slice(None), None, False),
    ("a token naming no node", req(PLUGIN, "CREATE", "resourceslices"), _slice("n1"), None, False),
    ("someone else (not matched)", req(TENANT, "CREATE", "resourceslices", node="n1"), _slice("n2"), None, True),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "new", "old", "allowed"), [c[1:] for c in OWN_SLICE_CASES],
                         ids=[c[0] for c in OWN_SLICE_CASES])  # fmt: skip
def test_with_dra_a_plugin_writes_only_its_own_nodes_resource_slices(helm_home, request_, new, old, allowed):
    objects = render(helm_home, ["dra.enabled=true"], "1.36.0")
    spec = find(objects, "ValidatingAdmissionPolicy", "-plugin-own-slices")["spec"]
    assert admitted(spec, request_, new, old) is allowed


# --- nvidia.com/gpu translation: who reaches the translating webhook, and what the policies say after ----------


def _stock(limits: Obj, field: str = "containers") -> Obj:
    spec: Obj = {"containers": [{"name": "app", "image": "x"}]}
    spec[field] = [{"name": "c", "image": "x", "resources": {"limits": limits}}]
    return {"metadata": {"name": "p", "namespace": "ml"}, "spec": spec}


def _translating(objects: list[Obj]) -> Obj:
    mutating = find(objects, "MutatingWebhookConfiguration")
    names = [w["name"] for w in mutating["webhooks"]]
    assert names[0] == "translate.vcuda.kube-vgpu.io"  # first: the schedulerName webhook sees vcuda-core
    webhook: Obj = mutating["webhooks"][0]
    return webhook


@pytest.mark.parametrize(
    ("pod_", "matched"),
    [
        pytest.param(_stock({"nvidia.com/gpu": "1"}), True, id="app-container"),
        pytest.param(_stock({"nvidia.com/gpu": "1"}, "initContainers"), True, id="init-container"),
        pytest.param(_stock({"cpu": "1"}), False, id="cpu-only"),
        pytest.param(_stock({"nvidia.com/vcuda-core": "30"}), False, id="vcuda-only"),
        pytest.param(_stock({"nvidia.com/gpu.shared": "1"}), False, id="renamed-replica"),
    ],
)
def test_the_translating_webhook_sees_nvidia_gpu_pods_only(objects, pod_, matched):
    conditions = _translating(objects)["matchConditions"]
    activation = {"object": json_to_cel(pod_)}
    assert all(evaluate(c["expression"], activation) for c in conditions) is matched


def test_the_translating_webhook_sees_labelled_namespaces_only(objects):
    selector = _translating(objects)["namespaceSelector"]
    assert selector["matchLabels"] == {"nvidia.com/gpu-translation": "enabled"}
    # webhook.namespaceSelector still holds
    assert selector["matchExpressions"][0]["values"] == ["kube-system"]
    assert _translating(objects)["clientConfig"]["service"]["path"] == "/mutate"


def test_without_translation_the_extender_reads_no_namespace(helm_home):
    objs = render(helm_home, ["webhook.translation=false"])
    assert ("namespaces", "get") not in granted(find(objs, "ClusterRole", "-extender"))
    mutating = find(objs, "MutatingWebhookConfiguration")
    assert [w["name"] for w in mutating["webhooks"]] == ["mutate.vcuda.kube-vgpu.io"]
    extender = find(objs, "Deployment", "-scheduler")["spec"]["template"]["spec"]["containers"]
    assert not [a for c in extender for a in c.get("args", []) if "translation" in a]


def test_a_translated_pod_passes_the_admission_policies(objects):
    translated = _stock({"nvidia.com/vcuda-core": "100"})
    spec = policy(objects, "-internal-annotations")["spec"]
    assert admitted(spec, req(TENANT, "CREATE"), translated, None)
