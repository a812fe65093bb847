"""NVIDIA's config file through the plugin's settings loader (plugin.settings): told apart from kube-vgpu's
own ``version: v1`` file by its keys, read through ``--config-file`` and ``CONFIG_FILE``, its ``flags`` below
environment and command line; a bad file stops the plugin with exit code 2 and the key in the message."""

from pathlib import Path

import pytest
import yaml

from plugin.__main__ import main
from plugin.core.errors import ConfigError
from plugin.settings import load_nvidia_config, load_settings

NVIDIA = {
    "version": "v1",
    "flags": {"migStrategy": "mixed", "failOnInitError": False, "plugin": {"deviceListStrategy": "cdi-cri"}},
    "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
}


@pytest.fixture
def nvidia_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(NVIDIA))
    return path


def test_the_config_file_variable_reads_nvidias_flags_as_settings(nvidia_file: Path) -> None:
    settings = load_settings([], env={"NODE_NAME": "n1", "CONFIG_FILE": str(nvidia_file)})
    assert (settings.mig_strategy.value, settings.fail_on_init_error) == ("mixed", False)
    assert settings.device_list_strategy.value == "cdi"
    config = load_nvidia_config(settings.config_file)
    assert config is not None
    assert config.sharing.resources[0].replicas == 4


def test_environment_and_flags_win_over_the_files_flags(nvidia_file: Path) -> None:
    argv = ["--node-name=n1", f"--config-file={nvidia_file}", "--device-list-strategy=envvar"]
    settings = load_settings(argv, env={"KUBE_VGPU_PLUGIN_MIG_STRATEGY": "single"})
    assert (settings.mig_strategy.value, settings.device_list_strategy.value) == ("single", "envvar")


def test_kube_vgpus_own_file_is_not_nvidias(tmp_path: Path) -> None:
    path = tmp_path / "own.yaml"
    path.write_text("version: v1\nmigStrategy: mixed\nnodeConfig: []\n")
    assert load_nvidia_config(path) is None
    assert load_settings([f"--config-file={path}", "--node-name=n1"], env={}).mig_strategy.value == "mixed"


def test_kube_vgpu_keys_in_nvidias_file_are_refused_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({**NVIDIA, "deviceMemoryScaling": 0.5}))
    with pytest.raises(ConfigError, match=r"NVIDIA's format\): deviceMemoryScaling: unknown key"):
        load_settings([f"--config-file={path}", "--node-name=n1"], env={})


def test_a_bad_nvidia_file_stops_the_plugin_with_code_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {"sharing": {"timeSlicing": {"resources": [{"name": "gpu", "replicas": 1}]}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main([f"--config-file={path}", "--node-name=n1"]) == 2
    assert "sharing.timeSlicing.resources[0].replicas: must be >= 2" in capsys.readouterr().err


def test_a_dra_node_refuses_nvidias_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One GPU, one mode: NVIDIA's modes and DRA claims would sell the same GPUs twice."""
    path = tmp_path / "nvidia.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": "v1",
                "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]}},
            }
        )
    )
    assert main([f"--config-file={path}", "--node-name=n1", "--front-end=dra"]) == 2
    assert "cannot be used with --front-end=dra" in capsys.readouterr().err


# What NVIDIA's plugin logs at start ("Running with config:"), unset flags as null and its default resources
# included: operators moving a node pool copy it as their config file.
NVIDIA_LOGGED = """{"version": "v1", "flags": {"migStrategy": "none", "failOnInitError": true,
  "mpsRoot": "/run/nvidia/mps", "nvidiaDriverRoot": "/", "nvidiaDevRoot": "/", "gdrcopyEnabled": null,
  "gdsEnabled": null, "mofedEnabled": null, "useNodeFeatureAPI": null, "deviceDiscoveryStrategy": "auto",
  "plugin": {"passDeviceSpecs": false, "deviceListStrategy": ["envvar"], "deviceIDStrategy": "uuid",
  "cdiAnnotationPrefix": "cdi.k8s.io/", "nvidiaCTKPath": "/usr/bin/nvidia-ctk", "containerDriverRoot": "/driver-root",
  "sharedDevicesAllocationPolicy": null},
  "gfd": {"oneshot": false, "noTimestamp": false, "sleepInterval": "1m0s",
  "outputFile": "/etc/kubernetes/node-feature-discovery/features.d/gfd", "machineTypeFile": null}},
  "resources": {"gpus": [{"pattern": "*", "name": "nvidia.com/gpu"}],
  "mig": [{"pattern": "1g.10gb", "name": "nvidia.com/mig-1g.10gb"}]},
  "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "devices": "all", "replicas": 4}]}},
  "imex": {"channelIDs": [], "required": false}}"""


def test_the_config_nvidias_plugin_logs_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "logged.json"
    path.write_text(NVIDIA_LOGGED)
    settings = load_settings([f"--config-file={path}", "--node-name=n1"], env={})
    assert (settings.mig_strategy.value, str(settings.nvidia_driver_root)) == ("none", "/driver-root")
    config = load_nvidia_config(path)
    assert config is not None
    assert [(r.name, r.replicas) for r in config.sharing.resources] == [("nvidia.com/gpu", 4)]


def _laughs(levels: int = 9) -> str:
    """A flow list nesting YAML aliases ``levels`` deep, nine items each: 9**levels leaves, a few lines."""
    chain = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    chain += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(chain)}]"


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("version: {bomb}\nflags: {{}}\n", "version"),
        ("flags:\n  migStrategy: {bomb}\n", "flags.migStrategy"),
        ("sharing:\n  timeSlicing:\n    resources:\n    - {{name: gpu, replicas: {bomb}}}\n", "replicas"),
        (
            "sharing:\n  timeSlicing:\n    resources:\n    - {{name: gpu, replicas: 2, devices: {bomb}}}\n",
            "devices",
        ),
        ("flags: {{}}\nkubeVgpu:\n  timeSlicing:\n    isolation: {bomb}\n", "kubeVgpu.timeSlicing.isolation"),
    ],
)
def test_a_billion_laughs_in_nvidias_file_is_refused_with_a_short_message(
    tmp_path: Path, template: str, key: str
) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text("version: v1\n" * ("version" not in template) + template.format(bomb=_laughs()))
    with pytest.raises(ConfigError, match=key) as err:
        load_settings([f"--config-file={path}", "--node-name=n1"], env={})
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("8g", True),
        ("65536k", True),
        ("50%", True),
        ("8g,exec", False),
        ("-1", False),
        ("8G ", False),
    ],
)
def test_the_mps_shared_memory_size_is_a_tmpfs_size_and_nothing_more(value: str, ok: bool) -> None:
    """The value goes into mount's option list: a comma would add options (``exec``, ``suid``)."""
    argv = ["--node-name=n1", f"--mps-shm-size={value}"]
    if ok:
        assert load_settings(argv, env={}).mps_shm_size == value
    else:
        with pytest.raises((ConfigError, SystemExit, ValueError)):
            load_settings(argv, env={})
