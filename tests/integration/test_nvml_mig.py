"""MIG through real pynvml over the FAKE NVML: profiles, mode, create and destroy.

Case matrix: profiles of A100 40GB, H100 80GB, H200 141GB (and none on A10); create a GPU instance with a
whole or partial compute instance, see it in discovery, destroy it; capacity; an invalid profile; a full GPU;
MIG mode taking effect at once or pending until a GPU reset; destroy refused while a process runs; created
instances surviving a new NVML session.
"""

import pytest

from plugin.nvml import MigProfile, Nvml, NvmlError
from tests.fakes.nvml.harness import FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)

NVML_ERROR_IN_USE = 19
NVML_ERROR_INSUFFICIENT_RESOURCES = 23


@pytest.fixture
def nvml_on(fake_nvml):
    """``nvml_on("a100x4-mig")`` -> (the fake node, an open ``Nvml`` on it); closed after the test."""
    opened: list[Nvml] = []

    def on(node_name: str):
        node = fake_nvml(node_name)
        nvml = Nvml()
        nvml.open()
        opened.append(nvml)
        return node, nvml

    yield on
    for nvml in opened:
        nvml.close()


@pytest.mark.parametrize(
    ("node_name", "names"),
    [
        pytest.param(
            "a100x4-mig",
            ["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb", "1g.5gb+me", "1g.10gb"],
            id="A100 40GB",
        ),
        pytest.param(
            "h100x8",
            ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.10gb+me", "1g.20gb"],
            id="H100 80GB",
        ),
        pytest.param(
            "h200x8",
            ["1g.18gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb", "1g.18gb+me", "1g.35gb"],
            id="H200 141GB",
        ),
        pytest.param("a10x4", [], id="A10: not MIG capable"),
    ],
)
def test_each_model_offers_its_mig_profiles(nvml_on, node_name, names):
    node, nvml = nvml_on(node_name)

    assert [p.name for p in nvml.mig_profiles(node.uuid(0))] == names


def test_a100_profiles_carry_ids_slices_instances_memory_and_multiprocessors(nvml_on):
    node, nvml = nvml_on("a100x4-mig")

    profiles = {p.name: p for p in nvml.mig_profiles(node.uuid(2))}

    assert profiles["1g.5gb"] == MigProfile("1g.5gb", 19, 1, 7, 4864, 14)
    assert profiles["3g.20gb"] == MigProfile("3g.20gb", 9, 3, 2, 19968, 42)
    assert profiles["7g.40gb"] == MigProfile("7g.40gb", 0, 7, 1, 40192, 98)


def test_a_created_instance_appears_in_discovery_and_goes_away_when_destroyed(nvml_on):
    node, nvml = nvml_on("a100x4-mig")
    uuid = node.uuid(2)

    created = nvml.create_mig_instance(uuid, "3g.20gb")
    listed = nvml.discover().gpus[2].mig_instances
    nvml.destroy_mig_instance(uuid, created.gpu_instance_id)

    assert (created.profile, created.memory_mib, created.multiprocessors, created.parent_uuid) == (
        "3g.20gb",
        19968,
        42,
        uuid,
    )
    assert listed == (created,)
    assert nvml.mig_instances(uuid) == ()


def test_a_partial_compute_instance_is_named_by_its_compute_slices(nvml_on):
    node, nvml = nvml_on("a100x4-mig")

    created = nvml.create_mig_instance(node.uuid(2), "3g.20gb", compute_slices=1)

    assert (created.profile, created.multiprocessors, created.memory_mib) == ("1c.3g.20gb", 14, 19968)


def test_capacity_counts_what_still_fits(nvml_on):
    node, nvml = nvml_on("a100x4-mig")
    uuid = node.uuid(2)
    before = nvml.mig_capacity(uuid, "3g.20gb"), nvml.mig_capacity(uuid, "1g.5gb")

    nvml.create_mig_instance(uuid, "4g.20gb")

    after = nvml.mig_capacity(uuid, "3g.20gb"), nvml.mig_capacity(uuid, "1g.5gb")
    assert (before, after) == ((2, 7), (1, 3))


