"""Reading the plugin's state directory and the /proc tree (on fake trees under tmp_path).

Cases: the fast usage reader agrees with vcuda.shimfile.decode_usage; layout; corrupt and missing files;
config cache refresh; processes that vanished; NSpid and start time parsing.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.metrics.cgroups import CgroupRef
from plugin.metrics.procfs import NamespacedPid, read_cgroup, read_namespaced_pid
from plugin.metrics.usage import StateReader, container_files, decode_live_slots
from tests.fakes.node import (
    GIB,
    FakeContainer,
    FakeNodeFs,
    FakeSlot,
    cid,
    uid,
    usage_bytes,
    v2_cgroupfs,
)
from vcuda.errors import ContractError
from vcuda.shimfile import decode_usage, empty_usage_file

counters = st.tuples(*[st.integers(0, 2**63)] * 4)
slots = st.builds(
    FakeSlot,
    pid=st.integers(1, 2**31 - 1),
    gpus=st.lists(counters, min_size=2, max_size=2),
    host_pid=st.integers(0, 2**31 - 1),
    start_time=st.integers(0, 2**63),
)


@given(st.lists(slots, max_size=20))
def test_fast_usage_reader_agrees_with_the_contract_decoder(live):
    data = usage_bytes(2, live)
    assert decode_live_slots(data) == decode_usage(data)


def test_fast_usage_reader_rejects_short_or_foreign_files():
    with pytest.raises(ContractError):
        decode_live_slots(b"VCUDAUSE")
    with pytest.raises(ContractError):
        decode_live_slots(b"X" * len(empty_usage_file(1)))


def container(n: int, name: str = "main", slots=()) -> FakeContainer:
    return FakeContainer(uid(n), "ns", f"pod-{n}", name, [("GPU-a", GIB, 30, 30)], slots)


def test_layout_is_containers_dir_with_config_and_usage(tmp_path):
    fs = FakeNodeFs(tmp_path)
    fs.add_container(container(1))
    [files] = container_files(fs.state_dir)
    assert files.name == f"{uid(1)}_main"
    assert files.config == fs.state_dir / "containers" / f"{uid(1)}_main" / "vcuda.config"
    assert files.usage == fs.state_dir / "containers" / f"{uid(1)}_main" / "usage" / "usage.bin"


def test_missing_state_dir_reads_as_no_containers(tmp_path):
    assert StateReader(tmp_path / "nowhere").read().containers == ()


def test_container_without_usage_file_has_no_processes(tmp_path):
    fs = FakeNodeFs(tmp_path)
    fs.add_container(container(1))
    snapshot = StateReader(fs.state_dir).read()
    assert [(c.config.pod_name, c.processes) for c in snapshot.containers] == [("pod-1", ())]
    assert snapshot.unreadable == 0


def test_corrupt_config_and_usage_files_are_counted_not_fatal(tmp_path):
    fs = FakeNodeFs(tmp_path)
    for n in (1, 2, 3):
        fs.add_container(container(n, slots=[FakeSlot(5, [(1, 2, 3, 4)])]))
    (fs.state_dir / "containers" / f"{uid(1)}_main" / "vcuda.config").write_bytes(b"junk")
    (fs.state_dir / "containers" / f"{uid(2)}_main" / "usage" / "usage.bin").write_bytes(b"junk")
    snapshot = StateReader(fs.state_dir).read()
    assert [(c.config.pod_name, len(c.processes)) for c in snapshot.containers] == [
        ("pod-2", 0),
        ("pod-3", 1),
    ]
    assert snapshot.unreadable == 2


def test_rewritten_config_is_decoded_again(tmp_path):
    fs = FakeNodeFs(tmp_path)
    fs.add_container(container(1))
    reader = StateReader(fs.state_dir)
    reader.read()
    fs.add_container(FakeContainer(uid(1), "ns", "pod-1", "main", [("GPU-a", 2 * GIB, 50, 80)]))
    config = reader.read().containers[0].config
    assert (config.gpus[0].memory_limit_bytes, config.gpus[0].soft_limit) == (2 * GIB, 80)


def test_process_files_are_read_under_the_injected_root(tmp_path):
    fs = FakeNodeFs(tmp_path)
    fs.add_process(4242, v2_cgroupfs(uid(1), cid(2)), ns_pid=7, start_time=123456)
    assert read_cgroup(tmp_path, 4242) == CgroupRef(uid(1), cid(2))
    assert read_namespaced_pid(tmp_path, 4242) == NamespacedPid(7, 123456)


def test_vanished_process_reads_as_none(tmp_path):
    assert read_cgroup(tmp_path, 99) is None
    assert read_namespaced_pid(tmp_path, 99) is None


def test_unlistable_state_dir_reads_as_unreadable_not_as_a_crash(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "containers").write_text("not a directory")
    snapshot = StateReader(tmp_path / "state").read()
    assert (snapshot.containers, snapshot.readable) == ((), False)
