"""The committed C header is exactly what ``python -m vcuda.contract --emit-c-header`` writes, and compiles."""

import shutil
import subprocess
from pathlib import Path

import pytest

from vcuda.contract import HEADER_PATH, c_header


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
