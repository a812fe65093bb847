"""Every import-linter contract in pyproject.toml can fail: a planted violation breaks each one.

The packages and pyproject.toml are copied into a temporary directory; ``lint-imports`` first keeps every
contract on the clean copy (the control), then breaks every contract once the probes below are planted (one
run for all of them). Each contract's section of the report must name its own probe, so a contract that is
broken only by another contract's probe still fails here. A contract added without a probe fails
``test_every_contract_has_a_probe``.
"""

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vcuda", "extender", "plugin", "kube_vgpu_cli", "kube_vgpu_kubectl")


@dataclass(frozen=True)
class Probe:
    """Lines added to a module of the copy (created if absent), and what the contract's report must name."""

    path: str
    lines: str
    expect: str


PROBES: Mapping[str, tuple[Probe, ...]] = {
    "vcuda-stdlib": (
        Probe("vcuda/_probe_yaml.py", "import yaml", "vcuda._probe_yaml -> yaml"),
        Probe("vcuda/_probe_cli.py", "import kube_vgpu_cli.logs", "vcuda._probe_cli -> kube_vgpu_cli.logs"),
    ),
    "cli-shared": (Probe("kube_vgpu_cli/_probe.py", "import plugin.core.errors", "kube_vgpu_cli._probe"),),
    "kubectl-user-side": (
        Probe(
            "kube_vgpu_kubectl/_probe.py", "import extender.kube", "kube_vgpu_kubectl._probe -> extender.kube"
        ),
    ),
    "binaries-independent": (
        Probe(
            "extender/_probe_plugin.py", "import plugin.core.gpu", "extender._probe_plugin -> plugin.core.gpu"
        ),
    ),
    "extender-layers": (
        # A lower layer importing a higher one.
        Probe("extender/kube.py", "import extender.scheduling", "extender.kube -> extender.scheduling"),
    ),
    "plugin-layers": (
        Probe("plugin/allocator.py", "import plugin.agent", "plugin.allocator -> plugin.agent"),
        # Modules of one layer are independent of each other.
        Probe("plugin/kube.py", "import plugin.statedir", "plugin.kube -> plugin.statedir"),
    ),
    "extender-core-pure": (
        Probe("extender/core/_probe_fastapi.py", "import fastapi", "extender.core._probe_fastapi -> fastapi"),
        Probe(
            "extender/core/_probe_kube.py",
            "import extender.kube",
            "extender.core._probe_kube -> extender.kube",
        ),
    ),
    "plugin-core-pure": (
        Probe("plugin/core/_probe_kube.py", "import plugin.kube", "plugin.core._probe_kube -> plugin.kube"),
        # Indirect: no layer names plugin._probe_mid, so only the missing indirect-import allowance catches it.
        Probe("plugin/_probe_mid.py", "import kubernetes", "plugin._probe_mid -> kubernetes"),
        Probe("plugin/core/_probe_indirect.py", "import plugin._probe_mid", "plugin.core._probe_indirect ->"),
    ),
    "cores-no-io": (
        Probe("extender/core/_probe_log.py", "import logging", "extender.core._probe_log -> logging"),
        # Indirect through the contract package: vcuda.tenantfile writes files with os.
        Probe("plugin/core/_probe_io.py", "import vcuda.tenantfile", "vcuda.tenantfile -> os"),
        Probe("plugin/core/_probe_path.py", "from pathlib import Path", "plugin.core._probe_path -> pathlib"),
    ),
}


def _contracts(pyproject: Path) -> dict[str, str]:
    """Contract id -> name, as declared in ``pyproject``."""
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    return {contract.get("id", f"<no id: {contract['name']}>"): contract["name"] for contract in contracts}


def _copy_tree(destination: Path) -> None:
    def not_python(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if not n.endswith(".py") and not (Path(directory) / n).is_dir()]

    for package in PACKAGES:
        shutil.copytree(ROOT / package, destination / package, ignore=not_python)
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")


def _plant(tree: Path) -> None:
    for probes in PROBES.values():
        for probe in probes:
            module = tree / probe.path
            existing = module.read_text() if module.exists() else ""
            module.write_text(f"{existing}\n{probe.lines}  # deliberate violation\n")


def _lint_imports(tree: Path) -> tuple[int, str]:
    """Exit status and the report, whitespace collapsed (the report wraps long names)."""
    command = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "1000"}
    result = subprocess.run(
        [str(command), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def _sections(report: str, names: list[str]) -> dict[str, str]:
    """Each broken contract's part of the "Broken contracts" listing."""
    _, _, listing = report.partition("Broken contracts")
    starts = sorted((listing.find(f"{name} -"), name) for name in names if f"{name} -" in listing)
    ends = [start for start, _ in starts[1:]] + [len(listing)]
    return {name: listing[start:end] for (start, name), end in zip(starts, ends, strict=False)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[int, str], tuple[int, str]]:
    tree = tmp_path_factory.mktemp("import_contracts")
    _copy_tree(tree)
    clean = _lint_imports(tree)
    _plant(tree)
    return clean, _lint_imports(tree)


def test_every_contract_has_a_probe() -> None:
    assert sorted(_contracts(ROOT / "pyproject.toml")) == sorted(PROBES)


def test_the_clean_copy_keeps_every_contract(reports: tuple[tuple[int, str], tuple[int, str]]) -> None:
    (status, report), _ = reports
    assert status == 0, report
    for name in _contracts(ROOT / "pyproject.toml").values():
        assert f"{name} KEPT" in report


@pytest.mark.parametrize("contract_id", sorted(PROBES))
def test_a_planted_violation_breaks_the_contract(
    contract_id: str, reports: tuple[tuple[int, str], tuple[int, str]]
) -> None:
    _, (status, report) = reports
    contracts = _contracts(ROOT / "pyproject.toml")
    name = contracts[contract_id]
    assert status != 0
    assert f"{name} BROKEN" in report, report
    section = _sections(report, list(contracts.values()))[name]
    for probe in PROBES[contract_id]:
        assert probe.expect in section, f"{probe.path} did not break {name!r}: {section}"
