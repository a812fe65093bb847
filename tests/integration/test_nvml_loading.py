# mypy: disable-error-code="no-untyped-call"
"""NVML is found under the driver root, as NVIDIA's device plugin finds it (plugin.nvml_loader).

Case matrix:
- the REAL plugin process, started with the arguments the chart renders and no ``LD_LIBRARY_PATH``, loads
  the FAKE ``libnvidia-ml.so.1`` from a real library folder (``usr/lib/x86_64-linux-gnu``, the name a symlink
  to the versioned file as the driver installs it) inside a fake driver root, and serves its GPUs;
- the same with the GPU Operator's layout (``<root>/run/nvidia/driver``): the plugin picks that root;
- a driver root without NVML: exit code 3 and a message naming every path tried;
- the root's ``etc/ld.so.cache``, written by the REAL ``ldconfig -r`` (root only), wins over the folders and
  finds a library in a folder no list names; a cache entry never leaves the root;
- the ld cache parser reads this machine's real ``/etc/ld.so.cache`` and the old+new combined layout.
"""

import json
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plugin.core.ldcache import LdCacheError, parse_ld_cache
from plugin.nvml_loader import NVML_LIBRARY, find_library, locate_driver_root
from tests.builders.plugin import KEY, NAMES
from tests.fakes.kmock import KmockCluster
from tests.fakes.kubelet import FakeKubelet
from tests.fakes.nvml.harness import FakeNvml, _ensure_built
from tests.fixtures.plugin_env import NODE
from tests.sim.node import free_port
from tests.sim.processes import Child, console_script, write_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "build" / "helm" / "bin" / "helm"
MULTIARCH = f"usr/lib/{platform.machine()}-linux-gnu"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes, so not tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="kvn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kmock_cluster() -> Iterator[KmockCluster]:
    with KmockCluster() as cluster:
        yield cluster


def install_fake_driver(root: Path, folder: str = MULTIARCH) -> Path:
    """The fake NVML as the driver installs it: ``libnvidia-ml.so.<version>`` plus the SONAME symlink."""
    lib_dir = root / folder
    lib_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_ensure_built(), lib_dir / "libnvidia-ml.so.580.65.06")
    (lib_dir / NVML_LIBRARY).symlink_to("libnvidia-ml.so.580.65.06")
    if not (lib_dir / "libcuda.so.580.65.06").exists():
        (lib_dir / "libcuda.so.580.65.06").write_bytes(b"\x7fELF not loaded")  # only mounted by CDI specs
        (lib_dir / "libcuda.so.1").symlink_to("libcuda.so.580.65.06")
    return lib_dir / "libnvidia-ml.so.580.65.06"


