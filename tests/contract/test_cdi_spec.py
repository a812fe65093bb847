"""The CDI specs the plugin writes are complete (as ``nvidia-ctk cdi generate`` makes them) and valid.

Validated against the CDI project's own JSON schema (vendored in ``cdi_schema/``, Apache-2.0) plus the
version rules its Go library applies (``specs-go/version.go``), for every spec version offered.

Case matrix:
- a host install (driver root ``/``): GPU device nodes, control nodes, every ``lib*.so.<driver version>``
  next to ``libcuda.so.1`` and nothing else, ``nvidia-smi`` and the other tools present, the persistenced and
  fabric manager sockets (``noexec``), GSP firmware, the ``update-ldcache`` and ``create-symlinks`` hooks of
  ``nvidia-cdi-hook``, ``NVIDIA_VISIBLE_DEVICES=void``;
- the GPU Operator's layout (driver under ``/run/nvidia/driver``, the toolkit's ``nvidia-ctk`` on the host
  in ``/usr/local/nvidia/toolkit``): host paths carry the driver root, container paths do not, the hook is
  called ``nvidia-ctk hook``;
- no driver files (libcuda missing): a spec with device nodes only, still valid;
- the MIG spec gets the same common edits and keeps its capability device nodes;
- the agent writes the spec in the version chosen with ``--cdi-spec-version``.
"""

import json
import platform
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from plugin.cdi import find_driver_files, write_gpu_spec
from plugin.core.cdi import CDI_VERSIONS, common_edits, with_common_edits
from plugin.core.mig_allocate import cdi_spec as mig_cdi_spec
from plugin.nvml_loader import DriverRoot
from tests.builders.plugin import a10x4

SCHEMA_DIR = Path(__file__).resolve().parent / "cdi_schema"
VERSION = "580.65.06"
LIB = f"usr/lib/{platform.machine()}-linux-gnu"
VALID_HOOKS = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}


def validator() -> Draft7Validator:
    defs = json.loads((SCHEMA_DIR / "defs.json").read_text())
    registry: Registry[Any] = Registry().with_resource(
        "defs.json", Resource.from_contents(defs, default_specification=DRAFT7)
    )
    return Draft7Validator(json.loads((SCHEMA_DIR / "schema.json").read_text()), registry=registry)


def minimum_version(spec: dict[str, Any]) -> str:
    """``specs-go/version.go`` MinimumRequiredVersion for the features a spec can use up to 0.7.0."""
    edits = [spec.get("containerEdits") or {}, *[d["containerEdits"] for d in spec["devices"]]]
    if any(e.get("intelRdt") or e.get("additionalGIDs") for e in edits):
        return "0.7.0"
    if spec.get("annotations") or any(d.get("annotations") for d in spec["devices"]):
        return "0.6.0"
    if any(d["name"][:1].isdigit() for d in spec["devices"]) or any(
        n.get("hostPath") for e in edits for n in e.get("deviceNodes", [])
    ):
        return "0.5.0"
    if any(m.get("type") for e in edits for m in e.get("mounts", [])):
        return "0.4.0"
    return "0.3.0"


