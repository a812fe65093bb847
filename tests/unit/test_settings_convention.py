"""One settings convention for both binaries (kube_vgpu_cli.options), through each binary's real loader and
``main``: the same file format and key spellings, the same refusal of unknown variables with the binary's own
prefix, the same case-insensitive log level, errors that name the file and show the value bounded, so that a
YAML "billion laughs" in kube-vgpu's own config file is refused at once (it hung the plugin in ``repr``)."""

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import extender.__main__ as extender_main
import plugin.__main__ as plugin_main
from extender.settings import CLI as EXTENDER_CLI
from extender.settings import SettingsError
from extender.settings import load_settings as load_extender
from kube_vgpu_cli.options import camel_of
from plugin.core.errors import ConfigError
from plugin.settings import CLI as PLUGIN_CLI
from plugin.settings import load_settings as load_plugin

Loader = Callable[[Sequence[str], Mapping[str, str]], Any]


def _plugin(argv: Sequence[str], env: Mapping[str, str]) -> Any:
    return load_plugin(["--node-name=n1", *argv], env)


def _extender(argv: Sequence[str], env: Mapping[str, str]) -> Any:
    return load_extender(argv, env)


PLUGIN = pytest.param(_plugin, ConfigError, "KUBE_VGPU_PLUGIN_", id="plugin")
EXTENDER = pytest.param(_extender, SettingsError, "KUBE_VGPU_EXTENDER_", id="extender")


def _laughs(levels: int = 9) -> str:
    """A flow list nesting YAML aliases ``levels`` deep, nine items each: 9**levels leaves, a few lines."""
    chain = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    chain += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(chain)}]"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("load", "error", "template", "needle"),
    [
        pytest.param(_plugin, ConfigError, "version: {bomb}\n", "version", id="plugin version"),
        pytest.param(
            _plugin, ConfigError, "version: v1\nmigStrategy: {bomb}\n", "--mig-strategy", id="plugin enum"
        ),
        pytest.param(
            _plugin, ConfigError, "version: v1\nlogLevel: {bomb}\n", "--log-level", id="plugin literal"
        ),
        pytest.param(
            _plugin, ConfigError, "version: v1\nignoredXids: {bomb}\n", "--ignored-xids", id="plugin set"
        ),
        pytest.param(
            _plugin,
            ConfigError,
            "version: v1\nnodeConfig: [{{name: n1, frontEnd: {bomb}}}]\n",
            "nodeConfig['n1']",
            id="plugin node entry",
        ),
        pytest.param(_extender, SettingsError, "version: {bomb}\n", "version", id="extender version"),
        pytest.param(
            _extender, SettingsError, "version: v1\nnodePolicy: {bomb}\n", "--node-policy", id="extender enum"
        ),
        pytest.param(
            _extender, SettingsError, "version: v1\nlogFormat: {bomb}\n", "--log-format", id="extender format"
        ),
    ],
)
def test_a_billion_laughs_in_kube_vgpus_own_file_is_refused_with_a_short_message(
    tmp_path: Path, load: Loader, error: type[Exception], template: str, needle: str
) -> None:
    path = _file(tmp_path, template.format(bomb=_laughs()))
    with pytest.raises(error) as err:
        load([f"--config-file={path}"], {})
    assert needle in str(err.value)
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize(
    ("main", "argv"),
    [
        pytest.param(plugin_main.main, ["--node-name=n1"], id="plugin"),
        pytest.param(extender_main.main, [], id="extender"),
    ],
)
def test_a_billion_laughs_exits_2(
    tmp_path: Path, main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, f"version: v1\nlogFormat: {_laughs()}\n")
    assert main([*argv, f"--config-file={path}"]) == 2
    assert "--log-format" in capsys.readouterr().err


@pytest.mark.parametrize(("load", "error", "prefix"), [PLUGIN, EXTENDER])
def test_an_unknown_variable_with_the_binarys_prefix_is_refused(
    load: Loader, error: type[Exception], prefix: str
) -> None:
    """A typo (``..._MIG_STRATEGYY``) must not leave the setting silently at its default."""
    with pytest.raises(error, match=f"unknown environment variables: {prefix}COLOUR"):
        load([], {f"{prefix}COLOUR": "red"})


def test_the_plugins_older_prefix_and_other_programs_variables_are_left_alone() -> None:
    env = {"KUBE_VGPU_POD_NAME": "p", "KUBE_VGPU_EXTENDER_PORT": "1", "PATH": "/bin"}
    assert _plugin([], env).node_name == "n1"


@pytest.mark.parametrize(("load", "error", "prefix"), [PLUGIN, EXTENDER])
def test_the_log_level_is_read_in_any_case(load: Loader, error: type[Exception], prefix: str) -> None:
    assert load(["--log-level=WARNING"], {}).log_level == "warning"
    assert load([], {f"{prefix}LOG_LEVEL": "Debug"}).log_level == "debug"


@pytest.mark.parametrize(("load", "error", "prefix"), [PLUGIN, EXTENDER])
def test_the_config_file_comes_from_the_flag_or_the_variable_and_the_flag_wins(
    tmp_path: Path, load: Loader, error: type[Exception], prefix: str
) -> None:
    (tmp_path / "a.yaml").write_text("version: v1\nlogLevel: error\n")
    (tmp_path / "b.yaml").write_text("version: v1\nlogLevel: debug\n")
    env = {f"{prefix}CONFIG_FILE": str(tmp_path / "a.yaml")}
    assert load([], env).log_level == "error"
    assert load([f"--config-file={tmp_path / 'b.yaml'}"], env).log_level == "debug"


