"""The DRA objects kube-vgpu ships or publishes are valid ``resource.k8s.io/v1`` for Kubernetes 1.34 and later.

Cases: every document of ``deploy/examples/dra/`` passes ``kubernetes-validate --strict`` for 1.34 to 1.37, and
each example pod takes its devices from the claim template next to it; the examples ask only for device
classes the chart creates and attributes the driver publishes; the chart with ``dra.enabled`` renders the
``vgpu.<domain>``, ``gpu.<domain>`` and ``mig.<domain>`` DeviceClasses (valid, selecting the driver of the
configured domain), none without it, and refuses a Kubernetes before 1.34; the ResourceSlices the plugin
publishes (8 x H200, a MIG node, a tainted GPU) pass the same validation.
"""

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from plugin.core.gpu import NodeGpus
from plugin.core.resourceslice import SliceOptions, driver_name, pool_specs
from plugin.slicepublisher import slice_object
from tests.builders.mig import a100
from tests.builders.plugin import h200x8
from tests.contract.test_deploy_chart import PLUGIN_RULES, _expand, _rules
from tests.fixtures.chart import HELM, helm, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples" / "dra"
VERSIONS = ("1.34.0", "1.35.0", "1.36.0", "1.37.0")
DRIVER = driver_name("nvidia.com")
CLASSES = {"vgpu.nvidia.com", "gpu.nvidia.com", "mig.nvidia.com"}

Obj = dict[str, Any]


def documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def published() -> list[Obj]:
    node = h200x8("gpu-node-1")
    sick = SliceOptions(driver=DRIVER, node="gpu-node-1", unhealthy={str(node.gpus[3].uuid): "xid-79"},
                        pcie_roots={g.uuid: "pci0000:00" for g in node.gpus})  # fmt: skip
    mig = NodeGpus((a100(0, "3g.20gb", "2g.10gb"),), (), "580.95.05", "13.0")
    specs = pool_specs(node, sick, 1) + pool_specs(mig, dataclasses.replace(sick, node="mig-node"), 4)
    return [
        slice_object(s, {"name": s["nodeName"], "uid": "0f6c8a4e-1c52-4b8e-a2d5-6a3b1f7e9d10"}) for s in specs
    ]


