"""The chart passes NVIDIA's config file to the plugin (docs/nvidia-plugin.md): rendered from values or taken
from an existing ConfigMap, the flags it decides left to it, and the MPS shared memory mounted.
Arguments and paths of these renders are checked with every other variant in test_chart_args."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from plugin.settings import load_nvidia_config
from tests.fixtures.chart import CHART, HELM, find, helm, render

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not installed at {HELM}: run `make build`")

MPS = [
    "plugin.nvidiaConfig.config.version=v1",
    "plugin.nvidiaConfig.config.sharing.mps.resources[0].name=nvidia.com/gpu",
    "plugin.nvidiaConfig.config.sharing.mps.resources[0].replicas=4",
]


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


def _plugin(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(objects, "DaemonSet", "-plugin")["spec"]["template"]["spec"]
    return {"pod": pod, "container": next(c for c in pod["containers"] if c["name"] == "plugin")}


def test_an_nvidia_config_in_values_becomes_the_plugins_config_file(helm_home: Path, tmp_path: Path) -> None:
    objects = render(helm_home, MPS)
    local = tmp_path / "config.yaml"
    local.write_text(find(objects, "ConfigMap", "-plugin")["data"]["config.yaml"])
    config = load_nvidia_config(local)
    assert config is not None
    assert config.sharing.resources[0].replicas == 4
    plugin = _plugin(objects)
    args = plugin["container"]["args"]
    assert not any(
        a.startswith(("--device-list-strategy", "--mig-strategy", "--fail-on-init-error")) for a in args
    )
    mounts = {m["mountPath"]: m["name"] for m in plugin["container"]["volumeMounts"]}
    volumes = {v["name"]: v for v in plugin["pod"]["volumes"]}
    assert volumes[mounts["/dev/shm"]]["hostPath"]["path"] == "/var/lib/kube-vgpu/mps/shm"
    # The plugin's tmpfs at /var/lib/kube-vgpu/mps/shm reaches the host (clients) and its own /dev/shm.
    by_path = {m["mountPath"]: m for m in plugin["container"]["volumeMounts"]}
    assert by_path["/var/lib/kube-vgpu"]["mountPropagation"] == "Bidirectional"
    assert by_path["/dev/shm"]["mountPropagation"] == "HostToContainer"


def test_an_existing_configmap_is_mounted_under_the_config_file_name(helm_home: Path) -> None:
    objects = render(
        helm_home,
        ["plugin.nvidiaConfig.existingConfigMap=nvidia-plugin-configs", "plugin.nvidiaConfig.key=a100"],
    )
    volume = next(v for v in _plugin(objects)["pod"]["volumes"] if v["name"] == "config")
    assert volume["configMap"] == {
        "name": "nvidia-plugin-configs",
        "items": [{"key": "a100", "path": "config.yaml"}],
    }
    assert "/dev/shm" not in {m["mountPath"] for m in _plugin(objects)["container"]["volumeMounts"]}
    state = next(
        m for m in _plugin(objects)["container"]["volumeMounts"] if m["mountPath"] == "/var/lib/kube-vgpu"
    )
    assert "mountPropagation" not in state  # without MPS nothing is mounted back to the host


def test_the_default_render_keeps_kube_vgpus_own_file_and_flags(helm_home: Path) -> None:
    objects = render(helm_home, [])
    assert yaml.safe_load(find(objects, "ConfigMap", "-plugin")["data"]["config.yaml"]) == {
        "version": "v1",
        "nodeConfig": [],
    }
    assert any(a.startswith("--device-list-strategy=") for a in _plugin(objects)["container"]["args"])


def test_an_nvidia_config_with_node_config_entries_is_refused(helm_home: Path) -> None:
    done = helm(
        "template",
        "kube-vgpu",
        str(CHART),
        "--kube-version",
        "v1.31.0",
        "--set",
        ",".join([*MPS, "plugin.config.nodeConfig[0].name=n1"]),
        home=helm_home,
    )
    assert done.returncode != 0
    assert "leave plugin.config.nodeConfig empty" in done.stderr
