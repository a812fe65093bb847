"""Every container the chart renders is started with arguments its binary really accepts, and every path a binary
is told to use is mounted in that container (chart and binaries drifting apart, issue 13).

Case matrix, for the default values and the main variants (extender mode, cert-manager, monitoring, CDI, GFD
coexistence, MIG, secret TLS, no plugin, device specs with a custom kubelet root; ``VALUE_SETS`` of
test_deploy_chart plus the variants below):
- the plugin and the extender: the container's ``args`` *and* ``env`` (downward-API values filled in,
  ``$(VAR)`` expanded as the kubelet does) go through the binary's real settings loader;
- every path-valued setting they end up with (key, certificate, config, driver root, state, shim, CDI,
  kubelet device-plugin and PodResources paths) lies under one of that container's ``volumeMounts``;
- kube-scheduler's ``--config`` file is mounted and holds the key it names;
- the certgen Jobs pass only flags that kube-webhook-certgen's ``create`` / ``patch`` define (cobra stops at an
  unknown flag, so the Job, a pre-install hook, fails and the install with it).
"""

import re
from pathlib import Path
from typing import Any

import pytest

from extender.settings import load_settings as load_extender_settings
from plugin.settings import load_settings as load_plugin_settings
from tests.contract.test_deploy_chart import VALUE_SETS
from tests.fixtures.chart import HELM, find, render

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")

Obj = dict[str, Any]

VARIANTS: dict[str, list[str]] = {
    **VALUE_SETS,
    "extender mode only": ["scheduler.mode=extender"],
    "second mode, cert-manager, pod monitor": [
        "webhook.tls.mode=certManager",
        "metrics.podMonitor.enabled=true",
    ],
    "CDI 0.7 and GFD coexistence": [
        "plugin.deviceListStrategy=cdi",
        "plugin.cdiSpecVersion=0.7.0",
        "plugin.gfdCoexistence=true",
    ],
    "certgen, no mutation, extender mode": ["scheduler.mode=extender", "webhook.mutate=false"],
    "NVIDIA's config with MPS": [
        "plugin.nvidiaConfig.config.version=v1",
        "plugin.nvidiaConfig.config.flags.plugin.deviceListStrategy=cdi-cri",
        "plugin.nvidiaConfig.config.sharing.mps.resources[0].name=nvidia.com/gpu",
        "plugin.nvidiaConfig.config.sharing.mps.resources[0].replicas=4",
    ],
    "NVIDIA's config from an existing ConfigMap": [
        "plugin.nvidiaConfig.existingConfigMap=nvidia-device-plugin-config",
        "plugin.nvidiaConfig.key=any",
    ],
}

# kube-webhook-certgen's flags (registry.k8s.io/ingress-nginx/kube-webhook-certgen, cmd/root.go, create.go and
# patch.go of kubernetes/ingress-nginx images/kube-webhook-certgen; unchanged from v1.1 to v1.6.x). There is no
# --ca-name: `create` stores the CA under the key `ca` and `patch` reads it from there.
_CERTGEN_COMMON = {"log-level", "log-format", "kubeconfig"}
CERTGEN_FLAGS = {
    "create": _CERTGEN_COMMON | {"host", "secret-name", "namespace", "cert-name", "key-name"},
    "patch": _CERTGEN_COMMON
    | {
        "secret-name",
        "namespace",
        "webhook-name",
        "apiservice-name",
        "patch-validating",
        "patch-mutating",
        "patch-failure-policy",
    },
}
NODE = "gpu-node-1"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


def _pods(objects: list[Obj]) -> list[Obj]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in {"DaemonSet", "Deployment", "Job"}]


def _container(objects: list[Obj], name: str) -> tuple[Obj, Obj] | None:
    for pod in _pods(objects):
        for container in pod["containers"]:
            if container["name"] == name:
                return pod, container
    return None


def _env(container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet fills it in (downward API: this node's name)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[item["name"]] = NODE
        else:
            env[item["name"]] = "x"
    return env


def _argv(container: Obj, env: dict[str, str]) -> list[str]:
    """``$(VAR)`` references expanded as the kubelet does; an unknown one stays as written."""
    return [_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), arg) for arg in container.get("args", [])]


def _mount_paths(container: Obj) -> list[Path]:
    return [Path(m["mountPath"]) for m in container.get("volumeMounts", [])]


def _unmounted(paths: dict[str, Path], container: Obj) -> dict[str, str]:
    mounts = _mount_paths(container)
    return {
        name: str(path)
        for name, path in paths.items()
        if not any(path == m or path.is_relative_to(m) for m in mounts)
    }


