"""MIG settings: flags, the kube-vgpu env names and the Micro GPU Device Plugin's env names."""

import pytest

from plugin.core.errors import ConfigError
from plugin.core.mig import MigStrategy
from plugin.settings import load_settings

BASE = ["--node-name=n1"]


def test_mig_defaults_are_off_and_leave_configured_gpus_alone():
    s = load_settings(BASE, {})

    assert (s.mig_strategy, s.enable_mig, s.mig_profile, s.mig_instance_count, s.skip_configured) == (
        MigStrategy.NONE,
        False,
        "",
        0,
        True,
    )


def test_seed_env_names_set_partitioning():
    env = {
        "ENABLE_MIG": "true",
        "MIG_PROFILE": "1g.10gb",
        "MIG_INSTANCE_COUNT": "3",
        "SKIP_CONFIGURED": "false",
    }

    s = load_settings(BASE, env)

    assert (s.enable_mig, s.mig_profile, s.mig_instance_count, s.skip_configured) == (
        True,
        "1g.10gb",
        3,
        False,
    )


def test_flags_win_over_env():
    s = load_settings([*BASE, "--mig-strategy=mixed", "--enable-mig=false"], {"ENABLE_MIG": "true"})

    assert (s.mig_strategy, s.enable_mig) == (MigStrategy.MIXED, False)


@pytest.mark.parametrize(
    ("argv", "env", "field"),
    [
        pytest.param(["--mig-strategy=all"], {}, "--mig-strategy", id="unknown strategy"),
        pytest.param([], {"MIG_INSTANCE_COUNT": "-1"}, "--mig-instance-count", id="negative count"),
    ],
)
def test_a_bad_mig_setting_names_the_field(argv, env, field):
    with pytest.raises(ConfigError, match=field):
        load_settings([*BASE, *argv], env)
