"""The example pods in ``deploy/examples/`` are valid Kubernetes and mean what their names say.

Cases: every example passes ``kubernetes-validate --strict`` for Kubernetes 1.29, 1.31 and 1.33, asks for
``kube-vgpu-scheduler``, and parses with ``vcuda.request.parse_pod_request`` to the request in the table
below, except ``invalid-150-cores.yaml``, which fails with reason ``core-invalid`` (the demo and the e2e
tests submit these files).
"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from vcuda.errors import InvalidRequestError
from vcuda.names import Names
from vcuda.request import parse_pod_request

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
KUBERNETES_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")

# file -> ((container, vcuda-core, vcuda-memory MiB), ...), soft limit, include models, GPU policy
EXPECTED: dict[str, tuple[tuple[tuple[str, int, int], ...], int | None, frozenset[str], str | None]] = {
    "fractional.yaml": ((("cuda", 30, 4096),), None, frozenset(), None),
    "multi-container.yaml": ((("trainer", 50, 16384), ("evaluator", 20, 4096)), None, frozenset(), None),
    "two-gpu-nvlink.yaml": ((("cuda", 200, 0),), None, frozenset({"h100"}), None),
    "soft-limit.yaml": ((("cuda", 20, 2048),), 60, frozenset(), None),
    "model-selection.yaml": ((("cuda", 40, 8192),), None, frozenset({"a10"}), "spread"),
}
INVALID = {"invalid-150-cores.yaml": "core-invalid"}


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def test_the_example_set_is_the_one_the_demo_expects() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted([*EXPECTED, *INVALID])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted([*EXPECTED, *INVALID]))
def test_example_is_a_valid_pod(name: str, version: str) -> None:
    pod = load(name)
    kv.validate(pod, version, strict=True)
    assert pod["spec"]["schedulerName"] == "kube-vgpu-scheduler"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_parses_to_its_request(name: str) -> None:
    containers, soft_limit, models, policy = EXPECTED[name]
    request = parse_pod_request(load(name), Names())
    assert tuple((c.name, c.cores, c.memory_mib) for c in request.containers) == containers
    assert request.core_limit == soft_limit
    assert request.constraints.include_models == models
    assert (request.constraints.gpu_policy.value if request.constraints.gpu_policy else None) == policy


@pytest.mark.parametrize(("name", "reason"), sorted(INVALID.items()))
def test_invalid_example_is_rejected_with_its_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_pod_request(load(name), Names())
    assert caught.value.reason == reason
