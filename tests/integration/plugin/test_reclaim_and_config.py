# mypy: disable-error-code="no-untyped-call"
"""Reclaim of per-container files (pod deleted, crash leftovers at start-up, never a running pod's) and
start-up refusal of bad configuration."""

import pytest

from plugin.__main__ import main
from tests.builders.plugin import KEY, h100x8
from tests.fakes.gpu_source import FakeGpuSource

G = "GPU-node-1-{:04d}".format


async def test_files_of_a_deleted_pod_are_reclaimed_and_a_running_pods_are_kept(env_factory):
    env = await env_factory()
    env.create_pod("gone", [("main", 30, 4096)], {"main": [(G(0), 30, 4096)]})
    env.create_pod("running", [("main", 30, 4096)], {"main": [(G(1), 30, 4096)]})
    for name in ("gone", "running"):
        await env.admit(name, [("main", 30)])
        await env.start_container(name, "main")
    containers = env.settings.state_dir / "containers"
    assert len(list(containers.iterdir())) == 2
    gone_uid = env.pod("gone")["metadata"]["uid"]
    env.core.delete_namespaced_pod("gone", "default", _preload_content=False)
    env.kubelet.remove_pod("default", "gone")
    assert env.agent is not None
    removed = await env.agent.reclaimer.once()
    assert removed == [f"{gone_uid}_main"]
    assert [p.name for p in containers.iterdir()] == [f"{env.pod('running')['metadata']['uid']}_main"]


async def test_a_pod_the_api_forgot_but_the_kubelet_still_runs_keeps_its_files(env_factory):
    env = await env_factory()
    env.create_pod("orphan", [("main", 30, 4096)], {"main": [(G(0), 30, 4096)]})
    await env.admit("orphan", [("main", 30)])
    env.core.delete_namespaced_pod("orphan", "default", _preload_content=False)  # the kubelet still runs it
    assert env.agent is not None
    assert await env.agent.reclaimer.once() == []


async def test_crash_leftovers_are_cleaned_at_start_up(env_factory, short_dir):
    root = short_dir / "0"
    leftover = root / "state" / "containers" / "dead-pod-uid_main"
    (leftover / "usage").mkdir(parents=True)
    (leftover / "vcuda.config.tmp").write_bytes(b"half")
    env = await env_factory(FakeGpuSource(h100x8()))
    assert env.agent is not None
    assert not leftover.exists()


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        pytest.param(["--device-list-strategy=magic"], "--device-list-strategy", id="unknown strategy"),
        pytest.param(["--device-memory-scaling=1.5"], "--device-memory-scaling", id="scaling above 1"),
        pytest.param(["--resource-domain=kubernetes.io"], "--resource-domain", id="reserved domain"),
        pytest.param(["--cdi-prefix=nogood"], "--cdi-prefix", id="cdi prefix without class"),
        pytest.param(["--mig-rediscover-seconds=-1"], "--mig-rediscover-seconds", id="negative MIG period"),
    ],
)
def test_bad_config_stops_start_up_naming_the_field(argv, field, capsys, tmp_path):
    key = tmp_path / "key"
    key.write_bytes(KEY)  # the extender's public key (PEM)
    assert main(["--node-name=n1", f"--assignment-key-file={key}", *argv]) == 2
    assert field in capsys.readouterr().err


def test_bad_config_file_stops_start_up_naming_the_field(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("version: v1\nnodeConfig:\n  - name: n1\n    deviceMemoryScaling: 0\n")
    assert main(["--node-name=n1", f"--config-file={config}"]) == 2
    assert "--device-memory-scaling" in capsys.readouterr().err


def test_a_changed_mig_layout_exits_with_its_own_code_and_says_what_changed(capsys, tmp_path, monkeypatch):
    import plugin.__main__ as entry
    from plugin.core.errors import MigLayoutChangedError

    async def serving(settings, key):
        raise MigLayoutChangedError("GPU GPU-1: MIG instances added 1g.10gb, removed none")

    monkeypatch.setattr(entry, "_run", serving)
    key = tmp_path / "key"
    key.write_bytes(KEY)  # the extender's public key (PEM)
    assert main(["--node-name=n1", f"--assignment-key-file={key}"]) == entry.EXIT_MIG_LAYOUT_CHANGED == 4
    assert "MIG layout changed, exiting to start again on it: GPU GPU-1" in capsys.readouterr().err


def test_missing_assignment_key_stops_start_up(capsys, tmp_path):
    assert main(["--node-name=n1", f"--assignment-key-file={tmp_path / 'absent'}"]) == 2
    assert "--assignment-key-file" in capsys.readouterr().err
