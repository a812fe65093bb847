"""The test tree keeps its homes (docs/testing.md, "Where test helpers live"): no module imports a conftest,
a unit-tier module imports no other test module but the shared homes, no tier imports another tier's modules,
and the fakes live in tests/fakes.

Read from the source with ``ast`` (nothing is imported), so a violation fails here with its file and line.
"""

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

TESTS = Path(__file__).parents[1]

UNIT_MAY_IMPORT = (
    "tests.builders",
    "tests.fakes",
    "tests.fixtures",
    "tests.signing_keys",  # the fixed test keys, shared by every tier
    "tests.sim",  # tests/unit/test_sim_*.py test the simulator's pure parts themselves
)


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every ``import x`` and ``from x import ...`` in ``path``, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def offending(paths: list[Path], refused: Callable[[str], bool]) -> list[str]:
    return [
        f"{path.relative_to(TESTS.parent)}:{line}: {module}"
        for path in paths
        for line, module in imported(path)
        if refused(module)
    ]


def test_no_module_imports_a_conftest():
    found = offending(sorted(TESTS.rglob("*.py")), lambda m: m.split(".")[-1] == "conftest")
    assert found == [], "shared fixtures belong in tests/fixtures (registered in tests/conftest.py)"


def test_unit_tier_modules_import_only_the_shared_homes():
    def refused(module: str) -> bool:
        return module.startswith("tests.") and not module.startswith(UNIT_MAY_IMPORT)

    found = offending(sorted((TESTS / "unit").rglob("*.py")), refused)
    assert found == [], "move what a unit test shares into tests/builders, tests/fakes or tests/fixtures"


TIERS = ("unit", "contract", "integration", "security", "e2e", "k8s", "gpu")


def test_no_module_imports_another_tiers_modules():
    """What two tiers share lives in tests/builders, tests/fakes or tests/fixtures (bench counts as a tier)."""
    found = [
        f"{path.relative_to(TESTS.parent)}:{line}: {module}"
        for folder in (*TIERS, "bench")
        for path in sorted((TESTS / folder).rglob("*.py"))
        for line, module in imported(path)
        if module.startswith(tuple(f"tests.{tier}" for tier in TIERS if tier != folder))
    ]
    assert found == []


def test_fakes_of_real_components_live_in_tests_fakes():
    """A source file named ``fake*`` (a stand-in, not a test of one) outside tests/fakes is away from home."""
    stray = [
        str(path.relative_to(TESTS.parent))
        for pattern in ("fake*.py", "fake*.c")
        for path in TESTS.rglob(pattern)
        if "fakes" not in path.relative_to(TESTS).parts
    ]
    assert stray == []
