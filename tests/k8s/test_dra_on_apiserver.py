"""The DRA objects against the real kube-apiserver v1.37.2 (its own validation: request policies, counter
references, device limits, taints, CEL compilation of selectors and constraints).

Cases: the chart's DeviceClasses (``dra.enabled``) and every example of ``deploy/examples/dra/`` are accepted
(dry run); a DeviceClass whose CEL does not compile is refused, so the acceptance means something; the
publisher creates a node's pool (8 x H100 through ``ResourceV1Api``), a second sync of the same GPUs writes
nothing (what the server stores reads back equal: canonical quantities, taint times ignored), a sick GPU is
tainted at the next pool generation and the server stamps the taint's time without making the next sync
write again; a MIG node's partitionable devices and their counter slice are accepted.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from plugin.core.gpu import NodeGpus
from plugin.core.resourceslice import SliceOptions, driver_name, pool_specs
from plugin.slicepublisher import SlicePublisher
from tests.builders.mig import a100
from tests.builders.plugin import gpus
from tests.k8s.chart import ApplyError, apply, render
from tests.k8s.cluster import K8sCluster

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "dra"
DRIVER = driver_name("nvidia.com")


def slices(k8s: K8sCluster, node: str) -> list[dict[str, Any]]:
    api = k8s.client("ResourceV1Api")
    answer = api.list_resource_slice(field_selector=f"spec.nodeName={node}", _preload_content=False)
    items: list[dict[str, Any]] = json.loads(answer.data)["items"]
    return items


def publisher(k8s: K8sCluster, node: str) -> SlicePublisher:
    uid = k8s.client("CoreV1Api").read_node(node).metadata.uid
    return SlicePublisher(k8s.api, driver=DRIVER, node=node, owner={"name": node, "uid": uid})


def test_the_charts_device_classes_are_accepted(k8s: K8sCluster, tmp_path: Path) -> None:
    objects = render(tmp_path, "dra.enabled=true", "dra.migDeviceClass=true", release="dra")
    classes = [o for o in objects if o["kind"] == "DeviceClass"]
    assert len(classes) == 3
    apply(k8s.api, classes, dry_run=True)


def test_a_device_class_whose_cel_does_not_compile_is_refused(k8s: K8sCluster, tmp_path: Path) -> None:
    (broken,) = [
        o for o in render(tmp_path, "dra.enabled=true", release="dra") if o["kind"] == "DeviceClass"
    ][:1]
    broken["spec"]["selectors"][0]["cel"]["expression"] = 'device.driver == "x" &&'
    with pytest.raises(ApplyError, match="compil"):
        apply(k8s.api, [broken], dry_run=True)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_each_example_is_accepted(k8s: K8sCluster, namespace: str, path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in documents:
        doc["metadata"]["namespace"] = namespace
    apply(k8s.api, documents, dry_run=True)


async def test_the_publisher_keeps_a_pool_on_the_real_api_server(k8s: K8sCluster) -> None:
    node = "k8s-h100"
    found = gpus(8, node=node)
    options = SliceOptions(driver=DRIVER, node=node, unhealthy={}, pcie_roots={})
    pub = publisher(k8s, node)
    assert await pub.sync(pool_specs(found, options, 0)) is True
    assert await pub.sync(pool_specs(found, options, 0)) is False
    sick = dataclasses.replace(options, unhealthy={str(found.gpus[1].uuid): "xid-79"})
    assert await pub.sync(pool_specs(found, sick, 0)) is True
    (stored,) = slices(k8s, node)
    taint = stored["spec"]["devices"][1]["taints"][0]
    assert (taint["value"], "timeAdded" in taint) == ("xid-79", True)
    assert stored["spec"]["pool"]["generation"] == 2
    assert await pub.sync(pool_specs(found, sick, 0)) is False


async def test_a_mig_nodes_partitionable_devices_are_accepted(k8s: K8sCluster) -> None:
    node = "k8s-a10"  # any Node will do as the owner; the GPUs are made up
    mig = NodeGpus((a100(0, "3g.20gb", "2g.10gb", "1g.5gb"),), (), "580.95.05", "13.0")
    options = SliceOptions(driver=DRIVER, node=node, unhealthy={}, pcie_roots={})
    pub = publisher(k8s, node)
    assert await pub.sync(pool_specs(mig, options, 0)) is True
    assert await pub.sync(pool_specs(mig, options, 0)) is False
    stored = slices(k8s, node)
    assert sorted(len(s["spec"].get("devices", [])) for s in stored) == [0, 3]
