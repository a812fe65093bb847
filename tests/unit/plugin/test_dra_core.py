"""The DRA driver's pure core: reading an allocated claim, planning its limits and CDI spec, the parameters.

Cases: a share, a whole GPU, every core taken, two results on one GPU, two GPUs, other drivers' results,
``coreLimit`` from class and claim configs (claim wins, per request, sub-requests), the owner pod; hostile
claims (table): not allocated, replaced, another node's pool, unknown device, MIG GPU, capacities out of
range or malformed, parameters malformed, wrong shapes; property: any JSON is a ClaimError or a plan; the
names a claim's devices and config get read back as its UID (property), names never made read as none.
"""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.core.allocate import PlanOptions
from plugin.core.cdi import DriverFiles
from plugin.core.dra import (
    ClaimError,
    ClaimRef,
    cdi_kind,
    claim_cdi_name,
    claim_container,
    claim_of_cdi_device,
    claim_of_container,
    device_name,
    dra_inventory,
    node_devices,
    read_allocation,
)
from plugin.core.dra_params import GpuShareParameters, ParametersError, parse_parameters
from plugin.core.dra_plan import ClaimPlan, claim_spec, plan_claim
from plugin.core.gpu import Gpu
from tests.builders.dra import DRIVER, GIB, NODE, claim, config, dev, parameters, pod_owner, result
from tests.builders.plugin import NAMES, h100x8
from vcuda import names
from vcuda.model import GpuInfo, GpuMode, GpuUuid, NodeInventory
from vcuda.shimfile import GpuLimit

GPUS = h100x8().gpus
G0, G1 = GPUS[0], GPUS[1]
TOTAL = G0.memory_mib << 20
KIND = cdi_kind(NAMES.domain)


def plan(body: dict[str, Any], gpus: tuple[Gpu, ...] = GPUS, *, uid: str | None = None) -> ClaimPlan:
    """Plan ``body`` as the kubelet names it (``uid``: the UID the kubelet sends, default the claim's)."""
    meta = body["metadata"]
    ref = ClaimRef(meta["namespace"], meta["name"], uid or meta["uid"])
    alloc = read_allocation(body, ref, DRIVER, NAMES.domain)
    return plan_claim(alloc, node_devices(gpus), pool=NODE, kind=KIND)


def test_a_share_gets_its_consumed_memory_and_cores_as_hard_limits() -> None:
    body = claim(uid="c-1", results=[result(dev(G0), memory=4 * GIB, cores=30, share_id="s-1")])
    p = plan(body)
    assert p.config.gpus == (GpuLimit(G0.uuid, 4 * GIB, 30, 30),)
    assert (p.config.pod_uid, p.config.pod_name, p.config.container) == ("pod-uid-1", "p1", "dra-c-1")
    assert p.dir_name == "pod-uid-1_dra-c-1"
    (device,) = p.devices
    assert device.requests == ("gpu",)
    assert device.cdi_ids == (f"{KIND}=c-1-{dev(G0)}",)
    assert device.share_id == "s-1"


def _held(pods: list[tuple[str, str]], *owners: dict[str, Any], from_template: bool = True) -> dict[str, Any]:
    """Claim ``c`` (UID c-1) reserved for ``pods``; ``owners`` replace the template's owner reference."""
    body = claim(
        "c",
        uid="c-1",
        pods=pods,
        results=[result(dev(G0), memory=GIB, cores=30)],
        from_template=from_template,
    )
    if owners:
        body["metadata"]["ownerReferences"] = list(owners)
    return body


P1 = ("p1", "pod-uid-1")
THE_CLAIM = ("c-1", "c")


@pytest.mark.parametrize(
    ("body", "identity"),
    [
        pytest.param(_held([P1]), ("pod-uid-1", "p1"), id="made from the pod's template"),
        pytest.param(_held([P1], from_template=False), THE_CLAIM, id="a claim of its own, one pod now"),
        pytest.param(_held([P1, ("p2", "pod-uid-2")]), THE_CLAIM, id="reserved for two pods"),
        pytest.param(
            _held([P1], pod_owner("victim", "pod-uid-2")),
            THE_CLAIM,
            id="a controller the tenant wrote, naming another pod",
        ),
        pytest.param(
            _held([P1], pod_owner(*P1) | {"controller": False}),
            THE_CLAIM,
            id="the pod an owner, not the controller",
        ),
        pytest.param(
            _held([P1], pod_owner(*P1) | {"apiVersion": "x/v1"}), THE_CLAIM, id="an owner of another group"
        ),
    ],
)
def test_a_claim_takes_its_pods_identity_only_when_made_from_that_pods_template(
    body: dict[str, Any], identity: tuple[str, str]
) -> None:
    """A shareable claim held by one pod at its first prepare keeps its own identity: a second pod may join
    later, and its use must not be attributed to the first."""
    p = plan(body)
    assert (p.config.pod_uid, p.config.pod_name) == identity
    assert p.dir_name == f"{identity[0]}_dra-c-1"