def test_a_profile_the_gpu_does_not_offer_is_refused_with_the_valid_ones(nvml_on):
    node, nvml = nvml_on("a100x4-mig")

    with pytest.raises(NvmlError, match=r"'3g\.40gb' is not valid .*3g\.20gb"):
        nvml.create_mig_instance(node.uuid(2), "3g.40gb")


def test_a_gpu_without_mig_refuses_instances(nvml_on):
    node, nvml = nvml_on("a10x4")

    with pytest.raises(NvmlError, match="not MIG capable"):
        nvml.create_mig_instance(node.uuid(0), "1g.5gb")


def test_a_full_gpu_refuses_another_instance_and_leaves_nothing_behind(nvml_on):
    node, nvml = nvml_on("a100x4-mig")
    uuid = node.uuid(0)  # 2 x 3g.20gb: no 7 compute slices left for a 3g
    before = nvml.mig_instances(uuid)

    with pytest.raises(NvmlError) as raised:
        nvml.create_mig_instance(uuid, "3g.20gb")

    assert raised.value.code == NVML_ERROR_INSUFFICIENT_RESOURCES
    assert nvml.mig_instances(uuid) == before


def test_seven_small_instances_fill_an_h100(nvml_on):
    node, nvml = nvml_on("h100x8")
    uuid = node.uuid(0)
    assert nvml.set_mig_mode(uuid, enabled=True)

    created = [nvml.create_mig_instance(uuid, "1g.10gb") for _ in range(7)]

    assert [c.gpu_instance_id for c in created] == [1, 2, 3, 4, 5, 6, 7]
    assert {(c.memory_mib, c.multiprocessors) for c in created} == {(9984, 16)}
    assert nvml.mig_capacity(uuid, "1g.10gb") == 0


def test_a_whole_h200_instance_has_the_largest_profile(nvml_on):
    node, nvml = nvml_on("h200x8")
    nvml.set_mig_mode(node.uuid(7), enabled=True)

    created = nvml.create_mig_instance(node.uuid(7), "7g.141gb")

    assert (created.profile, created.memory_mib, created.multiprocessors) == ("7g.141gb", 143104, 132)


def test_mig_mode_on_an_idle_gpu_takes_effect_at_once(nvml_on):
    node, nvml = nvml_on("a100x4-mig")

    applied = nvml.set_mig_mode(node.uuid(3), enabled=True)

    gpu = nvml.discover().gpus[3]
    assert (applied, gpu.mig_enabled, gpu.mig_pending) == (True, True, True)


def test_mig_mode_on_a_busy_gpu_waits_for_a_reset(nvml_on):
    node, nvml = nvml_on("a100x4-mig")
    uuid = node.uuid(3)
    node.set_processes(uuid, [FakeProcess(pid=99, used_mib=100)])

    applied = nvml.set_mig_mode(uuid, enabled=True)
    pending = nvml.discover().gpus[3]
    node.set_processes(uuid, [])
    node.reset_gpu(uuid)
    after_reset = nvml.discover().gpus[3]

    assert (applied, pending.mig_enabled, pending.mig_pending) == (False, False, True)
    assert (after_reset.mig_enabled, after_reset.mig_pending) == (True, True)


def test_an_instance_with_a_running_process_is_not_destroyed(nvml_on):
    node, nvml = nvml_on("a100x4-mig")
    uuid = node.uuid(0)
    node.set_processes(uuid, [FakeProcess(pid=5, used_mib=10, gpu_instance_id=1, compute_instance_id=0)])

    with pytest.raises(NvmlError) as raised:
        nvml.destroy_mig_instance(uuid, 1)

    assert raised.value.code == NVML_ERROR_IN_USE
    assert [m.gpu_instance_id for m in nvml.mig_instances(uuid)] == [1, 2]


def test_created_instances_survive_a_new_nvml_session(nvml_on):
    node, nvml = nvml_on("a100x4-mig")
    created = nvml.create_mig_instance(node.uuid(2), "2g.10gb")
    nvml.close()

    with Nvml() as again:
        listed = again.mig_instances(node.uuid(2))
    nvml.open()

    assert listed == (created,)
