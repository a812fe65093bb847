# mypy: disable-error-code="no-untyped-call"
"""The allocator's decisions over PodResources and its records (plugin.core.admission, plugin.core.verify):
which pod the kubelet is admitting, who holds a record's devices, which record a PreStartContainer is for,
what a swap hands over, and the pod phase a confirmation leads to."""

from dataclasses import dataclass

import pytest

from plugin.core.admission import Held, admitting, holder, record_for, with_records, withheld_reason
from plugin.core.attribution import ContainerKey, candidates
from plugin.core.verify import confirmed_containers, pod_phase, swap_owners
from tests.builders.attribution import A, B, ids, pod
from vcuda.model import Phase


@dataclass(frozen=True)
class Record:
    device_ids: tuple[str, ...]
    owner: ContainerKey
    confirmed: bool = False


TRAIN = pod("train", "1", [("main", 30, 1, [(A, 30)]), ("side", 20, 1, [(B, 20)])])
INFER = pod("infer", "2", [("main", 30, 1, [(A, 30)])])
PODS = {TRAIN.key: TRAIN, INFER.key: INFER}
SLICES = frozenset(ids(A, 0, 1))


def key(p, container="main"):
    return ContainerKey(p.key, container)


def test_the_pod_admitted_now_is_the_one_listed_with_a_gpu_container_holding_nothing_yet():
    held = [Held("default", "train", "main", SLICES), Held("default", "infer", "main", frozenset())]
    assert admitting(PODS, held) == {INFER.key}


def test_a_listed_container_the_pod_does_not_request_gpus_for_does_not_make_it_admitting():
    assert admitting(PODS, [Held("default", "infer", "logger", frozenset())]) == frozenset()


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ([Held("default", "infer", "main", SLICES)], "infer"),
        ([Held("default", "train", "main", SLICES), Held("default", "infer", "main", SLICES)], "train"),
        ([Held("other", "copycat", "c", SLICES)], "copycat"),
        ([Held("default", "infer", "main", frozenset(ids(A, 2)))], None),
    ],
    ids=["the one holding them", "the record's owner first", "a pod not pending here", "nobody"],
)
def test_holder_names_who_podresources_says_holds_the_records_devices(listed, expected):
    found = holder(listed, PODS, Record(tuple(sorted(SLICES)), key(TRAIN)))
    assert (found.pod.name if found else None) == expected


def test_a_prestart_takes_the_unconfirmed_record_of_its_ids_first():
    old = Record(tuple(sorted(SLICES)), key(TRAIN), confirmed=True)
    new = Record(tuple(sorted(SLICES)), key(TRAIN, "side"))
    assert record_for([old, new], list(SLICES)) is new
    assert record_for([old], ids(A, 5)) is None


def test_records_count_as_allocated_tentatively_or_only_once_confirmed():
    records = [Record(("x",), key(TRAIN)), Record(("y",), key(INFER), confirmed=True)]
    tentative = {p.key.name: p.allocated for p in with_records(PODS.values(), records, tentative=True)}
    confirmed = {p.key.name: p.allocated for p in with_records(PODS.values(), records, tentative=False)}
    assert tentative == {"train": {"main"}, "infer": {"main"}}
    assert confirmed == {"train": frozenset(), "infer": {"main"}}


def test_a_swap_hands_the_devices_to_the_holder_and_the_holders_other_records_to_the_attributed():
    owners = {"d-train": key(TRAIN), "d-infer": key(INFER), "d-other": key(TRAIN, "side")}
    assert swap_owners(owners, "d-train", key(TRAIN), key(INFER)) == {
        "d-infer": key(TRAIN),
        "d-train": key(INFER),
    }


@pytest.mark.parametrize(
    ("done", "phase"),
    [({"main"}, Phase.ASSUMED), ({"main", "side"}, Phase.ALLOCATED)],
    ids=["one of two containers", "every container"],
)
def test_a_pod_is_allocated_once_every_gpu_container_is_confirmed(done, phase):
    assert pod_phase(TRAIN, done) is phase


def test_confirmed_containers_join_confirmed_records_and_those_read_back_as_allocated():
    records = [Record(("x",), key(TRAIN), confirmed=True), Record(("y",), key(TRAIN, "side"))]
    half = pod("train", "1", [("main", 30, 1, [(A, 30)])], allocated={"init"})
    assert confirmed_containers(records, TRAIN.key, half) == {"main", "init"}
    assert pod_phase(None, {"main"}) is Phase.ALLOCATED  # a pod no longer pending: what is done is all


def test_withheld_reason_names_the_missing_slices_and_who_holds_them():
    ranked = candidates([INFER])
    held = [Held("default", "train", "main", frozenset(ids(A, 0)))]
    why = withheld_reason(ranked, held, ids(A, 0), [], 30)
    assert why.startswith("the kubelet withheld 29 of GPU-a assigned to default/infer/main")
    assert why.endswith("containers of default/train hold slices there")
    assert withheld_reason(ranked, held, ids(A, *range(30)), [], 30) == ""
