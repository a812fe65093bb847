"""The DRA driver's per-claim CDI spec is valid for every spec version offered (the CDI project's schema and
version rules, as tests/contract/test_cdi_spec.py applies them) and carries the driver's files too; a MIG
instance claim's spec carries them without the shim."""

import json
from pathlib import Path

import pytest

from plugin.cdi import find_driver_files
from plugin.core.allocate import PlanOptions
from plugin.core.cdi import CDI_VERSIONS
from plugin.core.dra import ClaimRef, cdi_kind, device_name, node_devices, read_allocation
from plugin.core.dra_plan import claim_spec, plan_claim
from plugin.core.mig import mig_devices
from plugin.nvml_loader import DriverRoot
from tests.builders.dra import DRIVER, GIB, NODE, claim, dev, result
from tests.builders.mig import a100
from tests.builders.plugin import NAMES, h100x8
from tests.contract.test_cdi_spec import assert_valid, install_driver, mounts, touch
from vcuda import names


@pytest.mark.parametrize("version", CDI_VERSIONS)
def test_a_claims_spec_is_valid_and_holds_the_driver_files_and_the_shim(tmp_path: Path, version: str) -> None:
    install_driver(tmp_path)
    touch(tmp_path / "usr/bin/nvidia-cdi-hook", executable=True)
    files = find_driver_files(DriverRoot(tmp_path, Path("/")), dev=tmp_path / "dev")
    gpus = h100x8().gpus
    uid = "0a1b2c3d-0000-4000-8000-000000000001"  # a UID that starts with a digit: device names need 0.5.0
    body = claim(
        uid=uid, results=[result(dev(gpus[0]), memory=GIB, cores=30), result(dev(gpus[1]), request="b")]
    )
    alloc = read_allocation(body, ClaimRef("default", "share", uid), DRIVER, NAMES.domain)
    kind = cdi_kind(NAMES.domain)
    plan = plan_claim(alloc, node_devices(gpus), pool=NODE, kind=kind)
    spec = json.loads(json.dumps(claim_spec(plan, files, PlanOptions(), kind=kind, version=version)))
    assert_valid(spec)
    found = mounts(spec)
    assert names.CONTAINER_SHIM_PATH in found
    assert any(p.endswith("libcuda.so.1") or "libcuda.so." in p for p in found)
    assert [h["args"][1] for h in spec["containerEdits"]["hooks"]][-1] == "update-ldcache"


@pytest.mark.parametrize("version", CDI_VERSIONS)
def test_a_mig_claims_spec_is_valid_and_holds_the_driver_files_without_the_shim(
    tmp_path: Path, version: str
) -> None:
    install_driver(tmp_path)
    files = find_driver_files(DriverRoot(tmp_path, Path("/")), dev=tmp_path / "dev")
    gpu = a100(0, "3g.20gb")
    (instance,) = mig_devices([gpu])
    uid = "0a1b2c3d-0000-4000-8000-000000000002"
    body = claim(uid=uid, results=[result(device_name(instance))])
    alloc = read_allocation(body, ClaimRef("default", "mig", uid), DRIVER, NAMES.domain)
    kind = cdi_kind(NAMES.domain)
    minors = {"gpu0/gi1/access": 12, "gpu0/gi1/ci0/access": 13}
    plan = plan_claim(alloc, node_devices([gpu]), pool=NODE, kind=kind, minors=minors)
    spec = json.loads(json.dumps(claim_spec(plan, files, PlanOptions(), kind=kind, version=version)))
    assert_valid(spec)
    found = mounts(spec)
    assert names.CONTAINER_SHIM_PATH not in found
    assert names.LD_SO_PRELOAD_PATH not in found
    assert any("libcuda.so." in p for p in found)
