"""The shipped shim loads in any image from glibc 2.17 on, on x86_64 and aarch64 (docs/shim.md).

`mk/shim-cross.mk` builds ``build/shim/<arch>-glibc2.17/libvcuda.so`` with zig's cc; the plugin image ships
those. These tests read the ELF files with pyelftools: no symbol version above the baseline, the right
machine, only libc/libdl/libpthread needed, no lock-based atomics, and the same exported hooks as the gcc
builds (``build/shim/libvcuda.so`` and the TEST build that the other shim tests load). The x86_64 one also
runs over the fake driver with its config and usage file at the container paths (tests/shim/container.py),
so the artifact that ships is exercised, not only inspected.
"""

import os
import platform
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection
from elftools.elf.sections import SymbolTableSection

from tests.shim import container
from tests.shim.harness import (
    BUILD,
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    FAKE_DIR,
    SHIM,
    TIMEOUT_S,
    codes,
    require_build,
    write_config,
)
from vcuda import names

ROOT = Path(__file__).resolve().parents[2]
SHIM_DIR = ROOT / "build" / "shim"
BASELINE = (2, 17)
# The gcc builds: the shipped-flavour dev library and the TEST one the other shim tests load.
DEV_BUILDS = sorted({SHIM_DIR / "libvcuda.so", SHIM})
SHIPPED = {
    "x86_64": SHIM_DIR / "x86_64-glibc2.17" / "libvcuda.so",
    "aarch64": SHIM_DIR / "aarch64-glibc2.17" / "libvcuda.so",
}
MACHINES = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
# Present in every glibc image; libpthread and libdl are separate libraries before glibc 2.34.
ALLOWED_NEEDED = {"libc.so.6", "libdl.so.2", "libpthread.so.0"}
DF_SYMBOLIC = 0x2
ARCHS = sorted(SHIPPED)


