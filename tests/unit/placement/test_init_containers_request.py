"""parse_pod_request tells init containers, sidecars (``restartPolicy: Always``) and app containers apart, in the
kubelet's order; effective_totals is ``component-helpers``' PodRequests rule for the two vcuda resources."""

from typing import Any

import pytest

from vcuda.model import ContainerKind, ContainerRequest, PodRequest
from vcuda.names import Names
from vcuda.request import effective_totals, parse_pod_request

NAMES = Names()
INIT, SIDECAR, APP = ContainerKind.INIT, ContainerKind.SIDECAR, ContainerKind.APP


def ctr(name: str, cores: int, mib: int, **extra: Any) -> dict[str, Any]:
    limits = {NAMES.core: str(cores), NAMES.memory: str(mib)}
    return {"name": name, "resources": {"limits": limits}, **extra}


def test_kinds_follow_the_pod_spec_in_kubelet_order() -> None:
    pod = {
        "spec": {
            "initContainers": [ctr("setup", 50, 100), ctr("proxy", 20, 100, restartPolicy="Always")],
            "containers": [ctr("main", 50, 100)],
        }
    }
    request = parse_pod_request(pod, NAMES)
    assert [(c.name, c.kind) for c in request.containers] == [
        ("setup", INIT),
        ("proxy", SIDECAR),
        ("main", APP),
    ]


def pod_of(*containers: tuple[ContainerKind, int, int]) -> PodRequest:
    return PodRequest(tuple(ContainerRequest(f"c{i}", c, m, k) for i, (k, c, m) in enumerate(containers)))


@pytest.mark.parametrize(
    ("containers", "totals"),
    [
        pytest.param([(INIT, 50, 10), (APP, 50, 10)], (50, 10), id="init 50 + app 50 -> 50, not 100"),
        pytest.param([(INIT, 70, 10), (APP, 30, 20), (APP, 30, 20)], (70, 40), id="max(init, sum of apps)"),
        pytest.param([(SIDECAR, 20, 5), (INIT, 50, 10), (APP, 50, 10)], (70, 15), id="sidecar added to both"),
        pytest.param(
            [(INIT, 50, 10), (SIDECAR, 20, 5), (APP, 10, 1)], (50, 10), id="init before the sidecar"
        ),
        pytest.param([(APP, 30, 1), (APP, 30, 1)], (60, 2), id="apps only: the sum"),
    ],
)
def test_effective_totals_follow_the_pod_requests_rule(
    containers: list[tuple[ContainerKind, int, int]], totals: tuple[int, int]
) -> None:
    assert effective_totals(pod_of(*containers)) == totals
