"""``extender.kube.Binding``: the one value a bind writes, and the ``v1`` Binding body the API server receives
(its ``metadata.uid`` / ``metadata.resourceVersion`` are preconditions, so they are sent only when known)."""

import pytest

from extender.kube import Binding


@pytest.mark.parametrize(
    ("binding", "metadata"),
    [
        pytest.param(
            Binding("team", "p", "n1", {"a": "1"}, uid="u1", resource_version="7"),
            {
                "name": "p",
                "namespace": "team",
                "uid": "u1",
                "resourceVersion": "7",
                "annotations": {"a": "1"},
            },
            id="every precondition and the annotations",
        ),
        pytest.param(
            Binding("team", "p", "n1"), {"name": "p", "namespace": "team"}, id="no precondition known"
        ),
        pytest.param(
            Binding("team", "p", "n1", {}, uid="u1"),
            {"name": "p", "namespace": "team", "uid": "u1"},
            id="the UID alone, no annotations",
        ),
    ],
)
def test_a_binding_body_sends_only_the_preconditions_it_knows(
    binding: Binding, metadata: dict[str, object]
) -> None:
    assert binding.body() == {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": metadata,
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
    }


def test_the_body_owns_a_copy_of_the_annotations() -> None:
    annotations = {"a": "1"}
    body = Binding("team", "p", "n1", annotations).body()
    annotations["a"] = "2"
    assert body["metadata"].get("annotations") == {"a": "1"}