@contextmanager
def elf(path: Path) -> Iterator[ELFFile]:
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make build` (mk/shim-cross.mk, mk/shim.mk)")
    with path.open("rb") as stream:
        yield ELFFile(stream)


def glibc_versions(f: ELFFile) -> set[str]:
    """Every GLIBC_* version the library requires (its .gnu.version_r entries)."""
    found = set()
    for section in f.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for _, auxiliaries in section.iter_versions():
                found |= {aux.name for aux in auxiliaries if aux.name.startswith("GLIBC_")}
    return found


def above(versions: set[str], baseline: tuple[int, int]) -> set[str]:
    """Versions newer than `baseline`; an unnumbered one (GLIBC_PRIVATE) counts as newer."""
    newer = set()
    for name in versions:
        match = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)*)", name)
        if match is None or tuple(int(p) for p in match.group(1).split(".")) > baseline:
            newer.add(name)
    return newer


def dynamic_tags(f: ELFFile, tag: str) -> list[object]:
    """Values of one dynamic-section tag: the string for DT_NEEDED and DT_SONAME, else the number."""
    section = next(s for s in f.iter_sections() if isinstance(s, DynamicSection))
    strings = {"DT_NEEDED": "needed", "DT_SONAME": "soname"}
    return [vars(t)[strings[tag]] if tag in strings else t.entry.d_val for t in section.iter_tags(tag)]


def exported(f: ELFFile) -> set[str]:
    """Functions and objects the library defines for other objects (its hooks and entry points)."""
    dynsym = f.get_section_by_name(".dynsym")
    assert isinstance(dynsym, SymbolTableSection)
    return {
        s.name
        for s in dynsym.iter_symbols()
        if s["st_shndx"] != "SHN_UNDEF"
        and s["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")
        and s["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT")
        and s["st_other"]["visibility"] == "STV_DEFAULT"
    }


def all_symbols(f: ELFFile) -> set[str]:
    symtab = f.get_section_by_name(".symtab")
    assert isinstance(symtab, SymbolTableSection), "the shipped shim keeps its symbol table (built with -g)"
    return {s.name for s in symtab.iter_symbols()}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_shipped_shim_needs_no_glibc_symbol_version_above_2_17(arch):
    with elf(SHIPPED[arch]) as f:
        versions = glibc_versions(f)
    assert versions, "no GLIBC_ version requirements at all: not a glibc build"
    assert above(versions, BASELINE) == set()


@pytest.mark.parametrize("arch", ARCHS)
def test_the_shipped_shim_is_a_64_bit_little_endian_library_for_its_architecture(arch):
    with elf(SHIPPED[arch]) as f:
        assert (f["e_machine"], f.elfclass, f.little_endian, f["e_type"]) == (
            MACHINES[arch],
            64,
            True,
            "ET_DYN",
        )
        assert dynamic_tags(f, "DT_SONAME") == ["libvcuda.so"]
        assert any(v & DF_SYMBOLIC for v in dynamic_tags(f, "DT_FLAGS") if isinstance(v, int)), (
            "built without -Bsymbolic"
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_the_shipped_shim_needs_only_libraries_every_glibc_image_has(arch):
    with elf(SHIPPED[arch]) as f:
        assert set(dynamic_tags(f, "DT_NEEDED")) <= ALLOWED_NEEDED


@pytest.mark.parametrize("arch", ARCHS)
def test_the_shipped_shim_has_no_lock_based_atomics(arch):
    # Atomics on underaligned (packed) fields become compiler_rt's __atomic_* calls, which take a
    # per-process spinlock: no atomicity between the processes that share the usage and node files.
    with elf(SHIPPED[arch]) as f:
        libcalls = {name for name in all_symbols(f) if name.startswith("__atomic_")}
    assert libcalls == set()


@pytest.mark.parametrize("dev", DEV_BUILDS, ids=lambda p: p.name)
@pytest.mark.parametrize("arch", ARCHS)
def test_the_gcc_builds_the_tests_load_export_the_same_symbols_as_the_shipped_one(arch, dev):
    with elf(dev) as built, elf(SHIPPED[arch]) as shipped:
        dev_exports, shipped_exports = exported(built), exported(shipped)
    assert len(dev_exports) > 10, "the hooks are missing from the gcc build's dynamic symbols"
    assert shipped_exports == dev_exports


def test_the_version_check_flags_a_library_linked_against_a_newer_glibc():
    # The gcc dev build links against this machine's glibc; from 2.34 on it needs dlopen@GLIBC_2.34.
    name, version = platform.libc_ver()
    if name != "glibc" or tuple(int(p) for p in version.split(".")[:2]) < (2, 34):
        pytest.skip(f"host C library {name} {version} is older than 2.34")
    with elf(SHIM_DIR / "libvcuda.so") as f:
        assert "GLIBC_2.34" in above(glibc_versions(f), BASELINE)
    assert above({"GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.18", "GLIBC_PRIVATE"}, BASELINE) == {
        "GLIBC_2.18",
        "GLIBC_PRIVATE",
    }


@pytest.mark.skipif(platform.machine() != "x86_64", reason="runs the x86_64 build on this machine")
@pytest.mark.skipif(not container.available(), reason="needs a private mount namespace (root, overlayfs)")
def test_the_shipped_x86_64_shim_enforces_the_memory_limit_in_a_container_over_the_fake_driver(tmp_path):
    # The shipped build reads only the container paths: give it its own /etc/kube-vgpu and /var/run dirs.
    config, usage, node = tmp_path / "etc", tmp_path / "usage", tmp_path / "node"
    for d in (config, usage, node):
        d.mkdir()
    require_build()
    write_config(config / container.CONFIG_NAME, memory_mib=72)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCUDA_", "LD_", "FAKE_"))}
    env |= {"LD_PRELOAD": str(SHIPPED["x86_64"]), "LD_LIBRARY_PATH": str(FAKE_DIR)}
    args = [
        str(BUILD / "app_runtime"),
        "init",
        "ctx",
        "0",
        "alloc",
        "48",
        "alloc",
        "48",
        "free",
        "alloc",
        "48",
    ]
    wrapped = container.command(args, config=config, usage=usage, node=node, scratch=tmp_path / "ns")
    out = subprocess.run(wrapped, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert codes(out.stdout, "alloc") == [CUDA_SUCCESS, CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS], out.stderr
    assert (usage / names.USAGE_FILE_NAME).exists(), "the shim wrote no usage file at the container path"


def test_the_plugin_image_ships_the_baseline_build_for_its_target_architecture():
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile.plugin").read_text()
    arches = dict(re.findall(r"\b(amd64|arm64)\) arch=(\w+) ;;", dockerfile))
    (template,) = re.findall(r'shim="(build/shim/\$\{arch\}-glibc[\d.]+/libvcuda\.so)"', dockerfile)
    shipped = {docker: ROOT / template.replace("${arch}", arch) for docker, arch in arches.items()}
    assert shipped == {"amd64": SHIPPED["x86_64"], "arm64": SHIPPED["aarch64"]}
    assert 'make "${shim}"' in dockerfile
    assert 'install -D -m 0755 "${shim}" /out/shim/lib/libvcuda.so' in dockerfile
