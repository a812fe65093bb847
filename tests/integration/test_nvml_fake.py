"""The FAKE NVML itself, through raw pynvml: loading, switching nodes, protocols the real library follows.

Case matrix: one process switching node descriptions; two nodes at once through private pynvml modules;
a subprocess loading the fake through LD_LIBRARY_PATH; no or a broken description; the two-call protocols of
running processes and process utilisation; event-wait timeout; NVLink past the last link; an unimplemented
call; a malformed control line.
"""

import ctypes
import subprocess
import sys

import pynvml
import pytest

from plugin.nvml import Nvml
from tests.fakes.nvml.harness import (  # noqa: F401 (fake_nvml_fixture: fixture)
    NODES,
    NODES_DIR,
    FakeNvml,
    FakeProcess,
    fake_nvml_fixture,
    node_description,
)

NVML_SUCCESS, NVML_ERROR_NOT_FOUND, NVML_ERROR_INSUFFICIENT_SIZE = 0, 6, 7


@pytest.fixture
def raw(fake_nvml):
    """``raw("a10x4")`` -> the fake node with pynvml initialised on it (shut down after the test)."""
    inits = 0

    def on(node_name: str) -> FakeNvml:
        nonlocal inits
        node: FakeNvml = fake_nvml(node_name)
        pynvml.nvmlInit()
        inits += 1
        return node

    yield on
    for _ in range(inits):
        pynvml.nvmlShutdown()


def test_one_process_switches_node_descriptions_at_init(raw):
    raw("h100x8")
    first = pynvml.nvmlDeviceGetCount()
    raw("a10x4")

    assert (first, pynvml.nvmlDeviceGetCount()) == (8, 4)


def test_two_nodes_live_at_once_through_private_pynvml_modules(fake_nvml, tmp_path):
    h200 = FakeNvml.write(tmp_path / "n1", "h200x8")
    a10 = FakeNvml.write(tmp_path / "n2", "a10x4")

    with (
        Nvml(library=h200.private_pynvml(tmp_path / "lib1")) as one,
        Nvml(library=a10.private_pynvml(tmp_path / "lib2")) as two,
    ):
        found = one.discover(), two.discover()

    assert [[g.uuid for g in f.gpus] for f in found] == [h200.uuids, a10.uuids]


def test_a_subprocess_finds_the_fake_through_ld_library_path(tmp_path):
    node = FakeNvml.write(tmp_path, "a100x4-mig")
    script = "import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetCount(), pynvml.nvmlSystemGetDriverVersion())"

    out = subprocess.run(
        [sys.executable, "-c", script], env=node.env(), capture_output=True, text=True, timeout=60, check=True
    )

    assert out.stdout.split() == ["4", "580.95.05"]


@pytest.mark.parametrize(
    ("config", "code"),
    [
        pytest.param(None, pynvml.NVML_ERROR_DRIVER_NOT_LOADED, id="no description -> driver not loaded"),
        pytest.param("{not json", pynvml.NVML_ERROR_UNKNOWN, id="broken JSON -> unknown error"),
        pytest.param(
            '{"gpus": [{"uuid": "GPU-1"}]}', pynvml.NVML_ERROR_UNKNOWN, id="GPU without memory -> unknown"
        ),
    ],
)
def test_init_fails_without_a_usable_description(fake_nvml, tmp_path, config, code):
    node = fake_nvml("a10x4")
    path = tmp_path / "node.json"
    if config is not None:
        path.write_text(config)
    private = node.private_pynvml(tmp_path / "lib")
    private.nvmlLib.fakeNvmlSetConfigPath(str(path).encode())

    with pytest.raises(private.NVMLError) as raised:
        private.nvmlInit()

    assert raised.value.value == code


def test_running_processes_follow_the_two_call_protocol(raw):
    node = raw("a10x4")
    lib, handle, count = pynvml.nvmlLib, pynvml.nvmlDeviceGetHandleByIndex(0), ctypes.c_uint(0)
    empty = lib.nvmlDeviceGetComputeRunningProcesses_v3(handle, ctypes.byref(count), None), count.value
    node.set_processes(node.uuid(0), [FakeProcess(1, 10), FakeProcess(2, 20)])
    count.value = 0

    busy = lib.nvmlDeviceGetComputeRunningProcesses_v3(handle, ctypes.byref(count), None), count.value

    assert (empty, busy) == ((NVML_SUCCESS, 0), (NVML_ERROR_INSUFFICIENT_SIZE, 2))


def test_process_utilization_follows_the_two_call_protocol(raw):
    node = raw("a10x4")
    lib, handle, count = pynvml.nvmlLib, pynvml.nvmlDeviceGetHandleByIndex(1), ctypes.c_uint(0)
    idle = lib.nvmlDeviceGetProcessUtilization(handle, None, ctypes.byref(count), ctypes.c_ulonglong(0))
    node.set_processes(node.uuid(1), [FakeProcess(7, 10, sm=50)])

    busy = (
        lib.nvmlDeviceGetProcessUtilization(handle, None, ctypes.byref(count), ctypes.c_ulonglong(0)),
        count.value,
    )

    assert (idle, busy) == (NVML_ERROR_NOT_FOUND, (NVML_ERROR_INSUFFICIENT_SIZE, 1))
    assert [(s.pid, s.smUtil) for s in pynvml.nvmlDeviceGetProcessUtilization(handle, 0)] == [(7, 50)]


def test_an_event_wait_without_events_times_out(raw):
    raw("a10x4")
    events = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(
        pynvml.nvmlDeviceGetHandleByIndex(0), pynvml.nvmlEventTypeXidCriticalError, events
    )

    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(events, 20)
    pynvml.nvmlEventSetFree(events)


@pytest.mark.parametrize(
    ("node_name", "link", "error"),
    [
        pytest.param("h100x8", 18, pynvml.NVMLError_NotSupported, id="H100: link 18 of 18 -> not supported"),
        pytest.param("h100x8", 36, pynvml.NVMLError_InvalidArgument, id="link 36 -> invalid argument"),
        pytest.param("a10x4", 0, pynvml.NVMLError_NotSupported, id="A10: no NVLink at all"),
    ],
)
def test_nvlink_past_the_last_link_is_an_error(raw, node_name, link, error):
    raw(node_name)

    with pytest.raises(error):
        pynvml.nvmlDeviceGetNvLinkState(pynvml.nvmlDeviceGetHandleByIndex(0), link)


def test_an_unimplemented_call_is_function_not_found(raw):
    raw("a10x4")

    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        pynvml.nvmlDeviceGetPowerUsage(pynvml.nvmlDeviceGetHandleByIndex(0))


def test_a_malformed_control_line_is_skipped(raw):
    node = raw("a10x4")
    with node.control_path.open("a") as f:
        f.write("{broken\n")
    node.control({"op": "utilization", "uuid": node.uuid(0), "gpu": 66})

    assert pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(0)).gpu == 66


@pytest.mark.parametrize("node_name", NODES)
def test_a_shipped_description_has_unique_uuids_bus_ids_and_minors(node_name):
    gpus = node_description(node_name)["gpus"]

    assert (
        len({(g["uuid"]) for g in gpus})
        == len({g["pci_bus_id"] for g in gpus})
        == len({g["minor"] for g in gpus})
    )
    assert len(gpus) == len({g["uuid"] for g in gpus})


def test_every_shipped_description_is_listed():
    assert sorted(p.stem for p in NODES_DIR.glob("*.json")) == sorted(NODES)
