# mypy: disable-error-code="no-untyped-call"
"""The fake API server (tests/fakes/kmock.py) serves ``resource.k8s.io/v1`` as the real one behaves, through
the official client: empty lists before any object, a generated name from ``generateName``, a new
resourceVersion on every write, 409 on an update with a stale resourceVersion and on a delete whose
precondition fails, field selectors on ``spec.nodeName``, and a watch that reports creates, updates and
deletes in order."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ResourceV1Api
from kubernetes.client.exceptions import ApiException

from tests.fakes.kmock import KmockCluster


@pytest.fixture
def api() -> Iterator[Any]:
    with KmockCluster() as cluster:
        yield ResourceV1Api(cluster.api_client())


def slice_body(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"generateName": f"{node}-kube-vgpu.nvidia.com-"},
        "spec": {"driver": "kube-vgpu.nvidia.com", "nodeName": node,
                 "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}},
    }  # fmt: skip


def items(response: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(response.data)["items"]
    return found


def test_every_dra_kind_lists_empty_before_any_object(api: Any) -> None:
    assert items(api.list_resource_slice(_preload_content=False)) == []
    assert items(api.list_device_class(_preload_content=False)) == []
    assert items(api.list_namespaced_resource_claim("default", _preload_content=False)) == []
    assert items(api.list_namespaced_resource_claim_template("default", _preload_content=False)) == []


def test_generated_names_versions_and_stale_updates(api: Any) -> None:
    created = json.loads(api.create_resource_slice(slice_body("n1"), _preload_content=False).data)
    name = created["metadata"]["name"]
    assert name.startswith("n1-kube-vgpu.nvidia.com-")
    assert len(name) == len("n1-kube-vgpu.nvidia.com-") + 5
    updated = json.loads(api.replace_resource_slice(name, created, _preload_content=False).data)
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(ApiException) as stale:
        api.replace_resource_slice(name, created, _preload_content=False)
    assert stale.value.status == 409
    precondition = {"preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    with pytest.raises(ApiException) as refused:
        api.delete_resource_slice(name, body=precondition, _preload_content=False)
    assert refused.value.status == 409
    api.delete_resource_slice(name, _preload_content=False)
    assert items(api.list_resource_slice(_preload_content=False)) == []


def test_field_selectors_and_watch(api: Any) -> None:
    first = json.loads(api.create_resource_slice(slice_body("n1"), _preload_content=False).data)
    api.create_resource_slice(slice_body("n2"), _preload_content=False)
    mine = items(api.list_resource_slice(field_selector="spec.nodeName=n1", _preload_content=False))
    assert [s["spec"]["nodeName"] for s in mine] == ["n1"]
    version = first["metadata"]["resourceVersion"]
    api.replace_resource_slice(first["metadata"]["name"], first, _preload_content=False)
    api.delete_resource_slice(first["metadata"]["name"], _preload_content=False)
    seen = [
        (event["type"], event["object"].spec.node_name)
        for event in watch.Watch().stream(
            api.list_resource_slice, resource_version=version, timeout_seconds=1
        )
    ]
    assert seen == [("ADDED", "n2"), ("MODIFIED", "n1"), ("DELETED", "n1")]
