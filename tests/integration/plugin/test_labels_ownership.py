# mypy: disable-error-code="no-untyped-call"
"""The plugin removes only the node labels and annotations it recorded as its own (plugin.core.ownership).

The Node (kmock, through the real ``kubernetes`` client) carries what a GPU Operator cluster puts there:
the operator's ``nvidia.com/gpu.deploy.*``, GFD's ``nvidia.com/gpu.family`` and ``gfd.timestamp``, the MIG
manager's ``nvidia.com/mig.config`` / ``mig.config.state``, and another controller's annotation.

Case matrix:
- every resync (forced with ``NodePublisher.sync``), a health change and ``--uninstall`` leave them as they are;
- a label the plugin recorded and no longer writes is removed; the record lists exactly what it wrote;
- GFD coexistence: none of GFD's names is written, GFD's own values stay, recorded ones are handed over;
- an unreadable record removes nothing and is rewritten.
"""

import asyncio
import json
from typing import Any

import pytest

from plugin.core.ownership import is_gfd_name
from tests.builders.plugin import NAMES, a10x4
from tests.fakes.gpu_source import FakeGpuSource
from tests.fixtures.plugin_env import NODE, eventually

RECORD = "nvidia.com/vgpu-managed"
FOREIGN_LABELS = {
    "nvidia.com/gpu.deploy.device-plugin": "false",
    "nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
    "nvidia.com/gpu.deploy.driver": "pre-installed",
    "nvidia.com/gpu.family": "ampere",
    "nvidia.com/gfd.timestamp": "1764770000",
    "nvidia.com/mig.config": "all-disabled",
    "nvidia.com/mig.config.state": "success",
    "feature.node.kubernetes.io/pci-10de.present": "true",
}
FOREIGN_ANNOTATIONS = {"nvidia.com/gpu-driver-upgrade-enabled": "true", "example.com/owner": "someone"}


def label_node(env: Any, labels: dict[str, str | None], annotations: dict[str, str | None]) -> None:
    body = {"metadata": {"labels": labels, "annotations": annotations}}
    env.core.patch_node(NODE, body, _preload_content=False)


def meta(env: Any) -> tuple[dict[str, str], dict[str, str]]:
    node = env.node()["metadata"]
    return node.get("labels") or {}, node.get("annotations") or {}


def assert_foreign_intact(env: Any) -> None:
    labels, annotations = meta(env)
    assert {k: labels.get(k) for k in FOREIGN_LABELS} == FOREIGN_LABELS
    assert {k: annotations.get(k) for k in FOREIGN_ANNOTATIONS} == FOREIGN_ANNOTATIONS


async def started(env_factory: Any, **settings: Any) -> Any:
    env = await env_factory(FakeGpuSource(a10x4()), **settings)
    await eventually(lambda: RECORD in meta(env)[1])
    label_node(env, dict(FOREIGN_LABELS), dict(FOREIGN_ANNOTATIONS))
    return env


async def test_operator_gfd_and_mig_manager_labels_survive_every_resync(env_factory):
    env = await started(env_factory)
    for _ in range(3):
        await env.agent.node.sync()
        assert_foreign_intact(env)
    labels, annotations = meta(env)
    assert labels[NAMES.label("gpu.count")] == "4"
    record = json.loads(annotations[RECORD])
    assert record["v"] == 1
    assert set(record["labels"]) == {k for k in labels if k not in FOREIGN_LABELS}
    assert set(record["annotations"]) == {NAMES.inventory, RECORD}


async def test_a_health_change_republishes_without_touching_foreign_labels(env_factory):
    env = await started(env_factory)
    env.source.inject_xid("GPU-node-1-0000", 48)
    capacity = lambda: (env.node().get("status") or {}).get("capacity", {})  # noqa: E731
    await eventually(lambda: capacity().get(NAMES.memory) == str(3 * 23028))
    await env.agent.node.sync()
    assert_foreign_intact(env)


async def test_a_recorded_label_no_longer_written_is_removed_and_only_that(env_factory):
    env = await started(env_factory)
    _, annotations = meta(env)
    record = json.loads(annotations[RECORD])
    record["labels"].append("nvidia.com/mig-1g.10gb.count")  # written under an earlier MIG layout
    label_node(env, {"nvidia.com/mig-1g.10gb.count": "7"}, {RECORD: json.dumps(record)})
    await env.agent.node.sync()
    labels, annotations = meta(env)
    assert "nvidia.com/mig-1g.10gb.count" not in labels
    assert "nvidia.com/mig-1g.10gb.count" not in json.loads(annotations[RECORD])["labels"]
    assert_foreign_intact(env)


async def test_uninstall_removes_exactly_what_was_recorded(env_factory):
    env = await started(env_factory)
    await env.agent.node.uninstall()
    labels, annotations = meta(env)
    assert_foreign_intact(env)
    assert set(labels) == set(FOREIGN_LABELS)
    assert set(annotations) == set(FOREIGN_ANNOTATIONS)