@pytest.mark.parametrize(
    ("consumed", "limit"),
    [
        pytest.param(
            {}, GpuLimit(G0.uuid, TOTAL, 100, 100), id="no consumedCapacity (exclusive) -> whole GPU"
        ),
        pytest.param(
            {"cores": 100, "memory": GIB}, GpuLimit(G0.uuid, TOTAL, 100, 100), id="every core -> all memory"
        ),
        pytest.param({"cores": 20}, GpuLimit(G0.uuid, TOTAL, 20, 20), id="memory not consumed -> all memory"),
        pytest.param(
            {"memory": GIB}, GpuLimit(G0.uuid, TOTAL, 100, 100), id="cores not consumed -> whole GPU"
        ),
    ],
)
def test_capacity_not_shared_out_belongs_to_the_result(consumed: dict[str, int], limit: GpuLimit) -> None:
    assert plan(
        claim(results=[result(dev(G0), memory=consumed.get("memory"), cores=consumed.get("cores"))])
    ).config.gpus == (limit,)


def test_two_results_on_one_gpu_add_up_and_two_gpus_get_two_records() -> None:
    results = [
        result(dev(G0), request="a", memory=GIB, cores=10),
        result(dev(G0), request="b", memory=2 * GIB, cores=20),
        result(dev(G1), request="c"),
    ]
    p = plan(claim(uid="c-2", results=results))
    assert p.config.gpus == (
        GpuLimit(G0.uuid, 3 * GIB, 30, 30),
        GpuLimit(G1.uuid, G1.memory_mib << 20, 100, 100),
    )
    assert [d.requests for d in p.devices] == [("a",), ("b",), ("c",)]
    assert [n for n, _ in p.gpus] == [f"c-2-{dev(G0)}", f"c-2-{dev(G1)}"]


def test_results_of_other_drivers_are_left_to_them() -> None:
    results = [result("nic-0", driver="net.example.com", pool="x"), result(dev(G0), cores=50, memory=GIB)]
    assert [d.device for d in plan(claim(results=results)).devices] == [dev(G0)]


@pytest.mark.parametrize(
    ("configs", "request_name", "soft"),
    [
        pytest.param([config(parameters(60))], "gpu", 60, id="claim coreLimit 60 -> soft 60"),
        pytest.param([config(parameters(10))], "gpu", 30, id="coreLimit below the share -> the share"),
        pytest.param(
            [config(parameters(40), source="FromClass"), config(parameters(70))],
            "gpu",
            70,
            id="class config then claim config -> the claim's",
        ),
        pytest.param(
            [config(parameters(70)), config(parameters(40), source="FromClass")],
            "gpu",
            70,
            id="class config listed after -> still the claim's",
        ),
        pytest.param(
            [config(parameters(90), requests=["other"])], "gpu", 30, id="config of another request -> none"
        ),
        pytest.param(
            [config(parameters(80), requests=["gpu"])],
            "gpu/small",
            80,
            id="sub-request -> its request's config",
        ),
        pytest.param(
            [config({"anything": 1}, driver="x.example.com")],
            "gpu",
            30,
            id="another driver's config -> ignored",
        ),
    ],
)
def test_soft_limit_comes_from_the_parameters(
    configs: list[dict[str, Any]], request_name: str, soft: int
) -> None:
    body = claim(results=[result(dev(G0), request=request_name, memory=GIB, cores=30)], configs=configs)
    assert plan(body).config.gpus[0].soft_limit == soft


def test_a_claim_shared_by_several_pods_is_owned_by_the_claim() -> None:
    body = claim(
        name="shared",
        uid="c-3",
        results=[result(dev(G0), cores=10, memory=GIB)],
        pods=[("a", "u-a"), ("b", "u-b")],
    )
    p = plan(body)
    assert (p.config.pod_uid, p.config.pod_name, p.dir_name) == ("c-3", "shared", "c-3_dra-c-3")


def _mig(g: Gpu) -> Gpu:
    return Gpu(g.uuid, g.index, g.minor, g.model, g.memory_mib, g.pci_bus_id, mig_enabled=True)


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = body
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


def _share(**kw: Any) -> dict[str, Any]:
    return claim(uid="c-9", results=[result(dev(G0), memory=GIB, cores=30, **kw)])


