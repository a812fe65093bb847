"""parse_pod_request: every invalid request gets a distinct reason and a sentence naming the fix.

Cases: fractional, exclusive, multi-GPU, init containers, no GPU; invalid core values (150, 250, -1, 1700),
memory without core, share without memory, malformed quantity, soft limit below request or out of range,
unknown policy, non-string selector.
"""

from typing import Any

import pytest

from vcuda.errors import InvalidRequestError
from vcuda.model import ContainerRequest, Policy
from vcuda.names import Names
from vcuda.request import REASONS, parse_pod_request, wants_gpu

NAMES = Names()


def pod(
    *containers: dict[str, Any], annotations: dict[str, str] | None = None, init: bool = False
) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    return {"metadata": {"name": "p", "annotations": annotations or {}}, "spec": {key: list(containers)}}


def ctr(name: str = "c", core: object = None, memory: object = None) -> dict[str, Any]:
    limits: dict[str, object] = {}
    if core is not None:
        limits[NAMES.core] = core
    if memory is not None:
        limits[NAMES.memory] = memory
    return {"name": name, "resources": {"limits": limits}}


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        pytest.param(ctr(core=30, memory=4096), ContainerRequest("c", 30, 4096), id="30 cores + 4096 MiB"),
        pytest.param(ctr(core="100"), ContainerRequest("c", 100, 0), id="100 = one whole GPU, no memory"),
        pytest.param(ctr(core=200), ContainerRequest("c", 200, 0), id="200 = two whole GPUs"),
        pytest.param(
            ctr(core=100, memory="4k"), ContainerRequest("c", 100, 4000), id="quantity suffix: a count"
        ),
    ],
)
def test_valid_requests_are_read(container: dict[str, Any], expected: ContainerRequest) -> None:
    assert parse_pod_request(pod(container), NAMES).containers == (expected,)


def test_a_pod_without_vcuda_resources_asks_for_nothing() -> None:
    plain = pod({"name": "c", "resources": {"limits": {"cpu": "1"}}})
    assert parse_pod_request(plain, NAMES).containers == ()
    assert not wants_gpu(plain, NAMES)


def test_init_containers_come_first() -> None:
    spec = pod(ctr("main", 20, 100))
    spec["spec"]["initContainers"] = [ctr("init", 10, 100)]
    assert [c.name for c in parse_pod_request(spec, NAMES).containers] == ["init", "main"]


@pytest.mark.parametrize(
    ("container", "annotations", "reason", "words"),
    [
        pytest.param(
            ctr(core=150, memory=10), {}, "core-invalid", "use 1..100 or a multiple of 100", id="150"
        ),
        pytest.param(ctr(core=250), {}, "core-invalid", "250 is invalid", id="250"),
        pytest.param(ctr(core=-1, memory=5), {}, "core-invalid", "-1", id="negative"),
        pytest.param(ctr(core=1700), {}, "core-too-large", "more than 16 GPUs", id="17 GPUs"),
        pytest.param(
            ctr(memory=1024), {}, "memory-without-core", "needs nvidia.com/vcuda-core", id="memory only"
        ),
        pytest.param(
            ctr(core=30), {}, "memory-missing", "needs nvidia.com/vcuda-memory", id="share, no memory"
        ),
        pytest.param(ctr(core="abc"), {}, "quantity-invalid", "not a whole number", id="not a number"),
        pytest.param(ctr(core="0.5"), {}, "quantity-invalid", "not a whole number", id="fraction"),
        pytest.param(ctr(core=30, memory=-5), {}, "memory-invalid", "must be positive", id="negative memory"),
        pytest.param(
            ctr(core=30, memory=10),
            {NAMES.core_limit: "20"},
            "core-limit-invalid",
            "below",
            id="limit < request",
        ),
        pytest.param(
            ctr(core=30, memory=10),
            {NAMES.core_limit: "120"},
            "core-limit-invalid",
            "1..100",
            id="limit > 100",
        ),
        pytest.param(
            ctr(core=30, memory=10),
            {NAMES.gpu_policy: "random"},
            "policy-invalid",
            "binpack",
            id="bad policy",
        ),
    ],
)
def test_invalid_requests_name_their_reason(
    container: dict[str, Any], annotations: dict[str, str], reason: str, words: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_pod_request(pod(container, annotations=annotations), NAMES)
    assert caught.value.reason == reason
    assert reason in REASONS
    assert words in str(caught.value)


def test_annotations_become_constraints() -> None:
    annotations = {
        NAMES.include_models: "H100, A100",
        NAMES.exclude_uuids: "GPU-1",
        NAMES.gpu_policy: "Spread",
        NAMES.core_limit: "60",
    }
    request = parse_pod_request(pod(ctr(core=30, memory=10), annotations=annotations), NAMES)
    assert request.constraints.include_models == {"h100", "a100"}
    assert request.constraints.exclude_uuids == {"GPU-1"}
    assert request.constraints.gpu_policy is Policy.SPREAD
    assert request.core_limit == 60


def test_resource_domain_is_configurable() -> None:
    names = Names("example.com")
    spec = pod({"name": "c", "resources": {"limits": {"example.com/vcuda-core": 100}}})
    assert parse_pod_request(spec, names).containers[0].cores == 100
    assert parse_pod_request(spec, NAMES).containers == ()
