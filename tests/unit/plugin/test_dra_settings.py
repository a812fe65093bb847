"""``--front-end``: a flag, an environment variable and a config-file key (per node too); bad values refused."""

from pathlib import Path

import pytest

from plugin.core.dra import FrontEnd
from plugin.core.errors import ConfigError
from plugin.settings import load_settings


def test_the_default_front_end_is_the_device_plugin() -> None:
    assert load_settings(["--node-name=n1"], env={}).front_end is FrontEnd.DEVICE_PLUGIN


def test_the_flag_and_the_environment_choose_dra() -> None:
    assert load_settings(["--node-name=n1", "--front-end=dra"], env={}).front_end is FrontEnd.DRA
    env = {"KUBE_VGPU_PLUGIN_FRONT_END": "dra"}
    assert load_settings(["--node-name=n1"], env=env).front_end is FrontEnd.DRA


def test_a_node_pool_switches_to_dra_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("version: v1\nnodeConfig:\n  - matchLabels: {pool: dra}\n    frontEnd: dra\n")
    args = ["--node-name=n1", f"--config-file={config}"]
    assert load_settings(args, env={}, node_labels={"pool": "dra"}).front_end is FrontEnd.DRA
    assert load_settings(args, env={}, node_labels={"pool": "other"}).front_end is FrontEnd.DEVICE_PLUGIN


def test_an_unknown_front_end_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="front-end"):
        load_settings(["--node-name=n1", "--front-end=both"], env={})
