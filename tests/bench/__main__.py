"""``make bench``: run every benchmark module in tests/bench and print ``name: value unit`` lines.

Each module ``tests/bench/bench_*.py`` defines ``run() -> list[tuple[str, float, str]]``.
"""

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    only = set(sys.argv[1:])
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if not info.name.startswith("bench_") or (only and info.name not in only):
            continue
        module = importlib.import_module(f"tests.bench.{info.name}")
        for name, value, unit in module.run():
            print(f"{name}: {value:g} {unit}".rstrip(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
