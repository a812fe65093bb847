"""A claim's owner (``plugin.core.dra._owner``) from whatever a tenant writes in ``metadata.ownerReferences``:
never an error, and never a pod other than the one the scheduler reserved the claim for alone."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from plugin.core.dra import ClaimRef, read_allocation
from tests.builders.dra import DRIVER, GIB, claim, dev, pod_owner, result
from tests.builders.plugin import NAMES, h100x8

G0 = h100x8().gpus[0]
RESERVED = ("p1", "pod-uid-1")
REF = ClaimRef("default", "c", "c-1")

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["v1", "apps/v1", "x/v1", ""]) | _scalars,
        "kind": st.sampled_from(["Pod", "pod", "ReplicaSet"]) | _scalars,
        "name": st.sampled_from(["p1", "victim"]) | _scalars,
        "uid": st.sampled_from(["pod-uid-1", "pod-uid-2", "../x", ""]) | _scalars,
        "controller": st.booleans() | _scalars,
    },
)
_owners = st.one_of(
    _json, st.lists(st.one_of(_fields, st.just(pod_owner("victim", "pod-uid-2")), _json), max_size=6)
)


@given(owners=_owners, shared=st.booleans())
def test_no_owner_references_give_an_error_or_a_pod_the_claim_is_not_reserved_for_alone(
    owners: Any, shared: bool
) -> None:
    pods = [RESERVED, ("p2", "pod-uid-2")] if shared else [RESERVED]
    body = claim(
        "c", uid="c-1", pods=pods, results=[result(dev(G0), memory=GIB, cores=30)], from_template=False
    )
    body["metadata"]["ownerReferences"] = owners
    alloc = read_allocation(body, REF, DRIVER, NAMES.domain)
    ours = (alloc.owner_uid, alloc.owner_name)
    assert ours in {("c-1", "c"), ("pod-uid-1", "p1")}
    if shared:
        assert ours == ("c-1", "c")
    if ours == ("pod-uid-1", "p1"):
        assert isinstance(owners, list)
        pod = {"controller": True, "kind": "Pod", "apiVersion": "v1", "uid": "pod-uid-1"}
        assert any(isinstance(o, dict) and pod.items() <= o.items() for o in owners)
