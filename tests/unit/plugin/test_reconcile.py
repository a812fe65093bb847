"""Reconciling the plugin's unconfirmed allocations with the kubelet's PodResources after a (re)registration.

Cases: the kubelet holds the IDs (kept, whoever holds them), the pod is listed without them (dropped: the
kubelet lost the Allocate before its checkpoint), the pod is not listed (undecided), mixed books.
"""

import pytest

from plugin.core.attribution import ContainerKey, PodRef
from plugin.core.reconcile import KubeletView, Reconciliation, Suspect, reconcile
from plugin.core.slices import slice_id
from vcuda.model import GpuUuid

A = GpuUuid("GPU-a")


def suspect(pod: str, container: str = "c", *numbers: int) -> Suspect:
    key = ContainerKey(PodRef("default", pod, f"uid-{pod}"), container)
    return Suspect(f"uid-{pod}_{container}", frozenset(slice_id(A, n) for n in numbers or (0, 1)), key)


def view(pods=(), held=()) -> KubeletView:
    """pods: names listed in "default"; held: tuples of slice numbers some container holds."""
    return KubeletView(
        frozenset(("default", p) for p in pods),
        frozenset(frozenset(slice_id(A, n) for n in ids) for ids in held),
    )


@pytest.mark.parametrize(
    ("case", "suspects", "kubelet", "expected"),
    [
        (
            "the kubelet holds the IDs for the container: kept",
            [suspect("p", "c", 0, 1)],
            view(pods=["p"], held=[(0, 1)]),
            Reconciliation(kept=("uid-p_c",)),
        ),
        (
            "another container holds the IDs (a swap PreStart will check): kept",
            [suspect("p", "c", 0, 1)],
            view(pods=["p", "twin"], held=[(0, 1)]),
            Reconciliation(kept=("uid-p_c",)),
        ),
        (
            "the pod is listed but nobody holds the IDs (lost before the checkpoint): dropped",
            [suspect("victim", "c", 0, 1)],
            view(pods=["victim"], held=[()]),
            Reconciliation(dropped=("uid-victim_c",)),
        ),
        (
            "the container holds other IDs now: the old answer was lost, dropped",
            [suspect("victim", "c", 0, 1)],
            view(pods=["victim"], held=[(5, 6)]),
            Reconciliation(dropped=("uid-victim_c",)),
        ),
        (
            "a subset of the IDs is not the same allocation: dropped",
            [suspect("victim", "c", 0, 1)],
            view(pods=["victim"], held=[(0,)]),
            Reconciliation(dropped=("uid-victim_c",)),
        ),
        (
            "the pod is not listed (the kubelet has not seen it yet): undecided",
            [suspect("late", "c", 0, 1)],
            view(pods=["other"], held=[(7,)]),
            Reconciliation(undecided=("uid-late_c",)),
        ),
        (
            "an empty List decides nothing",
            [suspect("a", "c", 0), suspect("b", "c", 1)],
            view(),
            Reconciliation(undecided=("uid-a_c", "uid-b_c")),
        ),
        (
            "a mixed book is split by directory name order",
            [suspect("z", "c", 3), suspect("a", "c", 0), suspect("m", "c", 9)],
            view(pods=["z", "a"], held=[(0,)]),
            Reconciliation(kept=("uid-a_c",), dropped=("uid-z_c",), undecided=("uid-m_c",)),
        ),
        ("no suspects, nothing to do", [], view(pods=["p"], held=[(0,)]), Reconciliation()),
    ],
)
def test_reconcile_sorts_each_suspect_by_what_the_kubelet_lists(case, suspects, kubelet, expected):
    assert reconcile(suspects, kubelet) == expected, case


def test_a_pod_of_the_same_name_in_another_namespace_does_not_count_as_listed():
    lost = suspect("p", "c", 0)
    other_namespace = KubeletView(frozenset({("team-b", "p")}), frozenset())
    assert reconcile([lost], other_namespace) == Reconciliation(undecided=(lost.dir_name,))


@pytest.mark.parametrize(
    ("case", "listed", "expected"),
    [
        (
            "a regular init container (PodResources never lists it), pod listed: undecided, never dropped",
            {("default", "p", "app")},
            Reconciliation(undecided=("uid-p_init",)),
        ),
        (
            "the container is listed without the IDs: its answer was lost, dropped",
            {("default", "p", "app"), ("default", "p", "init")},
            Reconciliation(dropped=("uid-p_init",)),
        ),
    ],
)
def test_a_container_the_list_does_not_show_is_never_dropped(case, listed, expected):
    kubelet = KubeletView(frozenset({("default", "p")}), frozenset({frozenset()}), frozenset(listed))
    assert reconcile([suspect("p", "init", 0, 1)], kubelet) == expected, case