def _path_settings(settings: Any, skip: frozenset[str] = frozenset()) -> dict[str, Path]:
    return {
        name: value
        for name in type(settings).model_fields
        if name not in skip and isinstance(value := getattr(settings, name), Path)
    }


@pytest.mark.parametrize("name", list(VARIANTS), ids=list(VARIANTS))
def test_the_plugin_accepts_its_args_and_env_and_sees_every_path_it_is_given(
    helm_home: Path, tmp_path: Path, name: str
) -> None:
    objects = render(helm_home, VARIANTS[name])
    found = _container(objects, "plugin")
    if found is None:
        assert "plugin.enabled=false" in VARIANTS[name]
        return
    _, plugin = found
    env = _env(plugin)
    argv = _argv(plugin, env)
    config = next(a.split("=", 1)[1] for a in argv if a.startswith("--config-file="))
    local = tmp_path / "config.yaml"
    local.write_text(find(objects, "ConfigMap", "-plugin")["data"][Path(config).name])
    settings = load_plugin_settings([a.replace(config, str(local)) for a in argv], env=env)
    assert settings.node_name == NODE
    # nvidia_driver_host_root is the host's view of the driver root, used only as a mount source.
    paths = {**_path_settings(settings, frozenset({"nvidia_driver_host_root"})), "config_file": Path(config)}
    assert _unmounted(paths, plugin) == {}


@pytest.mark.parametrize("name", list(VARIANTS), ids=list(VARIANTS))
def test_the_extender_accepts_its_args_and_env_and_sees_every_file_it_is_given(
    helm_home: Path, name: str
) -> None:
    objects = render(helm_home, VARIANTS[name])
    found = _container(objects, "extender")
    assert found is not None
    _, extender = found
    env = _env(extender)
    settings = load_extender_settings(_argv(extender, env), env=env)
    assert _unmounted(_path_settings(settings), extender) == {}


@pytest.mark.parametrize("name", list(VARIANTS), ids=list(VARIANTS))
def test_kube_scheduler_reads_a_mounted_config(helm_home: Path, name: str) -> None:
    objects = render(helm_home, VARIANTS[name])
    found = _container(objects, "kube-scheduler")
    if found is None:
        assert "scheduler.mode=extender" in VARIANTS[name]
        return
    pod, scheduler = found
    config = Path(next(a.split("=", 1)[1] for a in scheduler["command"] if a.startswith("--config=")))
    mount = next(m for m in scheduler["volumeMounts"] if config.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = next(
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    )
    assert str(config.relative_to(mount["mountPath"])) in config_map["data"]


@pytest.mark.parametrize("name", list(VARIANTS), ids=list(VARIANTS))
def test_certgen_jobs_pass_only_flags_kube_webhook_certgen_defines(helm_home: Path, name: str) -> None:
    objects = render(helm_home, VARIANTS[name])
    jobs = [c for pod in _pods(objects) for c in pod["containers"] if c["name"] == "certgen"]
    for job in jobs:
        command, *flags = job["args"]
        names = {flag.removeprefix("--").split("=", 1)[0] for flag in flags}
        assert names - CERTGEN_FLAGS[command] == set(), f"{command}: {flags}"
        assert {"namespace", "secret-name"} <= names


_ROTATION = "assignmentKey.extraPublicKeys.previous=-----BEGIN PUBLIC KEY-----"


@pytest.mark.parametrize("name", [*VARIANTS, "rotation"], ids=[*VARIANTS, "rotation"])
def test_the_keygen_job_runs_a_subcommand_the_extender_has_with_its_paths_mounted(
    helm_home: Path, name: str
) -> None:
    from extender.keygen import parse_args

    objects = render(helm_home, VARIANTS.get(name, [_ROTATION]))
    found = _container(objects, "keygen")
    if found is None:  # an existing Secret: nothing to generate
        assert any(v.startswith("assignmentKey.existingSecret=") for v in VARIANTS[name])
        return
    _, keygen = found
    argv = _argv(keygen, _env(keygen))
    assert argv[0] == "keygen"  # `kube-vgpu-extender keygen` (extender/__main__.py dispatches on it)
    parsed = parse_args(argv[1:])  # argparse exits (SystemExit) on an unknown flag, as the Job would fail
    extra = {"extra_public_keys": parsed.extra_public_keys} if parsed.extra_public_keys else {}
    assert _unmounted(extra, keygen) == {}
    assert (name == "rotation") == bool(extra)
