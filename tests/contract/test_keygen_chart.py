"""The assignment signing key pair is made once, in the cluster, by a hook Job (issue 13): no render of the
chart holds key material, so renders are byte-identical (GitOps diffs stay empty), and the Job's RBAC is held
to the one Secret and the one ConfigMap. The Job itself runs against kmock in
tests/integration/extender/test_keygen.py and against a real API server in tests/k8s."""

from pathlib import Path
from typing import Any

import pytest

from tests.contract.test_deploy_chart import VALUE_SETS
from tests.fixtures.chart import CHART, HELM, find, helm, render

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")

Obj = dict[str, Any]
HOOK = "pre-install,pre-upgrade"


@pytest.mark.parametrize("name", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_two_renders_are_byte_identical_and_hold_no_key_material(helm_home: Path, name: str) -> None:
    sets = [f"--set={v}" for v in VALUE_SETS[name]]
    first, second = (
        helm("template", "kube-vgpu", str(CHART), *sets, home=helm_home).stdout for _ in range(2)
    )
    assert first == second
    assert "PRIVATE KEY" not in first
    assert "PUBLIC KEY" not in first
    assert not [
        o for o in render(helm_home, VALUE_SETS[name]) if o["kind"] == "Secret" and "key" in o.get("data", {})
    ]


def test_the_key_job_and_its_rbac_are_hooks_that_run_before_anything_mounts_the_keys(helm_home: Path) -> None:
    objects = render(helm_home, [])
    hooks = [o for o in objects if o["metadata"]["name"] == "kube-vgpu-assignment-keygen"]
    assert sorted(o["kind"] for o in hooks) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    for obj in hooks:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == HOOK
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    weight = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    assert weight["Job"] > max(weight["ServiceAccount"], weight["Role"], weight["RoleBinding"])
    job = find(objects, "Job", "-assignment-keygen")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kube-vgpu-assignment-keygen"
    extender = find(objects, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    image = next(c["image"] for c in extender["containers"] if c["name"] == "extender")
    assert pod["containers"][0]["image"] == image  # the extender's own image
    assert pod["containers"][0]["args"][:4] == [
        "keygen",
        "--namespace=kube-system",
        "--secret=kube-vgpu-assignment-key",
        "--secret-key=key",
    ]
    assert "--public-configmap=kube-vgpu-assignment-public-keys" in pod["containers"][0]["args"]
    # Nothing else renders the keys: the Job owns both objects.
    assert not [
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-assignment-key")
    ]
    assert not [o for o in objects if o["metadata"]["name"].endswith("-assignment-public-keys")]


def test_the_key_job_may_read_only_its_secret_and_write_only_its_configmap(helm_home: Path) -> None:
    role = find(render(helm_home, []), "Role", "-assignment-keygen")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},  # RBAC cannot name a create
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["kube-vgpu-assignment-key"],
            "verbs": ["get"],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["kube-vgpu-assignment-public-keys"],
            "verbs": ["get", "update"],
        },
    ]


def test_extra_public_keys_reach_the_job_through_a_hook_configmap(helm_home: Path) -> None:
    objects = render(helm_home, ["assignmentKey.extraPublicKeys.previous=OLD"])
    extra = find(objects, "ConfigMap", "-assignment-keygen-extra")
    assert extra["data"] == {"previous.pem": "OLD\n"}
    assert extra["metadata"]["annotations"]["helm.sh/hook"] == HOOK
    pod = find(objects, "Job", "-assignment-keygen")["spec"]["template"]["spec"]
    assert "--extra-public-keys=/etc/kube-vgpu/extra-public-keys" in pod["containers"][0]["args"]
    assert pod["volumes"] == [{"name": "extra-public-keys", "configMap": {"name": extra["metadata"]["name"]}}]


def test_an_existing_secret_needs_no_job_and_its_public_keys_come_from_values(helm_home: Path) -> None:
    objects = render(
        helm_home, ["assignmentKey.existingSecret=mine", "assignmentKey.extraPublicKeys.mine=PEM"]
    )
    assert not [o for o in objects if o["kind"] == "Job" and "keygen" in o["metadata"]["name"]]
    assert find(objects, "ConfigMap", "-assignment-public-keys")["data"] == {"mine.pem": "PEM\n"}
    both = render(helm_home, ["assignmentKey.existingSecret=mine", "assignmentKey.existingPublicKeys=theirs"])
    assert not [o for o in both if "assignment" in o["metadata"]["name"]]


def test_existing_public_keys_leave_the_job_only_the_secret(helm_home: Path) -> None:
    objects = render(helm_home, ["assignmentKey.existingPublicKeys=theirs"])
    args = find(objects, "Job", "-assignment-keygen")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--public-configmap", "--extra-public-keys"))]
    role = find(objects, "Role", "-assignment-keygen")
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"secrets"}
