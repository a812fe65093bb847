"""The committed C header is exactly what ``python -m vcuda.contract --emit-c-header`` writes, and compiles; the
shim takes the compute unit (``CORE_PER_GPU``, percent of one GPU) from it rather than writing 100 itself."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vcuda.contract import HEADER_PATH, c_header
from vcuda.units import CORE_PER_GPU


def test_committed_header_matches_the_python_definition() -> None:
    assert HEADER_PATH.read_text() == c_header(), (
        "vcuda/shim/vcuda_contract.h drifted: run `python -m vcuda.contract --emit-c-header`"
    )


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_header_compiles_with_its_static_asserts(tmp_path: Path) -> None:
    source = tmp_path / "t.c"
    source.write_text(
        f'#include "{HEADER_PATH}"\nint main(void) {{ return sizeof(vcuda_usage_t) > 0 ? 0 : 1; }}\n'
    )
    subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Werror", "-o", str(tmp_path / "t"), str(source)], check=True
    )


def test_the_header_carries_the_compute_unit_of_vcuda_units() -> None:
    """The shim's limits are percent of one GPU, as ``vcuda-core`` is: one number, defined in vcuda.units."""
    found = re.search(r"^#define VCUDA_CORE_PER_GPU (\d+)$", HEADER_PATH.read_text(), re.MULTILINE)
    assert found is not None
    assert int(found.group(1)) == CORE_PER_GPU


def _code(source: str) -> str:
    """C source without its comments (they may say "100 ns")."""
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", source, flags=re.DOTALL)


@pytest.mark.parametrize(
    "source", sorted(p for p in HEADER_PATH.parent.glob("*.[ch]") if p != HEADER_PATH), ids=lambda p: p.name
)
def test_the_shim_takes_the_compute_unit_from_the_generated_header(source: Path) -> None:
    """A literal 100 in the shim is a second copy of CORE_PER_GPU; it must say VCUDA_CORE_PER_GPU."""
    literal = re.compile(rf"(?<![\w.]){CORE_PER_GPU}(?![\w.])")
    lines = [line for line in _code(source.read_text()).splitlines() if literal.search(line)]
    assert lines == []
