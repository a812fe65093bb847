# mypy: disable-error-code="no-untyped-call"
"""Settings precedence (flags > env > node override > file > defaults) and validation messages."""

import pytest

from plugin.core.allocate import DeviceListStrategy
from plugin.core.errors import ConfigError
from plugin.settings import load_settings

FILE = """version: v1
deviceListStrategy: device-specs
deviceMemoryScaling: 0.8
nodeConfig:
  - name: n1
    deviceMemoryScaling: 0.5
    cgroupDriver: systemd
  - name: n2
    deviceMemoryScaling: 0.7
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(FILE)
    return path


def test_node_override_beats_the_file_default(config):
    s = load_settings([f"--config-file={config}"], {"NODE_NAME": "n1"})
    assert s.device_memory_scaling == 0.5
    assert s.device_list_strategy is DeviceListStrategy.DEVICE_SPECS


def test_env_beats_the_file_and_flags_beat_env(config):
    env = {
        "NODE_NAME": "n3",
        "KUBE_VGPU_DEVICE_MEMORY_SCALING": "0.6",
        "CDI_ENABLED": "true",
        "CDI_PREFIX": "a.b/c",
    }
    s = load_settings([f"--config-file={config}"], env)
    assert (s.device_memory_scaling, s.device_list_strategy, s.cdi_prefix) == (
        0.6,
        DeviceListStrategy.CDI,
        "a.b/c",
    )
    s = load_settings([f"--config-file={config}", "--device-memory-scaling=0.9", "--node-name=n9"], env)
    assert (s.device_memory_scaling, s.node_name) == (0.9, "n9")


def test_defaults_hold_without_file_or_env():
    s = load_settings(["--node-name=n1"], {})
    assert s.device_list_strategy is DeviceListStrategy.ENVVAR
    assert str(s.device_plugin_dir) == "/var/lib/kubelet/device-plugins"
    assert s.ignored_xids == frozenset({13, 31, 43, 45, 68})


def test_ignored_xids_from_a_comma_list():
    assert load_settings(["--node-name=n", "--ignored-xids=13,43"], {}).ignored_xids == frozenset({13, 43})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("version: v2\n", "version", id="unknown version"),
        pytest.param("deviceListStrategy: envvar\n", "version", id="no version"),
        pytest.param("version: v1\nbogus: 1\n", "'bogus'", id="unknown key"),
        pytest.param("version: v1\nnodeConfig: [{name: n1, bogus: 1}]\n", "'bogus'", id="unknown node key"),
        pytest.param("version: v1\nnodeConfig: {n1: 1}\n", "nodeConfig", id="nodeConfig not a list"),
        pytest.param("version: v1\ndeviceIdStrategy: serial\n", "--device-id-strategy", id="bad value"),
    ],
)
def test_bad_files_name_the_field(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings([f"--config-file={path}", "--node-name=n1"], {})


def test_missing_node_name_is_named():
    with pytest.raises(ConfigError, match="--node-name"):
        load_settings([], {})