HOSTILE = [
    pytest.param(claim(uid="c-9", allocated=False), "not allocated", id="not allocated"),
    pytest.param(_with(_share(), "metadata.uid", "other"), "replaced", id="UID differs from the kubelet's"),
    pytest.param(_share(pool="node-2"), "not on this node", id="another node's pool"),
    pytest.param(
        claim(uid="c-9", results=[result("gpu-0")]),
        "not a GPU of this node",
        id="a device name of another driver",
    ),
    pytest.param(
        claim(uid="c-9", results=[result("gpu-x", driver="gpu.nvidia.com")]),
        "no device of driver",
        id="only other drivers' devices",
    ),
    pytest.param(
        claim(uid="c-9", results=[result(dev(G0), memory=TOTAL + 1, cores=10)]),
        "outside",
        id="memory beyond the GPU",
    ),
    pytest.param(claim(uid="c-9", results=[result(dev(G0), memory=0, cores=10)]), "outside", id="no memory"),
    pytest.param(claim(uid="c-9", results=[result(dev(G0), memory=GIB, cores=0)]), "outside", id="0 cores"),
    pytest.param(
        claim(uid="c-9", results=[result(dev(G0), memory=GIB, cores=101)]), "outside", id="101 cores"
    ),
    pytest.param(
        claim(uid="c-9", results=[result(dev(G0), memory=GIB, cores="300m")]),
        "not a whole number",
        id="fractional cores",
    ),
    pytest.param(
        claim(uid="c-9", results=[result(dev(G0), memory="lots", cores=5)]),
        "memory",
        id="memory not a quantity",
    ),
    pytest.param(
        _with(_share(), "status.allocation.devices.results.0.consumedCapacity.cores", 30),
        "",
        id="cores a JSON number (fine)",
    ),
    pytest.param(
        _with(_share(), "status.allocation.devices.results.0.consumedCapacity.cores", [1]),
        "quantity",
        id="cores a list",
    ),
    pytest.param(
        claim(
            uid="c-9",
            results=[
                result(dev(G0), request="a", memory=GIB, cores=60),
                result(dev(G0), request="b", memory=GIB, cores=60),
            ],
        ),
        "more than the GPU",
        id="results adding up past the GPU",
    ),
    pytest.param(
        _with(_share(), "status.allocation.devices.results", {"0": 1}),
        "must be a list",
        id="results not a list",
    ),
    pytest.param(
        _with(_share(), "status.allocation.devices.results.0", "gpu"),
        "must be an object",
        id="a result not an object",
    ),
    pytest.param(
        _with(_share(), "status.allocation.devices.results.0.device", ""),
        "non-empty name",
        id="empty device name",
    ),
    pytest.param(
        _with(_share(), "status.reservedFor.0.uid", "../../etc"), "UID", id="reservedFor pod UID with a path"
    ),
    pytest.param(_with(_share(), "status", None), "status must be an object", id="status null"),
    pytest.param(
        claim(
            uid="c-9", results=[result(dev(G0), cores=10, memory=GIB)], configs=[config(parameters(kind=1))]
        ),
        "kind GpuShareParameters",
        id="parameters kind a number",
    ),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE)
def test_hostile_claims_are_a_claim_error_naming_the_problem(body: dict[str, Any], message: str) -> None:
    if not message:  # the benign rows: they plan
        plan(body, uid="c-9")
        return
    with pytest.raises(ClaimError, match=message):
        plan(body, uid="c-9")


def test_a_mig_gpu_is_not_a_device_claims_may_share() -> None:
    with pytest.raises(ClaimError, match="not a GPU of this node"):
        plan(claim(results=[result(dev(G0), cores=10, memory=GIB)]), gpus=(_mig(G0), G1))


def test_a_claim_uid_that_is_not_a_uid_is_refused() -> None:
    body = claim(uid="../x", results=[result(dev(G0))])
    with pytest.raises(ClaimError, match="not a Kubernetes UID"):
        plan(body)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("coreLimit: 60", "must be an object", id="a string"),
        pytest.param({"kind": "GpuShareParameters", "coreLimit": 60}, "apiVersion", id="no apiVersion"),
        pytest.param(parameters(60) | {"apiVersion": "nvidia.com/v2"}, "apiVersion", id="unknown version"),
        pytest.param(parameters(60) | {"kind": "Other"}, "kind", id="another kind"),
        pytest.param(parameters(60, memoryLimit=5), "unknown field 'memoryLimit'", id="unknown field"),
        pytest.param(parameters(0), "coreLimit", id="coreLimit 0"),
        pytest.param(parameters(101), "coreLimit", id="coreLimit 101"),
        pytest.param(parameters("60"), "coreLimit", id="coreLimit a string"),
        pytest.param(parameters(True), "coreLimit", id="coreLimit a bool"),
        pytest.param(parameters(60.0), "coreLimit", id="coreLimit a float"),
    ],
)
def test_malformed_parameters_are_refused(raw: object, message: str) -> None:
    with pytest.raises(ParametersError, match=message):
        parse_parameters(raw, NAMES.domain)


