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

The chart is rendered with helm v3.21.4, built from its Go module by ``make build`` into ``build/helm/bin``
(``mk/chart.mk``); everything runs offline.
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from extender.settings import load_settings as load_extender_settings
from plugin.settings import load_settings as load_plugin_settings
from tests.fixtures.chart import CHART, HELM, ROOT, Obj, find, helm, render

KUBERNETES_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("selector", "endpoints"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("selector", "podMetricsEndpoints"),
    ("cert-manager.io/v1", "Certificate"): ("secretName", "issuerRef", "dnsNames"),
    ("cert-manager.io/v1", "Issuer"): (),  # selfSigned or ca: test_every_issuer_is_self_signed_or_a_ca
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("groups",),
}

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")


VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "extender mode, cert-manager TLS, monitoring, CDI, MIG mixed": [
        "scheduler.mode=extender",
        "extender.service.type=NodePort",
        "webhook.tls.mode=certManager",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
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
        "plugin.config.nodeConfig[1].matchLabels.nvidia\\.com/vgpu\\.config=big",
        "plugin.config.nodeConfig[1].deviceMemoryScaling=0.5",
        "plugin.gfdCoexistence=true",
        "plugin.runtimeClassName=nvidia",
        "plugin.extraArgs[0]=--health-probe-seconds=1",
        "assignmentKey.existingSecret=my-key",
        "assignmentKey.existingPublicKeys=my-public-keys",
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
        "metrics.podMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
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
    """Through a file: ``kubernetes-validate -`` reads standard input only for its first ``-k`` version.
    Rendered for the oldest version, so every object exists in every schema checked (the admission policies,
    Kubernetes >= 1.30, are checked per version above)."""
    rendered = helm(
        "template",
        "kube-vgpu",
        str(CHART),
        "--namespace",
        "kube-system",
        "--kube-version",
        f"v{KUBERNETES_VERSIONS[0]}",
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
        pytest.param("scheduler.mode=third", "/scheduler/mode", id="unknown scheduler mode"),
        pytest.param(
            "plugin.deviceListStrategy=volume", "/plugin/deviceListStrategy", id="unknown device list"
        ),
        pytest.param("plugin.mig.strategy=all", "/plugin/mig/strategy", id="unknown MIG strategy"),
        pytest.param("extender.weight=0", "'/extender/weight': minimum: got 0, want 1", id="weight 0"),
        pytest.param("extender.httpTimeout=30", "/extender/httpTimeout", id="timeout without unit"),
        pytest.param("extender.gpuPolicy=random", "one of 'binpack', 'spread'", id="unknown GPU policy"),
        pytest.param("webhook.tls.mode=self", "/webhook/tls/mode", id="unknown TLS mode"),
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


PLUGIN_RULES = (  # plugin/kube.py's calls, no more (tests/security/test_admission_chart.py greps them)
    _expand(("",), ("pods",), ("list", "patch"))
    | _expand(("",), ("nodes",), ("get", "list", "watch", "patch"))  # its Node's watch (plugin/node.py)
    | _expand(("",), ("nodes/status",), ("patch",))
    | _expand(("",), ("events",), ("create",))
    | _expand(("resource.k8s.io",), ("resourceclaims",), ("get",))  # the DRA driver (plugin/dra/claims.py)
)
EXTENDER_RULES = (  # extender/kube.py's calls, no more
    _expand(("",), ("nodes",), ("list", "watch"))
    | _expand(("",), ("pods",), ("get", "list", "watch"))  # the assignment rides on the Binding
    | _expand(("",), ("pods/binding",), ("create",))
    | _expand(("",), ("namespaces",), ("get",))  # the translation label (webhook.translation, on by default)
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
    roles = [o for o in default_objects if o["kind"] in ("ClusterRole", "Role")]
    # The install-time certgen and keygen hooks are the exceptions, held to their own secrets (see their tests).
    hooks = ("-webhook-certgen", "-assignment-keygen")
    for role in (r for r in roles if not r["metadata"]["name"].endswith(hooks)):
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
    assert "nodeSelector" not in pod
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in plugin["env"]
    assert {p["containerPort"] for p in plugin["ports"]} == {9400, 9401}
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
    assert mounts[args["assignment-key-file"]] == "kube-vgpu-assignment-public-keys"  # public keys only
    assert not [v for v in pod["volumes"] if "secret" in v], "a node must hold no secret key"
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
    assert config == {
        "version": "v1",
        "nodeConfig": [
            {"name": "gpu-node-1", "deviceMemoryScaling": 0.9},
            {"matchLabels": {"nvidia.com/vgpu.config": "big"}, "deviceMemoryScaling": 0.5},
        ],
    }


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
    assert _mounts(pod, extender)[args["assignment-verify-keys"]] == "kube-vgpu-assignment-public-keys"
    assert extender["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert extender["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_extender_mode_runs_leader_elected_extenders_without_a_scheduler(helm_home: Path) -> None:
    objects = render(
        helm_home, ["scheduler.mode=extender", "extender.service.type=NodePort", "scheduler.replicas=3"]
    )
    deployment = find(objects, "Deployment", "-scheduler")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # a new standby is never ready: no rolling
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]  # it would block the leader's drain
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["extender"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--leader-elect=true", "--leader-elect-resource-name=kube-vgpu-extender",
            "--leader-elect-lease-duration-seconds=15", "--leader-elect-renew-deadline-seconds=10",
            "--leader-elect-retry-period-seconds=2"} <= set(args)  # fmt: skip
    rules = find(objects, "Role", "-extender-leader-election")["rules"]
    assert {"verbs": ["create"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]} in rules
    named = [r for r in rules if r.get("resourceNames")]
    assert [(r["resourceNames"], r["verbs"]) for r in named] == [(["kube-vgpu-extender"], ["get", "update"])]
    single = render(
        helm_home, ["scheduler.mode=extender", "scheduler.leaderElect=false", "scheduler.replicas=1"]
    )
    deployment = find(single, "Deployment", "-scheduler")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not [a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"] if "leader" in a]
    # No schedulerName mutation without a second scheduler; only the opt-in nvidia.com/gpu translation.
    mutating = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    assert [w["name"] for o in mutating for w in o["webhooks"]] == ["translate.vcuda.kube-vgpu.io"]
    ports = find(objects, "Service", "-extender")["spec"]["ports"]
    assert {
        "name": "extender",
        "port": 8888,
        "targetPort": "extender",
        "protocol": "TCP",
        "nodePort": 32766,
    } in ports


def test_webhooks_call_the_extender_service_paths(default_objects: list[Obj]) -> None:
    paths = {
        kind: find(default_objects, kind)["webhooks"][0]["clientConfig"]["service"]["path"]
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    }
    assert paths == {"ValidatingWebhookConfiguration": "/validate", "MutatingWebhookConfiguration": "/mutate"}
    service = find(default_objects, "Service", "-extender")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (
            8889,
            "http",
        ),  # metrics and health only; the verbs stay on the pod's loopback in second mode
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
    "alertLabels",
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


# --- issue 13: schema, affinity, probes, monitors, alerts, PDB, per-node config by label ---

MONITORING = ["metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param("plugin.nodeSelecter.a=b", "additional properties 'nodeSelecter'", id="misspelled key"),
        pytest.param("pluginn.enabled=false", "additional properties 'pluginn'", id="misspelled section"),
        pytest.param("plugin.metricsPort=abc", "'/plugin/metricsPort': got string", id="port not a number"),
        pytest.param("plugin.enabled=yes", "'/plugin/enabled': got string", id="bool as a word"),
        pytest.param("webhook.timeoutSeconds=60", "'/webhook/timeoutSeconds': maximum", id="timeout over 30"),
        pytest.param("plugin.nvidiaDriverRoot=run/nvidia", "does not match pattern", id="relative root"),
        pytest.param(
            "plugin.config.nodeConfig[0].deviceMemoryScaling=0.5", "missing property 'name'", id="no selector"
        ),
    ],
)
def test_the_values_schema_refuses_misspelled_keys_and_bad_types(
    helm_home: Path, setting: str, message: str
) -> None:
    done = helm(
        "template", "kube-vgpu", str(CHART), "--kube-version", "v1.31.0", "--set", setting, home=helm_home
    )
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr


def test_the_values_schema_is_fresh_from_values_yaml() -> None:
    """Every value is in the schema, typed and closed: a new value needs `make chart-schema`."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy/helm/values_schema.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_plugin_runs_on_nodes_nfd_gfd_or_the_old_label_mark(default_objects: list[Obj]) -> None:
    pod = find(default_objects, "DaemonSet", "-plugin")["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    ored = [(t["matchExpressions"][0]["key"], t["matchExpressions"][0]["values"]) for t in terms]
    assert ored == [
        ("feature.node.kubernetes.io/pci-10de.present", ["true"]),
        ("nvidia.com/gpu.present", ["true"]),
        ("nvidia-device-enable", ["enable"]),
    ]
    assert all(len(t["matchExpressions"]) == 1 for t in terms)  # each term alone selects: OR, not AND


def test_the_plugin_has_liveness_and_readiness_probes_on_its_health_port(default_objects: list[Obj]) -> None:
    plugin = find(default_objects, "DaemonSet", "-plugin")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in plugin["ports"]}
    assert ports["health"] == int(_args(plugin)["health-port"])
    assert plugin["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert plugin["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    startup = plugin["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # NVML + MIG partitioning at start
    assert plugin["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert _args(plugin)["gfd-coexistence"] == "false"


@pytest.mark.parametrize("kind", ["serviceMonitor", "podMonitor"])
def test_monitors_keep_the_exporters_workload_labels(helm_home: Path, kind: str) -> None:
    objects = render(helm_home, [f"metrics.{kind}.enabled=true"])
    monitors = [o for o in objects if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    assert {o["kind"] for o in monitors} == {kind[0].upper() + kind[1:]}
    for monitor in monitors:
        endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
        assert [e["honorLabels"] for e in endpoints] == [True] * len(endpoints)


def test_both_monitors_at_once_are_refused(helm_home: Path) -> None:
    done = helm(
        "template", "kube-vgpu", str(CHART), "--kube-version", "v1.31.0",
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
        home=helm_home,
    )  # fmt: skip
    assert done.returncode != 0
    assert "turn on one of them, not both" in done.stderr


def _exported_names() -> set[str]:
    """Every ``kube_vgpu_*`` family the exporters define (source text), with the suffixes Prometheus adds."""
    import re

    text = "".join(
        p.read_text() for p in [*(ROOT / "plugin" / "metrics").glob("*.py"), ROOT / "extender/metrics.py"]
    )
    prefixes = {"p": "kube_vgpu_container_", "PREFIX": "kube_vgpu_extender"}
    names = set(re.findall(r'"(kube_vgpu_[a-z_]+)"', text))
    for prefix_var, value in prefixes.items():
        names |= {value + m for m in re.findall(rf'{prefix_var} \+ "([a-z_]+)"', text)}
        names |= {value + "_" + m for m in re.findall(r'f"\{PREFIX\}_([a-z_]+)"', text)}
    names |= {"kube_vgpu_gpu_" + m for m in re.findall(r'p \+ "([a-z_]+)"', text)}
    names |= {"kube_vgpu_exporter_" + m for m in re.findall(r'p \+ "([a-z_]+)"', text)}
    return names


def test_the_alerts_cover_the_operators_questions_with_metrics_that_exist(helm_home: Path) -> None:
    import re

    rule = find(render(helm_home, MONITORING), "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "KubeVgpuGpuUnhealthy",
        "KubeVgpuAttributionMismatch",
        "KubeVgpuLimitViolations",
        "KubeVgpuExtenderErrors",
        "KubeVgpuExtenderSlow",
        "KubeVgpuPluginDown",
    } <= set(alerts)
    exported = _exported_names()
    used = {n for expr in alerts.values() for n in re.findall(r"kube_vgpu_[a-z_]+", expr)}
    unknown = {n for n in used if re.sub(r"_(total|bucket|sum|count)$", "", n) not in exported}
    assert unknown == set()
    assert "kube_vgpu_container_limit_violations_total" in used
    assert 'up{job="kube-vgpu-plugin-metrics"}' in alerts["KubeVgpuPluginDown"]


def test_the_scheduler_has_a_disruption_budget_that_never_blocks_a_single_replica(
    default_objects: list[Obj],
) -> None:
    pdb = find(default_objects, "PodDisruptionBudget", "-scheduler")
    pod_labels = find(default_objects, "Deployment", "-scheduler")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_per_node_config_is_selected_by_a_node_label(helm_home: Path, tmp_path: Path) -> None:
    objects = render(helm_home, VALUE_SETS["extender mode, cert-manager TLS, monitoring, CDI, MIG mixed"])
    config = tmp_path / "config.yaml"
    config.write_text(find(objects, "ConfigMap", "-plugin")["data"]["config.yaml"])
    labelled = {"nvidia.com/vgpu.config": "big"}
    argv = [f"--config-file={config}"]
    for node, labels, scaling in [
        ("gpu-node-7", labelled, 0.5),  # an autoscaled node: its label picks the config
        ("gpu-node-7", {}, 1.0),
        ("gpu-node-1", labelled, 0.9),  # the entry naming the node applies after the label's
    ]:
        settings = load_plugin_settings([*argv, f"--node-name={node}"], env={}, node_labels=labels)
        assert settings.device_memory_scaling == scaling, (node, labels)


# --- the extender's listeners, certificates and network policy (issue 11) -----------------------------------


def test_every_issuer_is_self_signed_or_a_ca(helm_home: Path) -> None:
    objects = render(helm_home, VALUE_SETS["extender mode, cert-manager TLS, monitoring, CDI, MIG mixed"])
    issuers = [o for o in objects if o["kind"] == "Issuer"]
    assert issuers
    assert all(set(o["spec"]) & {"selfSigned", "ca"} for o in issuers)


def test_the_certgen_hook_holds_only_its_own_secret_and_the_webhooks(default_objects: list[Obj]) -> None:
    role = find(default_objects, "Role", "-webhook-certgen")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["kube-vgpu-webhook-tls"],
            "verbs": ["get"],
        },
    ]
    cluster_role = find(default_objects, "ClusterRole", "-webhook-certgen")
    assert [r["resourceNames"] for r in cluster_role["rules"]] == [["kube-vgpu"]]
    jobs = [o for o in default_objects if o["kind"] == "Job" and "-webhook-certgen" in o["metadata"]["name"]]
    assert [j["spec"]["template"]["spec"]["containers"][0]["args"][0] for j in jobs] == ["create", "patch"]
    assert all("hook-succeeded" in j["metadata"]["annotations"]["helm.sh/hook-delete-policy"] for j in jobs)


def test_no_certificate_or_key_is_generated_by_a_render(helm_home: Path) -> None:
    for values in VALUE_SETS.values():
        text = helm(
            "template", "kube-vgpu", str(CHART), *[f"--set={v}" for v in values], home=helm_home
        ).stdout
        assert "BEGIN CERTIFICATE" not in text
        assert "PRIVATE KEY" not in text


def test_certificates_have_an_explicit_duration(helm_home: Path) -> None:
    objects = render(helm_home, VALUE_SETS["extender mode, cert-manager TLS, monitoring, CDI, MIG mixed"])
    certificates = [o for o in objects if o["kind"] == "Certificate"]
    assert len(certificates) == 4  # webhook, extender CA, extender serving, kube-scheduler client
    assert all(c["spec"]["duration"] and c["spec"]["renewBefore"] for c in certificates)


def test_the_verbs_listen_on_loopback_in_second_mode_and_behind_mutual_tls_in_extender_mode(
    helm_home: Path, default_objects: list[Obj]
) -> None:
    pod = find(default_objects, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    extender = next(c for c in pod["containers"] if c["name"] == "extender")
    second = load_extender_settings(extender["args"], env={})
    assert (second.host, second.scheduler_client_ca_file, second.metrics_port) == ("127.0.0.1", None, 8889)
    assert {p["name"] for p in extender["ports"]} == {"http", "webhook"}
    objects = render(helm_home, VALUE_SETS["extender mode, cert-manager TLS, monitoring, CDI, MIG mixed"])
    pod = find(objects, "Deployment", "-scheduler")["spec"]["template"]["spec"]
    extender = next(c for c in pod["containers"] if c["name"] == "extender")
    mode = load_extender_settings(extender["args"], env={})
    assert mode.host == "0.0.0.0"
    assert mode.scheduler_names == "default-scheduler"
    tls = _mounts(pod, extender)["/etc/kube-vgpu/extender-tls"]
    assert tls == find(objects, "Certificate", "-extender-tls")["spec"]["secretName"]
    assert str(mode.scheduler_client_ca_file) == "/etc/kube-vgpu/extender-tls/ca.crt"


def test_the_network_policy_admits_only_the_extenders_listeners(
    helm_home: Path, default_objects: list[Obj]
) -> None:
    policy = find(default_objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["http", "webhook"]
    objects = render(helm_home, VALUE_SETS["extender mode, cert-manager TLS, monitoring, CDI, MIG mixed"])
    ingress = find(objects, "NetworkPolicy")["spec"]["ingress"]
    assert [r["ports"][0]["port"] for r in ingress] == ["http", "webhook", "extender"]
