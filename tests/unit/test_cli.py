"""Both binaries' command lines, through their ``main``: ``--help`` documents every option (text, default,
choices, environment variable) in plain text, ``--version`` prints the package version, older plugins'
environment names are read, and a bad value exits 2 naming the flag and the variable it came from."""

import re
from importlib import metadata

import pytest

import extender.__main__ as extender_main
import plugin.__main__ as plugin_main
from extender.settings import CLI as EXTENDER_CLI
from plugin.core.allocate import DeviceIdStrategy, DeviceListStrategy
from plugin.core.errors import ConfigError
from plugin.core.mig import MigStrategy
from plugin.settings import CLI as PLUGIN_CLI
from plugin.settings import load_settings

BINARIES = [
    pytest.param(plugin_main.main, PLUGIN_CLI, id="plugin"),
    pytest.param(extender_main.main, EXTENDER_CLI, id="extender"),
]


def _help(main, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("main", "cli"), BINARIES)
def test_help_documents_every_option_with_its_default_and_environment_variable(main, cli, capsys):
    text = _help(main, capsys)
    for name, info in cli.model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text
        assert f"env: {cli.env_name(name)}]" in text, name  # the end of the option's bracket
        first_words = " ".join(re.sub(r"``|`", "", info.description or "").split()[:3])
        assert first_words, name
        assert first_words in text, name  # its docstring is its help
    assert "(undocumented)" not in text
    assert "``" not in text  # no raw reStructuredText


@pytest.mark.parametrize(
    ("main", "option", "shown"),
    [
        (
            plugin_main.main,
            "--mig-strategy {none,single,mixed}",
            "[default: none; choices: none, single, mixed;",
        ),
        (plugin_main.main, "--device-list-strategy", "[default: envvar; choices: envvar, cdi, device-specs;"),
        (plugin_main.main, "--fail-on-init-error", "[default: true; choices: true, false;"),
        (plugin_main.main, "--node-name NAME", "[required; env: KUBE_VGPU_PLUGIN_NODE_NAME]"),
        (plugin_main.main, "--log-format {text,json}", "[default: text; choices: text, json;"),
        (
            extender_main.main,
            "--node-policy {binpack,spread}",
            "[default: binpack; choices: binpack, spread;",
        ),
        (extender_main.main, "--log-level {debug,info,warning,error}", "[default: info; choices: debug,"),
        (extender_main.main, "--reservation-grace-seconds SECONDS", "[default: 120.0;"),
        (extender_main.main, "--port PORT", "[default: 8888; env: KUBE_VGPU_EXTENDER_PORT]"),
    ],
)
def test_help_shows_defaults_and_choices(main, option, shown, capsys):
    text = _help(main, capsys)
    assert option in text
    assert shown in text


@pytest.mark.parametrize(
    ("main", "prog"), [(plugin_main.main, "kube-vgpu-plugin"), (extender_main.main, "kube-vgpu-extender")]
)
def test_version_prints_the_package_version(main, prog, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {metadata.version('kube-vgpu')}"


def test_the_seeds_environment_names_are_read(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("version: v1\ndeviceMemoryScaling: 0.5\n")
    seeds = {
        "NODE_NAME": "n1",
        "MIG_STRATEGY": "single",
        "FAIL_ON_INIT_ERROR": "false",
        "DEVICE_LIST_STRATEGY": "cdi-annotations",  # NVIDIA's name for CDI
        "DEVICE_ID_STRATEGY": "index",
        "NVIDIA_DRIVER_ROOT": "/run/nvidia/driver",
        "CONFIG_FILE": str(config),
        "CDI_PREFIX": "micro.device",  # the Micro GPU Device Plugin's default: a bare vendor
    }
    s = load_settings([], seeds)
    assert s.mig_strategy is MigStrategy.SINGLE
    assert s.fail_on_init_error is False
    assert s.device_list_strategy is DeviceListStrategy.CDI
    assert s.device_id_strategy is DeviceIdStrategy.INDEX
    assert str(s.nvidia_driver_root) == "/run/nvidia/driver"
    assert s.device_memory_scaling == 0.5  # from CONFIG_FILE
    assert s.cdi_prefix == "micro.device/gpu"


def test_pass_device_specs_chooses_device_specs_unless_a_strategy_is_named():
    assert load_settings([], {"NODE_NAME": "n", "PASS_DEVICE_SPECS": "true"}).device_list_strategy is (
        DeviceListStrategy.DEVICE_SPECS
    )
    named = {"NODE_NAME": "n", "PASS_DEVICE_SPECS": "true", "DEVICE_LIST_STRATEGY": "envvar"}
    assert load_settings([], named).device_list_strategy is DeviceListStrategy.ENVVAR


def test_documented_names_beat_older_ones_and_seed_ones():
    env = {"NODE_NAME": "n", "MIG_STRATEGY": "mixed", "KUBE_VGPU_MIG_STRATEGY": "single"}
    assert load_settings([], env).mig_strategy is MigStrategy.SINGLE
    env["KUBE_VGPU_PLUGIN_MIG_STRATEGY"] = "none"
    assert load_settings([], env).mig_strategy is MigStrategy.NONE
    assert load_settings(["--mig-strategy=mixed"], env).mig_strategy is MigStrategy.MIXED


def test_a_bad_seed_value_names_the_flag_and_the_variable():
    with pytest.raises(ConfigError, match=r"--mig-strategy \(mig_strategy, from env MIG_STRATEGY\)"):
        load_settings([], {"NODE_NAME": "n", "MIG_STRATEGY": "some"})


@pytest.mark.parametrize(
    ("main", "argv", "env", "needle"),
    [
        (plugin_main.main, ["--node-name=n"], {"MIG_STRATEGY": "some"}, "--mig-strategy"),
        (plugin_main.main, ["--node-name=n", "--log-format=xml"], {}, "--log-format"),
        (extender_main.main, ["--log-format=xml"], {}, "--log-format"),
        (extender_main.main, ["--resync-s=-1"], {}, "--resync-seconds (resync_s, from flag)"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(main, argv, env, needle, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_the_extender_takes_the_plugins_spelling_of_durations():
    from extender.settings import load_settings as load_extender

    s = load_extender(["--resync-seconds=2"], {"KUBE_VGPU_EXTENDER_RESERVATION_GRACE_SECONDS": "30"})
    assert (s.resync_s, s.reservation_grace_s) == (2.0, 30.0)
    assert load_extender(["--resync-s=3"], {}).resync_s == 3.0  # the old spelling still works