def test_malformed_parameters_fail_the_claim() -> None:
    body = claim(results=[result(dev(G0), cores=10, memory=GIB)], configs=[config(parameters(150))])
    with pytest.raises(ClaimError, match=r"config\[0\]: coreLimit"):
        plan(body)


def test_parameters_without_a_limit_are_valid() -> None:
    assert parse_parameters(parameters(), NAMES.domain) == GpuShareParameters()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(path=st.sampled_from(["status.allocation.devices", "status.allocation.devices.results.0",
                             "status.allocation.devices.results.0.consumedCapacity", "status.reservedFor",
                             "status.allocation.devices.config"]), value=JSON)  # fmt: skip
def test_any_content_is_a_claim_error_or_a_valid_plan(path: str, value: Any) -> None:
    body = claim(uid="c-9", results=[result(dev(G0), memory=GIB, cores=30)], configs=[config(parameters(50))])
    body = _with(json.loads(json.dumps(body)), path, value)
    try:
        p = plan(body)
    except ClaimError:
        return
    for g in p.config.gpus:
        assert 1 <= g.core_limit <= g.soft_limit <= 100
        assert 0 < g.memory_limit_bytes <= TOTAL


def test_the_cdi_spec_exposes_the_gpu_and_mounts_the_shim_config_and_usage() -> None:
    p = plan(claim(uid="c-1", results=[result(dev(G1), memory=GIB, cores=30)]))
    spec = claim_spec(
        p, DriverFiles(), PlanOptions(state_dir="/var/lib/kube-vgpu"), kind=KIND, version="0.5.0"
    )
    assert spec["kind"] == KIND
    assert spec["devices"] == [
        {"name": f"c-1-{dev(G1)}", "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{G1.minor}"}]}}
    ]
    edits = spec["containerEdits"]
    assert {"path": "/dev/nvidiactl"} in edits["deviceNodes"]
    mounts = {m["containerPath"]: m for m in edits["mounts"]}
    assert mounts[names.LD_SO_PRELOAD_PATH]["hostPath"] == "/var/lib/kube-vgpu/ld.so.preload"
    assert (
        mounts[names.CONTAINER_CONFIG_PATH]["hostPath"]
        == f"/var/lib/kube-vgpu/containers/{p.dir_name}/vcuda.config"
    )
    assert mounts[names.CONTAINER_CONFIG_PATH]["options"][0] == "ro"
    assert mounts[names.CONTAINER_USAGE_DIR]["options"][0] == "rw"
    assert names.CONTAINER_SHIM_PATH in mounts
    assert f"{names.ENV_POD_UID}=pod-uid-1" in edits["env"]


def test_a_dra_node_lists_its_gpus_under_other_with_mode_dra() -> None:
    info = GpuInfo(GpuUuid("GPU-a"), 0, "H100", 81920, True, 0)
    inventory = dra_inventory(NodeInventory((info,)), DRIVER)
    assert inventory.gpus == ()
    (other,) = inventory.other
    assert (other.uuid, other.mode, other.resource, other.memory_mib) == ("GPU-a", GpuMode.DRA, DRIVER, 81920)


def test_a_claim_on_a_gpu_out_of_service_is_refused_clearly() -> None:
    body = claim(results=[result(dev(G1), cores=10, memory=GIB)])
    meta = body["metadata"]
    alloc = read_allocation(
        body, ClaimRef(meta["namespace"], meta["name"], meta["uid"]), DRIVER, NAMES.domain
    )
    with pytest.raises(ClaimError, match=f"GPU {G1.uuid} .* is unhealthy"):
        plan_claim(alloc, node_devices(GPUS), pool=NODE, kind=KIND, unhealthy={G1.uuid})


@given(uid=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,58}", fullmatch=True), gpu=st.sampled_from(GPUS))
def test_the_names_a_claim_is_planned_under_read_back_as_its_uid(uid: str, gpu: Gpu) -> None:
    """The metrics exporter finds a claim's UID in the names the driver gave its devices and its config."""
    qualified = f"{KIND}={claim_cdi_name(uid, device_name(gpu))}"
    assert claim_of_cdi_device(qualified) == uid
    assert claim_of_container(claim_container(uid)) == uid


@pytest.mark.parametrize(
    "qualified",
    [
        pytest.param("gpu.nvidia.com/claim=u-gpu-x", id="another driver"),
        pytest.param(f"{KIND.rpartition('/')[0]}/gpu=u-gpu-x", id="another kind"),
        pytest.param(f"{KIND}=../../etc-gpu-x", id="a path in the UID"),
        pytest.param(f"{KIND}=u-cpu-x", id="not a GPU or MIG device"),
    ],
)
def test_names_the_driver_never_makes_read_as_no_claim(qualified: str) -> None:
    assert claim_of_cdi_device(qualified) is None
    assert claim_of_container("main") is None