def chart_plugin_args(home: Path) -> list[str]:
    """The plugin container's ``args`` from ``helm template`` with the chart's defaults."""
    if not HELM.exists():
        pytest.skip(f"helm not installed at {HELM}: run `make build`")
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home), "XDG_CONFIG_HOME": str(home), "PATH": "/usr/bin"}
    done = subprocess.run(
        [str(HELM), "template", "kube-vgpu", str(ROOT / "deploy/helm/kube-vgpu"), "-n", "kube-system", "--kube-version", "v1.31.0"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    plugin = next(c for c in daemonset["spec"]["template"]["spec"]["containers"] if c["name"] == "plugin")
    return [str(a) for a in plugin["args"]]


def localise(args: list[str], box: Path, kubelet: FakeKubelet, driver_mount: Path) -> list[str]:
    """The chart's paths moved into ``box``; the driver root mount ``/driver-root`` becomes ``driver_mount``."""
    (box / "config.yaml").write_text("version: v1\n")
    (box / "key").write_bytes(KEY)
    moved = {
        "--node-name": NODE,
        "--config-file": str(box / "config.yaml"),
        "--assignment-key-file": str(box / "key"),
        "--device-plugin-dir": str(kubelet.plugin_dir),
        "--pod-resources-socket": str(kubelet.pod_resources_socket),
        "--nvidia-driver-root": str(driver_mount),
    }
    out = []
    for arg in args:
        flag, _, value = arg.partition("=")
        assert flag != "--nvidia-driver-root" or value == "/driver-root", arg
        out.append(f"{flag}={moved[flag]}" if flag in moved else arg)
    return [
        *out,
        f"--state-dir={box / 'state'}",
        f"--shim-dir={box / 'shim'}",
        f"--cdi-dir={box / 'cdi'}",
        "--metrics-port=0",
        f"--health-port={free_port()}",
        "--device-list-strategy=cdi",
        "--cdi-spec-version=0.6.0",
    ]


async def run_plugin(box: Path, kmock_cluster, driver_mount: Path):
    """The real plugin with the chart's args; returns (child, kubelet, fake node). No LD_LIBRARY_PATH."""
    kmock_cluster.core().create_node({"metadata": {"name": NODE}}, _preload_content=False)
    nvml = FakeNvml.write(box / "nvml", "a10x4")
    kubelet = FakeKubelet(box / "dp", box / "pr" / "kubelet.sock")
    await kubelet.start()
    argv = [
        *console_script("kube-vgpu-plugin"),
        *localise(chart_plugin_args(box), box, kubelet, driver_mount),
    ]
    env = {
        "FAKE_NVML_CONFIG": str(nvml.config_path),  # the fake's node description, not a library path
        "LD_LIBRARY_PATH": "",
        "KUBECONFIG": str(write_kubeconfig(box / "kubeconfig", kmock_cluster.url)),
    }
    child = Child("plugin", argv, env, box / "plugin.log")
    await child.start()
    return child, kubelet, nvml


@pytest.mark.parametrize(
    "driver_dir",
    [
        pytest.param("", id="host install: NVML in <root>/usr/lib/<arch>-linux-gnu"),
        pytest.param("run/nvidia/driver", id="GPU Operator: NVML in <root>/run/nvidia/driver/usr/lib/..."),
    ],
)
async def test_the_plugin_with_the_charts_args_loads_nvml_from_the_driver_root(
    short_dir: Path, kmock_cluster, driver_dir: str
) -> None:
    driver_mount = short_dir / "driver-root"
    install_fake_driver(driver_mount / driver_dir)
    child, kubelet, nvml = await run_plugin(short_dir, kmock_cluster, driver_mount)
    try:
        await kubelet.wait_registered(NAMES.core, timeout=30)
        devices = await kubelet.devices_until(NAMES.core, lambda d: len(d) == 400, timeout=10)
        assert {d.ID.split("::")[0] for d in devices} == set(nvml.uuids)
        port = [a.split("=")[1] for a in child.argv if a.startswith("--health-port=")][-1]  # the last wins
        for path in ("/healthz", "/readyz"):  # the chart's probes
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                assert reply.status == 200
    except Exception:
        print(child.log_tail())
        raise
    finally:
        await child.stop()
        await kubelet.stop()
    log = child.log_tail(400).replace("//", "/")
    assert f"NVML loaded from {driver_mount / driver_dir / MULTIARCH}" in log
    spec = json.loads((short_dir / "cdi" / "kube-vgpu.io-gpu.json").read_text())  # the same root feeds CDI
    assert spec["cdiVersion"] == "0.6.0"
    host_lib = "/" + str(Path(driver_dir) / MULTIARCH / "libcuda.so.580.65.06")
    assert host_lib in [m["hostPath"] for m in spec["containerEdits"]["mounts"]]


def test_a_driver_root_without_nvml_exits_3_naming_every_path_tried(short_dir: Path) -> None:
    empty = short_dir / "empty-root"
    (empty / "etc").mkdir(parents=True)
    (short_dir / "key").write_bytes(KEY)
    argv = [
        *console_script("kube-vgpu-plugin"),
        f"--node-name={NODE}",
        f"--nvidia-driver-root={empty}",
        f"--assignment-key-file={short_dir / 'key'}",
        f"--device-plugin-dir={short_dir / 'dp'}",
        f"--state-dir={short_dir / 'state'}",
        "--metrics-port=0",
    ]
    kubeconfig = write_kubeconfig(short_dir / "kc", "http://127.0.0.1:9")
    env = {**os.environ, "LD_LIBRARY_PATH": "", "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    for folder in ("usr/lib64", "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib64"):
        assert str(empty / folder / NVML_LIBRARY) in done.stderr
    assert "dynamic loader" in done.stderr
    assert "--nvidia-driver-root" in done.stderr


def test_the_library_folders_are_searched_in_nvidias_order(tmp_path: Path) -> None:
    install_fake_driver(tmp_path, "lib64")
    found = install_fake_driver(tmp_path, "usr/lib64")
    search = find_library(tmp_path, NVML_LIBRARY)
    assert search.found == found
    assert search.tried == (str(tmp_path / "usr/lib64" / NVML_LIBRARY),)


def test_a_symlink_with_an_absolute_target_resolves_inside_the_root(tmp_path: Path) -> None:
    real = install_fake_driver(tmp_path, "opt/driver")
    (tmp_path / "usr/lib64").mkdir(parents=True)
    (tmp_path / "usr/lib64" / NVML_LIBRARY).symlink_to("/opt/driver/libnvidia-ml.so.580.65.06")
    assert find_library(tmp_path, NVML_LIBRARY).found == real


def test_the_operator_root_is_used_only_when_it_holds_nvml(tmp_path: Path) -> None:
    (tmp_path / "run/nvidia/driver").mkdir(parents=True)  # the folder alone: no driver container running
    install_fake_driver(tmp_path)
    assert locate_driver_root(tmp_path, Path("/")).path == tmp_path
    install_fake_driver(tmp_path / "run/nvidia/driver", "usr/lib64")
    root = locate_driver_root(tmp_path, Path("/"))
    assert (root.path, root.host_path) == (tmp_path / "run/nvidia/driver", Path("/run/nvidia/driver"))


def _ldconfig(root: Path) -> None:
    if os.geteuid() != 0 or shutil.which("ldconfig") is None:
        pytest.skip("ldconfig -r chroots: needs root")
    subprocess.run(["ldconfig", "-r", str(root)], check=True, capture_output=True, timeout=60)


def test_the_roots_ld_cache_finds_nvml_in_a_folder_no_list_names(tmp_path: Path) -> None:
    real = install_fake_driver(tmp_path, "opt/nvidia/lib")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/ld.so.conf").write_text("/opt/nvidia/lib\n")
    _ldconfig(tmp_path)
    search = find_library(tmp_path, NVML_LIBRARY)
    assert search.found == real
    assert search.tried == (
        f"{tmp_path / 'opt/nvidia/lib' / NVML_LIBRARY} (from {tmp_path / 'etc/ld.so.cache'})",
    )


def test_the_parser_reads_this_machines_real_ld_cache() -> None:
    cache = Path("/etc/ld.so.cache")
    if not cache.exists():
        pytest.skip("no /etc/ld.so.cache")
    entries = parse_ld_cache(cache.read_bytes(), platform.machine())
    assert Path(entries["libc.so.6"]).exists()


def _new_cache(entries: list[tuple[int, str, str]]) -> bytes:
    """A current-format cache (glibc's ``struct cache_file_new``) with string offsets from its start."""
    header = 48 + 24 * len(entries)
    strings, table = b"", b""
    for flags, key, value in entries:
        key_at = header + len(strings)
        strings += key.encode() + b"\0"
        value_at = header + len(strings)
        strings += value.encode() + b"\0"
        table += struct.pack("<iIIIQ", flags, key_at, value_at, 0, 0)
    head = struct.pack("<20sIIB3xI12x", b"glibc-ld.so.cache1.1", len(entries), len(strings), 2, 0)
    return head + table + strings


def test_the_parser_keeps_the_machines_64_bit_libraries_and_the_first_entry() -> None:
    data = _new_cache(
        [
            (0x0003, NVML_LIBRARY, "/usr/lib32/libnvidia-ml.so.1"),  # 32-bit: never loaded by a 64-bit plugin
            (0x0303, NVML_LIBRARY, "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"),
            (0x0303, NVML_LIBRARY, "/usr/lib64/libnvidia-ml.so.1"),
        ]
    )
    assert parse_ld_cache(data, "x86_64") == {NVML_LIBRARY: "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"}
    assert parse_ld_cache(data, "aarch64") == {}
    old_then_new = b"ld.so-1.7.0\0" + struct.pack("<I", 1) + b"\0" * 12
    old_then_new += b"\0" * (-len(old_then_new) % 8)
    assert parse_ld_cache(old_then_new + data, "x86_64") == parse_ld_cache(data, "x86_64")  # glibc 2.7-2.31
    with pytest.raises(LdCacheError, match="magic"):
        parse_ld_cache(b"garbage", "x86_64")