async def test_uninstall_waits_for_a_resync_already_patching_so_nothing_comes_back(env_factory):
    """The ordering behind a flaky uninstall: the watch saw a drift, the resync read its view and sent its patch
    (held here in flight), then uninstall runs. Uninstall must remove after that patch lands, never before."""
    env = await started(env_factory)
    publisher = env.agent.node
    real_patch = publisher._cluster.patch_node
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def held_resync_patch(node: str, body: dict[str, Any]) -> None:
        if not in_flight.is_set():  # the first patch: the resync re-adding the label removed below
            in_flight.set()
            await release.wait()
        await real_patch(node, body)

    publisher._cluster.patch_node = held_resync_patch
    label_node(env, {NAMES.label("gpu.count"): None}, {})  # a drift the watch reports: the resync re-adds it
    await asyncio.wait_for(in_flight.wait(), 5.0)
    uninstall = asyncio.create_task(publisher.uninstall())
    await asyncio.wait(
        {uninstall}, timeout=0.5
    )  # unfixed, uninstall is done by now and the patch lands after
    release.set()
    await asyncio.wait_for(uninstall, 5.0)
    await asyncio.sleep(0.3)  # time for the watch to report the removal: nothing may be re-published
    labels, annotations = meta(env)
    assert set(labels) == set(FOREIGN_LABELS)
    assert set(annotations) == set(FOREIGN_ANNOTATIONS)
    assert NAMES.memory not in (env.node().get("status") or {}).get("capacity", {})


async def test_gfd_coexistence_writes_none_of_gfds_names(env_factory):
    env = await env_factory(FakeGpuSource(a10x4()), gfd_coexistence=True)
    await eventually(lambda: RECORD in meta(env)[1])
    label_node(
        env, {**FOREIGN_LABELS, "nvidia.com/gpu.product": "NVIDIA-A10-by-GFD"}, dict(FOREIGN_ANNOTATIONS)
    )
    await env.agent.node.sync()
    labels, annotations = meta(env)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A10-by-GFD"  # GFD's value, not rewritten
    assert not [k for k in json.loads(annotations[RECORD])["labels"] if is_gfd_name(k)]
    assert_foreign_intact(env)
    await env.agent.node.uninstall()
    assert meta(env)[0]["nvidia.com/gpu.product"] == "NVIDIA-A10-by-GFD"


async def test_switching_to_gfd_coexistence_hands_recorded_gfd_names_over_without_removing_them(env_factory):
    env = await env_factory(FakeGpuSource(a10x4()), gfd_coexistence=True)
    old_record = {"v": 1, "labels": ["nvidia.com/gpu.count", "nvidia.com/gpu.product"], "annotations": []}
    label_node(
        env,
        {"nvidia.com/gpu.count": "4", "nvidia.com/gpu.product": "NVIDIA-A10"},
        {RECORD: json.dumps(old_record)},
    )
    await env.agent.node.sync()
    labels, annotations = meta(env)
    assert labels["nvidia.com/gpu.count"] == "4"
    assert json.loads(annotations[RECORD])["labels"] == []


@pytest.mark.parametrize("bad", ["not json", '{"v": 99}', '{"v": 1, "labels": "gpu.count"}'])
async def test_an_unreadable_record_removes_nothing_and_is_rewritten(env_factory, bad):
    env = await started(env_factory)
    label_node(env, {}, {RECORD: bad})
    await env.agent.node.sync()
    assert_foreign_intact(env)
    assert json.loads(meta(env)[1][RECORD])["v"] == 1


def test_the_plugin_reads_its_nodes_labels_for_label_matched_config(tmp_path, kmock_cluster, monkeypatch):
    """``plugin.__main__``: nodeConfig entries with matchLabels get the Node's labels from the API server."""
    from plugin.__main__ import _labelled
    from plugin.settings import load_settings

    body = {"metadata": {"name": "pool-node-17", "labels": {"nvidia.com/vgpu.config": "big"}}}
    kmock_cluster.core().create_node(body, _preload_content=False)
    # the kubeconfig path is fixed when the client is imported: hand over the client to kmock instead
    monkeypatch.setattr("plugin.__main__.new_api_client", kmock_cluster.api_client)
    config = tmp_path / "config.yaml"
    config.write_text(
        "version: v1\nnodeConfig:\n  - matchLabels: {nvidia.com/vgpu.config: big}\n    deviceMemoryScaling: 0.5\n"
    )
    argv = ["--node-name=pool-node-17", f"--config-file={config}"]
    assert load_settings(argv, env={}).device_memory_scaling == 1.0  # without the labels
    assert _labelled(load_settings(argv, env={}), argv).device_memory_scaling == 0.5