def test_there_are_the_five_examples() -> None:
    names = [p.name for p in example_paths()]
    assert names == [
        "mig-instance.yaml",
        "model-selection.yaml",
        "share.yaml",
        "soft-limit.yaml",
        "two-gpu-nvlink.yaml",
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_documents_are_valid(path: Path, version: str) -> None:
    for doc in documents(path):
        kv.validate(doc, version, strict=True)


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_pod_uses_the_claim_template_beside_it(path: Path) -> None:
    template, pod = documents(path)
    assert (template["kind"], pod["kind"]) == ("ResourceClaimTemplate", "Pod")
    (claim,) = pod["spec"]["resourceClaims"]
    assert claim["resourceClaimTemplateName"] == template["metadata"]["name"]
    assert [c["name"] for c in pod["spec"]["containers"][0]["resources"]["claims"]] == [claim["name"]]


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_examples_name_only_classes_and_attributes_that_exist(path: Path) -> None:
    template = documents(path)[0]
    text = yaml.safe_dump(template)
    attributes = {name for s in published() for d in s["spec"].get("devices", []) for name in d["attributes"]}
    devices = template["spec"]["spec"]["devices"]
    for request in devices["requests"]:
        assert request["exactly"]["deviceClassName"] in CLASSES
    used = set(re.findall(r'attributes\["kube-vgpu\.nvidia\.com"\]\.(\w+)', text))
    used |= {c["matchAttribute"].split("/", 1)[1] for c in devices.get("constraints", [])}
    assert used <= attributes
    for config in devices.get("config", []):
        assert config["opaque"]["driver"] == DRIVER
        assert config["opaque"]["parameters"]["apiVersion"] == "nvidia.com/v1alpha1"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")
class TestChart:
    @pytest.mark.parametrize("version", VERSIONS)
    def test_dra_enabled_renders_valid_device_classes(self, home: Path, version: str) -> None:
        sets = ["dra.enabled=true", "dra.migDeviceClass=true"]
        classes = [o for o in render(home, sets, version) if o["kind"] == "DeviceClass"]
        assert {c["metadata"]["name"] for c in classes} == CLASSES
        for device_class in classes:
            kv.validate(device_class, version, strict=True)

    def test_device_classes_select_the_driver_of_the_domain(self, home: Path) -> None:
        objects = render(home, ["dra.enabled=true", "resourceDomain=example.com"], "1.36.0")
        classes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "DeviceClass"}
        assert set(classes) == {"vgpu.example.com", "gpu.example.com", "mig.example.com"}
        expression = classes["vgpu.example.com"]["spec"]["selectors"][0]["cel"]["expression"]
        assert expression == (
            'device.driver == "kube-vgpu.example.com" && '
            'device.attributes["kube-vgpu.example.com"].type == "gpu"'
        )

    def test_no_device_class_without_dra(self, home: Path) -> None:
        assert not [o for o in render(home, [], "1.36.0") if o["kind"] == "DeviceClass"]

    def test_a_dra_front_end_without_dra_enabled_is_refused(self, home: Path) -> None:
        args = ["template", "kv", str(ROOT / "deploy/helm/kube-vgpu"), "--kube-version", "v1.36.0"]
        done = helm(*args, "--set", "plugin.frontEnd=dra", home=home)
        assert done.returncode != 0
        assert "needs dra.enabled=true" in done.stderr

    def test_dra_on_kubernetes_before_1_34_is_refused(self, home: Path) -> None:
        args = ["template", "kv", str(ROOT / "deploy/helm/kube-vgpu"), "--kube-version", "v1.33.0"]
        done = helm(*args, "--set", "dra.enabled=true", home=home)
        assert done.returncode != 0
        assert "need Kubernetes 1.34 or later" in done.stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_published_resource_slices_are_valid(version: str) -> None:
    for body in published():
        kv.validate(body | {"metadata": body["metadata"] | {"name": "n"}}, version, strict=True)


def test_with_dra_the_plugin_may_write_resource_slices_and_nothing_more(home: Path) -> None:
    roles = [o for o in render(home, ["dra.enabled=true"], "1.36.0") if o["kind"] == "ClusterRole"]
    (plugin,) = [r for r in roles if r["metadata"]["name"].endswith("-plugin")]
    slices = _expand(("resource.k8s.io",), ("resourceslices",), ("list", "create", "update", "delete"))
    assert _rules(plugin) == PLUGIN_RULES | slices


def test_with_dra_a_policy_confines_the_plugin_to_its_own_slices(home: Path) -> None:
    objects = render(home, ["dra.enabled=true", "resourceDomain=example.com"], "1.36.0")
    named = [o for o in objects if o["metadata"]["name"].endswith("-plugin-own-slices")]
    assert sorted(o["kind"] for o in named) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    (policy,) = [o for o in named if o["kind"] == "ValidatingAdmissionPolicy"]
    expression = policy["spec"]["validations"][0]["expression"]
    assert "variables.slice.spec.nodeName == variables.node" in expression
    assert "variables.slice.spec.driver == 'kube-vgpu.example.com'" in expression
    without = render(home, [], "1.36.0")
    assert not [o for o in without if o["metadata"]["name"].endswith("-plugin-own-slices")]


def test_the_simulated_schedulers_device_classes_are_the_charts(home: Path) -> None:
    from tests.builders.dra_claims import CLASSES as SIMULATED
    from tests.sim.dra_scheduler import device_classes

    objects = render(home, ["dra.enabled=true", "dra.migDeviceClass=true"], "1.36.0")
    rendered = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "DeviceClass"}
    assert rendered == {name: c["spec"] for name, c in SIMULATED.items()}
    assert rendered == {c["metadata"]["name"]: c["spec"] for c in device_classes("nvidia.com")}