def _semver(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def assert_valid(spec: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator().iter_errors(spec)]
    assert errors == []
    assert spec["cdiVersion"] in CDI_VERSIONS
    assert _semver(minimum_version(spec)) <= _semver(spec["cdiVersion"])
    vendor, _, kind = spec["kind"].partition("/")
    assert vendor
    assert kind
    edits = [spec["containerEdits"], *[d["containerEdits"] for d in spec["devices"]]]
    for e in edits:
        assert all(h["hookName"] in VALID_HOOKS and h["path"].startswith("/") for h in e.get("hooks", []))
        assert all(n["path"].startswith("/dev/") for n in e.get("deviceNodes", []))
        assert all(
            m["hostPath"].startswith("/") and m["containerPath"].startswith("/") for m in e.get("mounts", [])
        )
        assert all("=" in v for v in e.get("env", []))


def touch(path: Path, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF fake")
    if executable:
        path.chmod(0o755)


def install_driver(root: Path) -> None:
    """A driver as the .run installer lays it out: versioned files plus SONAME links."""
    for lib in ("libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libcudadebugger", "libnvidia-nvvm"):
        touch(root / LIB / f"{lib}.so.{VERSION}")
        (root / LIB / f"{lib}.so.1").symlink_to(f"{lib}.so.{VERSION}")
    touch(root / LIB / "libz.so.1")  # not the driver's
    touch(root / LIB / "libnvidia-ml.so.550.54.15")  # a leftover of an older driver
    for tool in ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"):
        touch(root / "usr/bin" / tool, executable=True)
    touch(root / "run/nvidia-persistenced/socket")
    touch(root / "run/nvidia-fabricmanager/socket")
    touch(root / f"lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin")


def mounts(spec: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {m["containerPath"]: (m["hostPath"], m["options"]) for m in spec["containerEdits"]["mounts"]}


@pytest.mark.parametrize("version", CDI_VERSIONS)
def test_a_host_install_gets_a_complete_valid_spec(tmp_path: Path, version: str) -> None:
    root = tmp_path / "driver-root"
    install_driver(root)
    touch(root / "usr/bin/nvidia-cdi-hook", executable=True)
    files = find_driver_files(DriverRoot(root, Path("/")), dev=tmp_path / "dev")
    spec = json.loads(
        write_gpu_spec(tmp_path / "cdi", "kube-vgpu.io/gpu", a10x4().gpus, files, version).read_text()
    )
    assert_valid(spec)
    assert spec["cdiVersion"] == version
    assert [(d["name"], d["containerEdits"]["deviceNodes"]) for d in spec["devices"]] == [
        (g.uuid, [{"path": f"/dev/nvidia{g.minor}"}]) for g in a10x4().gpus
    ]
    edits = spec["containerEdits"]
    assert [n["path"] for n in edits["deviceNodes"]] == [
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
    ]
    assert edits["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    found = mounts(spec)
    libraries = {p for p in found if p.startswith(f"/{LIB}/")}
    assert libraries == {
        f"/{LIB}/{lib}.so.{VERSION}"
        for lib in (
            "libcuda",
            "libnvidia-ml",
            "libnvidia-ptxjitcompiler",
            "libcudadebugger",
            "libnvidia-nvvm",
        )
    }
    assert found[f"/{LIB}/libcuda.so.{VERSION}"] == (
        f"/{LIB}/libcuda.so.{VERSION}",
        ["ro", "nosuid", "nodev", "bind"],
    )
    assert {"/usr/bin/nvidia-smi", "/usr/bin/nvidia-debugdump", "/usr/bin/nvidia-persistenced"} <= set(found)
    assert found["/run/nvidia-persistenced/socket"][1][-1] == "noexec"
    assert "/run/nvidia-fabricmanager/socket" in found
    assert f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin" in found
    hooks = [h["args"] for h in edits["hooks"]]
    assert all(h["path"] == "/usr/bin/nvidia-cdi-hook" for h in edits["hooks"])
    assert hooks == [
        ["nvidia-cdi-hook", "create-symlinks", "--link", f"libcuda.so.1::/{LIB}/libcuda.so"],
        ["nvidia-cdi-hook", "update-ldcache", "--folder", f"/{LIB}"],
    ]


def test_the_gpu_operator_layout_mounts_from_the_driver_container_and_uses_the_hosts_nvidia_ctk(
    tmp_path: Path,
) -> None:
    host = tmp_path / "host"  # what the chart mounts at /driver-root: the host's /
    install_driver(host / "run/nvidia/driver")
    touch(host / "usr/local/nvidia/toolkit/nvidia-ctk", executable=True)
    root = DriverRoot(host / "run/nvidia/driver", Path("/run/nvidia/driver"))
    spec = json.loads(
        write_gpu_spec(
            tmp_path / "cdi", "kube-vgpu.io/gpu", a10x4().gpus, find_driver_files(root)
        ).read_text()
    )
    assert_valid(spec)
    found = mounts(spec)
    assert found[f"/{LIB}/libcuda.so.{VERSION}"][0] == f"/run/nvidia/driver/{LIB}/libcuda.so.{VERSION}"
    assert found["/usr/bin/nvidia-smi"][0] == "/run/nvidia/driver/usr/bin/nvidia-smi"
    hook = spec["containerEdits"]["hooks"][-1]
    assert hook["path"] == "/usr/local/nvidia/toolkit/nvidia-ctk"
    assert hook["args"] == ["nvidia-ctk", "hook", "update-ldcache", "--folder", f"/{LIB}"]


def test_without_driver_files_the_spec_holds_device_nodes_only_and_stays_valid(tmp_path: Path) -> None:
    files = find_driver_files(DriverRoot(tmp_path / "empty", Path("/")), dev=tmp_path / "dev")
    spec = json.loads(write_gpu_spec(tmp_path / "cdi", "kube-vgpu.io/gpu", a10x4().gpus, files).read_text())
    assert_valid(spec)
    assert "mounts" not in spec["containerEdits"]
    assert "hooks" not in spec["containerEdits"]


def test_the_modeset_node_is_added_only_where_it_exists(tmp_path: Path) -> None:
    touch(tmp_path / "dev/nvidia-modeset")
    files = find_driver_files(DriverRoot(tmp_path / "empty", Path("/")), dev=tmp_path / "dev")
    assert files.control_devices[-1] == "/dev/nvidia-modeset"


def test_the_mig_spec_gets_the_same_common_edits(tmp_path: Path) -> None:
    install_driver(tmp_path)
    touch(tmp_path / "usr/bin/nvidia-cdi-hook", executable=True)
    files = find_driver_files(DriverRoot(tmp_path, Path("/")), dev=tmp_path / "dev")
    base = mig_cdi_spec("kube-vgpu.io/gpu", [], {})
    spec = with_common_edits(base, files, "0.6.0")
    assert_valid(spec)
    assert {n["path"] for n in base["containerEdits"]["deviceNodes"]} <= {
        n["path"] for n in spec["containerEdits"]["deviceNodes"]
    }
    assert spec["containerEdits"]["mounts"] == common_edits(files)["mounts"]


def test_a_hook_file_that_is_not_executable_is_not_used(tmp_path: Path) -> None:
    install_driver(tmp_path)
    touch(tmp_path / "usr/bin/nvidia-cdi-hook")  # mode 0644
    assert find_driver_files(DriverRoot(tmp_path, Path("/"))).hook is None