@pytest.mark.parametrize(
    ("load", "text", "field", "value"),
    [
        pytest.param(_plugin, "logFormat: json", "log_format", "json", id="plugin camelCase"),
        pytest.param(_plugin, "log_format: json", "log_format", "json", id="plugin snake_case"),
        pytest.param(_extender, "logFormat: json", "log_format", "json", id="extender camelCase"),
        pytest.param(_extender, "log_format: json", "log_format", "json", id="extender snake_case"),
        pytest.param(_extender, "resyncS: 3", "resync_s", 3.0, id="extender field name"),
        pytest.param(_extender, "resyncSeconds: 3", "resync_s", 3.0, id="extender plugin's spelling"),
    ],
)
def test_a_setting_is_read_from_the_file_under_each_of_its_names(
    tmp_path: Path, load: Loader, text: str, field: str, value: object
) -> None:
    path = _file(tmp_path, f"version: v1\n{text}\n")
    assert getattr(load([f"--config-file={path}"], {}), field) == value


@pytest.mark.parametrize(
    ("load", "error", "text", "message"),
    [
        pytest.param(
            _plugin,
            ConfigError,
            "logFormat: json\nlog_format: text",
            "'logFormat' and 'log_format'",
            id="plugin",
        ),
        pytest.param(
            _extender,
            SettingsError,
            "resyncS: 1\nresyncSeconds: 2",
            "'resyncS' and 'resyncSeconds'",
            id="extender",
        ),
    ],
)
def test_a_setting_spelled_twice_in_one_file_is_refused(
    tmp_path: Path, load: Loader, error: type[Exception], text: str, message: str
) -> None:
    path = _file(tmp_path, f"version: v1\n{text}\n")
    with pytest.raises(error, match=message):
        load([f"--config-file={path}"], {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "version None is not supported, use v1", id="empty file"),
        pytest.param("version: v2\n", "version 'v2' is not supported, use v1", id="other version"),
        pytest.param("[1, 2]\n", "must be a mapping with version: v1", id="not a mapping"),
        pytest.param("version: v1\n1: x\nzz: y\n", "unknown setting 1", id="keys of two types"),
        pytest.param("version: v1\ncolour: red\n", "unknown setting 'colour'", id="unknown key"),
        pytest.param(
            "version: v1\nlogFormat: xml\n", "from config file {path}): Input should be", id="bad value"
        ),
        pytest.param("version: v1\nlogFormat: xml\n", "got 'xml'", id="the value shown"),
    ],
)
@pytest.mark.parametrize(("load", "error", "prefix"), [PLUGIN, EXTENDER])
def test_both_binaries_refuse_a_bad_file_with_the_same_message_naming_the_file(
    tmp_path: Path, load: Loader, error: type[Exception], prefix: str, text: str, message: str
) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(error) as err:
        load([f"--config-file={path}"], {})
    assert message.format(path=path) in str(err.value)
    assert f"config file {path}" in str(err.value)


@pytest.mark.parametrize(("load", "error", "prefix"), [PLUGIN, EXTENDER])
def test_a_bad_variable_is_named_with_its_value(load: Loader, error: type[Exception], prefix: str) -> None:
    with pytest.raises(
        error, match=rf"--log-format \(log_format, from env {prefix}LOG_FORMAT\): .*got 'xml'"
    ):
        load([], {f"{prefix}LOG_FORMAT": "xml"})


def test_a_missing_required_setting_is_named_without_echoing_the_others() -> None:
    with pytest.raises(ConfigError) as err:
        load_plugin(["--mig-strategy=mixed"], {"KUBE_VGPU_PLUGIN_LOG_LEVEL": "debug"})
    assert str(err.value) == "invalid setting --node-name (node_name): Field required"


def test_a_check_across_settings_says_what_it_needs() -> None:
    with pytest.raises(SettingsError, match=r"^invalid settings: .*lease duration > renew deadline"):
        load_extender(["--leader-elect-lease-duration-s=1"], {})


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _keys(cli: Any) -> list[str]:
    return sorted(camel_of(n) for n in cli.model.model_fields if n not in cli.not_in_file)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(["plugin", "extender"]),
    data=st.data(),
)
def test_any_value_of_any_file_key_is_taken_or_refused_with_the_binarys_error(
    tmp_path: Path, which: str, data: st.DataObject
) -> None:
    """Whatever YAML holds under a real key, the loader returns settings or its own error with a short
    message: never another exception (a traceback instead of exit code 2)."""
    load, error, cli = (
        (_plugin, ConfigError, PLUGIN_CLI)
        if which == "plugin"
        else (
            _extender,
            SettingsError,
            EXTENDER_CLI,
        )
    )
    doc = data.draw(st.dictionaries(st.sampled_from(_keys(cli)), _VALUES, min_size=1, max_size=3))
    path = _file(tmp_path, yaml.safe_dump({"version": "v1", **doc}))
    assert len(_refusal(load, error, [f"--config-file={path}"])) < 1000


def _refusal(load: Loader, error: type[Exception], argv: list[str]) -> str:
    """The loader's own error message, or "" when the settings are taken; any other exception propagates."""
    try:
        load(argv, {})
    except error as err:
        return str(err)
    return ""
