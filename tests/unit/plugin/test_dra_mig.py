"""DRA claims of MIG instances: planned whole (the instance's device nodes, no shim), refused when they
cannot be; the preparer writes the CDI spec only and unprepare removes it.

Cases: a MIG claim's CDI device (parent node, both capability devices from ``mig-minors``) and spec (the
driver's common edits, no shim mount, no config GPU); the device names are the slice's; refused (table):
consumed capacity, a share ID, the instance twice, an unhealthy parent or instance, an instance the node
does not have (or of a GPU whose MIG mode change waits for a reset), capabilities the driver does not list, instances mixed
with a shared GPU in one claim; the preparer on a temporary tree.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from plugin.core.allocate import CONTROL_DEVICES, PlanOptions
from plugin.core.cdi import DriverFiles
from plugin.core.dra import ClaimError, ClaimRef, cdi_kind, device_name, node_devices, read_allocation
from plugin.core.dra_plan import ClaimPlan, claim_spec, plan_claim
from plugin.core.mig import mig_devices
from plugin.core.resourceslice import device_name as slice_device_name
from plugin.dra.checkpoint import Checkpoint
from plugin.dra.prepare import ClaimPreparer, DriverInfo
from plugin.statedir import StateDir
from tests.builders.dra import DRIVER, GIB, NODE, claim, result
from tests.builders.mig import a100
from tests.builders.plugin import NAMES
from vcuda import names

MIG_GPU = a100(0, "3g.20gb", "2g.10gb")
PLAIN = a100(1, mig_enabled=False, pending=False)
PENDING = a100(2, "1g.5gb", pending=False)  # MIG on, off after the next reset
GPUS = (MIG_GPU, PLAIN, PENDING)
M3G, M2G = mig_devices([MIG_GPU])
KIND = cdi_kind(NAMES.domain)
# The driver's capability minors: gpu0 (minor 0) has GPU instances 1 and 2, each with compute instance 0.
MINORS = {
    "config": 1,
    "monitor": 2,
    "gpu0/gi1/access": 12,
    "gpu0/gi1/ci0/access": 13,
    "gpu0/gi2/access": 21,
    "gpu0/gi2/ci0/access": 22,
}


def plan(body: dict[str, Any], *, unhealthy: frozenset[str] = frozenset(), minors: Any = None) -> ClaimPlan:
    meta = body["metadata"]
    ref = ClaimRef(meta["namespace"], meta["name"], meta["uid"])
    alloc = read_allocation(body, ref, DRIVER, NAMES.domain)
    found = MINORS if minors is None else minors
    return plan_claim(alloc, node_devices(GPUS), pool=NODE, kind=KIND, unhealthy=unhealthy, minors=found)


def test_the_node_sides_device_names_are_the_slices() -> None:
    assert {device_name(m) for m in (M3G, M2G)} == {slice_device_name(m.uuid) for m in (M3G, M2G)}
    assert set(node_devices(GPUS)) == {device_name(M3G), device_name(M2G), device_name(PLAIN)}


def test_a_mig_instance_is_prepared_whole_with_its_device_nodes_and_no_shim() -> None:
    body = claim(uid="c-1", results=[result(device_name(M2G))])
    p = plan(body)
    assert p.config.gpus == ()  # no shim config: nothing for the shim to limit
    (device,) = p.devices
    assert device.cdi_ids == (f"{KIND}=c-1-{device_name(M2G)}",)
    assert p.migs == ((f"c-1-{device_name(M2G)}", ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22")),)  # fmt: skip

    spec = claim_spec(p, DriverFiles(), PlanOptions(), kind=KIND, version="0.5.0")
    (cdi_device,) = spec["devices"]
    assert cdi_device["name"] == f"c-1-{device_name(M2G)}"
    assert [n["path"] for n in cdi_device["containerEdits"]["deviceNodes"]] == [
        "/dev/nvidia0",
        "/dev/nvidia-caps/nvidia-cap21",
        "/dev/nvidia-caps/nvidia-cap22",
    ]
    edits = spec["containerEdits"]
    assert [n["path"] for n in edits["deviceNodes"]] == list(CONTROL_DEVICES)
    assert edits["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert "mounts" not in edits  # no shim, no ld.so.preload, no config: MIG is hardware isolation
    assert not any(names.ENV_CONTAINER_NAME in e for e in edits["env"])


def test_two_instances_of_one_gpu_in_one_claim_are_two_devices() -> None:
    body = claim(uid="c-2", results=[result(device_name(M3G), request="a"), result(device_name(M2G), request="b")])  # fmt: skip
    p = plan(body)
    assert [paths[1:] for _, paths in p.migs] == [
        ("/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13"),
        ("/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"),
    ]
    assert [d.requests for d in p.devices] == [("a",), ("b",)]


REFUSED = [
    pytest.param([result(device_name(M2G), memory=GIB)], {}, "taken whole", id="consumed memory"),
    pytest.param([result(device_name(M2G), share_id="s-1")], {}, "taken whole", id="a share ID"),
    pytest.param(
        [result(device_name(M2G), request="a"), result(device_name(M2G), request="b")],
        {},
        "allocated 2 times",
        id="the instance twice",
    ),
    pytest.param(
        [result(device_name(M2G))], {"unhealthy": frozenset({MIG_GPU.uuid})}, "is unhealthy", id="sick parent"
    ),
    pytest.param(
        [result(device_name(M2G))], {"unhealthy": frozenset({M2G.uuid})}, "is unhealthy", id="sick instance"
    ),
    pytest.param([result("mig-a1000000-9-0")], {}, "not a GPU of this node", id="an instance the node lacks"),
    pytest.param(
        [result(device_name(mig_devices([PENDING])[0]))], {}, "not a GPU of this node", id="MIG mode pending"
    ),
    pytest.param([result(device_name(M2G))], {"minors": {}}, "mig-minors", id="capabilities unknown"),
    pytest.param(
        [result(device_name(M2G)), result(device_name(PLAIN), memory=GIB, cores=10)],
        {},
        "separate claims",
        id="instance and share in one claim",
    ),
]


@pytest.mark.parametrize(("results", "kwargs", "message"), REFUSED)
def test_a_mig_claim_that_cannot_be_prepared_whole_is_refused(
    results: list[dict[str, Any]], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ClaimError, match=message):
        plan(claim(results=results), **kwargs)


class Claims:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    async def read(self, ref: ClaimRef) -> Any:
        return self.body


def test_the_preparer_writes_only_the_spec_of_a_mig_claim_and_unprepare_removes_it(tmp_path: Path) -> None:
    (tmp_path / "mig-minors").write_text("".join(f"{k} {v}\n" for k, v in MINORS.items()))
    body = claim(uid="c-9", pods=[("p", "pod-9")], results=[result(device_name(M3G))])
    ref = ClaimRef("default", "share", "c-9")
    state = StateDir(tmp_path / "state")
    state.prepare()
    info = DriverInfo(
        DRIVER, NAMES.domain, NODE, KIND, tmp_path / "cdi", "0.5.0", PlanOptions(), DriverFiles(),
        mig_minors=tmp_path / "mig-minors",
    )  # fmt: skip
    devices: dict[str, Any] = dict(node_devices(GPUS))
    preparer = ClaimPreparer(
        info=info,
        claims=Claims(body),
        state=state,
        checkpoint=Checkpoint(tmp_path / "ck"),
        gpus=lambda: devices,
    )

    outcome = asyncio.run(preparer.prepare([ref]))["c-9"]
    again = asyncio.run(preparer.prepare([ref]))["c-9"]  # idempotent: no config to miss, nothing rewritten
    assert outcome.error == ""
    assert again.devices == outcome.devices
    (spec,) = (tmp_path / "cdi").glob("*.json")
    assert "nvidia-cap12" in spec.read_text()
    assert list(state.containers.glob("*_dra-c-9")) == []  # no shim config, no usage directory

    assert asyncio.run(preparer.unprepare([ref])) == {"c-9": ""}
    assert list((tmp_path / "cdi").glob("*.json")) == []
    assert preparer.checkpoint.get("c-9") is None
