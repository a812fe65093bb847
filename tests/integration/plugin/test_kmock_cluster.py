# mypy: disable-error-code="no-untyped-call"
"""The kmock subclass closes kmock 0.8's gaps (tests/fakes/kmock.py): ids on create, resourceVersion bumps, selectors,
the binding subresource (seen by watchers), node status patches."""

import json
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.fakes.kmock import KmockCluster, matches_selectors

POD = {"metadata": {"name": "p", "labels": {"app": "x", "tier": "gpu"}}, "spec": {"nodeName": "n1"}}


@pytest.mark.parametrize(
    ("labels", "fields", "matches"),
    [
        pytest.param("app=x", "", True, id="label equals"),
        pytest.param("app=x,tier!=cpu", "", True, id="label and not-equals"),
        pytest.param("app=y", "", False, id="label differs"),
        pytest.param("tier", "", True, id="label exists"),
        pytest.param("!tier", "", False, id="label must not exist"),
        pytest.param("", "spec.nodeName=n1", True, id="field equals"),
        pytest.param("", "spec.nodeName==n2", False, id="field differs"),
        pytest.param("", "metadata.name!=q", True, id="field not-equals"),
    ],
)
def test_selectors(labels, fields, matches):
    assert matches_selectors(POD, labels, fields) is matches


def test_create_patch_bind_and_watch_behave_like_an_api_server():
    with KmockCluster() as cluster:
        core = cluster.core()
        core.create_namespaced_pod("ns1", {"metadata": {"name": "p1"}, "spec": {"containers": []}})
        pod = json.loads(core.read_namespaced_pod("p1", "ns1", _preload_content=False).data)
        meta = pod["metadata"]
        assert meta["uid"]
        assert meta["namespace"] == "ns1"
        assert meta["creationTimestamp"]
        core.patch_namespaced_pod("p1", "ns1", {"metadata": {"labels": {"a": "b"}}}, _preload_content=False)
        after = json.loads(core.read_namespaced_pod("p1", "ns1", _preload_content=False).data)["metadata"]
        assert int(after["resourceVersion"]) > int(meta["resourceVersion"])
        cluster.bind("ns1", "p1", "n1")
        watcher = watch.Watch()
        first = next(watcher.stream(core.list_namespaced_pod, "ns1", _request_timeout=2))
        watcher.stop()
        assert first["object"].spec.node_name == "n1"
        listed = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n2", _preload_content=False)
        assert json.loads(listed.data)["items"] == []
        core.create_node({"metadata": {"name": "n1"}})
        core.patch_node_status("n1", {"status": {"capacity": {"example.com/x": "5"}}}, _preload_content=False)
        node = json.loads(core.read_node("n1", _preload_content=False).data)
        assert node["status"]["capacity"] == {"example.com/x": "5"}


def _pod_meta(core: Any, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(core.read_namespaced_pod(name, "ns1", _preload_content=False).data)[
        "metadata"
    ]
    return meta


def test_a_merge_patch_with_a_stale_resource_version_is_a_conflict_and_changes_nothing():
    """Two writers read the same version; the second patch, made on what it read, is refused (409)."""
    with KmockCluster() as cluster:
        core = cluster.core()
        core.create_namespaced_pod("ns1", {"metadata": {"name": "p1"}, "spec": {"containers": []}})
        read = _pod_meta(core, "p1")["resourceVersion"]
        first = {"metadata": {"resourceVersion": read, "labels": {"writer": "first"}}}
        core.patch_namespaced_pod("p1", "ns1", first, _preload_content=False)
        second = {"metadata": {"resourceVersion": read, "labels": {"writer": "second"}}}
        with pytest.raises(ApiException) as refused:
            core.patch_namespaced_pod("p1", "ns1", second, _preload_content=False)
        assert refused.value.status == 409
        assert "the object has been modified" in json.loads(str(refused.value.body))["message"]
        assert _pod_meta(core, "p1")["labels"] == {"writer": "first"}


def test_a_binding_with_a_stale_resource_version_is_a_conflict_and_binds_nothing():
    """The API server takes a Binding's uid and resourceVersion as preconditions: a pod changed since it was
    read is not bound."""
    with KmockCluster() as cluster:
        core = cluster.core()
        core.create_namespaced_pod("ns1", {"metadata": {"name": "p1"}, "spec": {"containers": []}})
        meta = _pod_meta(core, "p1")
        core.patch_namespaced_pod("p1", "ns1", {"metadata": {"labels": {"a": "b"}}}, _preload_content=False)
        binding = {
            "metadata": {"name": "p1", "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
            "target": {"kind": "Node", "name": "n1"},
        }
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod_binding("p1", "ns1", binding, _preload_content=False)
        assert refused.value.status == 409
        assert "ResourceVersion in precondition" in json.loads(str(refused.value.body))["message"]
        pod = json.loads(core.read_namespaced_pod("p1", "ns1", _preload_content=False).data)
        assert not pod["spec"].get("nodeName")
        binding["metadata"]["resourceVersion"] = _pod_meta(core, "p1")["resourceVersion"]
        core.create_namespaced_pod_binding("p1", "ns1", binding, _preload_content=False)
        pod = json.loads(core.read_namespaced_pod("p1", "ns1", _preload_content=False).data)
        assert pod["spec"]["nodeName"] == "n1"
