"""Leader election (``extender/leader.py``) through the real ``kubernetes`` client against kmock's Leases
(``tests/fakes/kmock.py``: create answers 409 on an existing name, replace answers 409 on a stale
``resourceVersion``, as the real API server does). Time is a fake monotonic clock; the Lease is real.

Cases: the first replica creates the Lease and a second stands by; a standby takes a Lease only once it
has seen it unchanged for its ``leaseDurationSeconds``, and counts the transition; of two standbys racing for
an expired Lease one wins and the other's stale replace is a 409 that loses; a leader that cannot renew stops
leading at its renew deadline, before any standby may take over; a leader that finds another holder stops at
once; a released Lease is taken at the next try; a new leader serves only once its state is rebuilt; kmock
replaces whole objects and refuses a stale ``resourceVersion`` (or a second create) with 409, missing ones 404.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from extender.leader import Elector, KubeLeases, Leadership, LeaseConflictError, LeaseTimings
from tests.fakes.extender import FakeClock
from tests.fakes.kmock import KmockCluster

NAMESPACE, NAME = "kube-system", "kube-vgpu-extender"
TIMINGS = LeaseTimings(lease_s=15.0, renew_s=10.0, retry_s=2.0)


@pytest.fixture
def api() -> Iterator[KmockCluster]:
    with KmockCluster() as cluster:
        yield cluster


def leases(api: KmockCluster) -> KubeLeases:
    return KubeLeases(api.api_client(), NAMESPACE, NAME)


def elector(api: KmockCluster, identity: str, clock: FakeClock) -> Elector:
    return Elector(leases(api), identity, TIMINGS, clock=clock)


def spec(api: KmockCluster) -> dict[str, Any]:
    lease = leases(api).get()
    assert lease is not None
    found: dict[str, Any] = lease["spec"]
    return found


class Snapshot(KubeLeases):
    """A replica whose read happened before another replica's write: it replaces with a stale version."""

    def __init__(self, api: KmockCluster, lease: dict[str, Any]) -> None:
        super().__init__(api.api_client(), NAMESPACE, NAME)
        self.lease = lease

    def get(self) -> dict[str, Any] | None:
        return self.lease


class Unreachable(KubeLeases):
    def get(self) -> dict[str, Any] | None:
        raise ConnectionError("API server unreachable")


def test_the_first_replica_creates_the_lease_and_the_second_stands_by(api):
    clock = FakeClock(0.0)
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step()
    assert not b.step()
    assert a.leading()
    assert not b.leading()
    found = spec(api)
    assert (found["holderIdentity"], found["leaseDurationSeconds"], found["leaseTransitions"]) == ("a", 15, 0)
    assert "." in found["renewTime"]  # MicroTime: microseconds


def test_a_standby_takes_the_lease_only_after_seeing_it_unchanged_for_the_lease_duration(api):
    clock = FakeClock(100.0)
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step()
    assert not b.step()
    clock.now = 114.9
    assert not b.step()
    clock.now = 115.1  # a never renewed: 15 s since b saw the record change
    assert b.step()
    assert b.leading()
    assert not a.leading()
    assert (spec(api)["holderIdentity"], spec(api)["leaseTransitions"]) == ("b", 1)


def test_a_renewing_leader_keeps_the_lease(api):
    clock = FakeClock(0.0)
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    for now in range(0, 60, 2):
        clock.now = float(now)
        assert a.step()
        assert not b.step()
    assert a.term == 1  # renewals are not new terms: no rebuild


def test_of_two_standbys_racing_for_an_expired_lease_the_stale_replace_gets_409_and_loses(api):
    clock = FakeClock(0.0)
    assert elector(api, "a", clock).step()
    b = elector(api, "b", clock)
    c = Elector(Snapshot(api, leases(api).get() or {}), "c", TIMINGS, clock=clock)
    assert not b.step()
    assert not c.step()
    clock.now = 16.0
    assert b.step()  # b replaced first; c still holds the version both read
    assert not c.step()  # 409 from the API server: the race is lost, not an error
    assert not c.leading()
    assert spec(api)["holderIdentity"] == "b"


def test_a_leader_that_cannot_renew_stops_leading_at_its_renew_deadline(api):
    clock = FakeClock(0.0)
    a = Elector(Unreachable(api.api_client(), NAMESPACE, NAME), "a", TIMINGS, clock=clock)
    first = elector(api, "a", clock)
    assert first.step()
    a._renewed_at = 0.0  # the same replica, whose API server then became unreachable
    clock.now = 9.9
    assert not a.step()
    assert a.leading()
    clock.now = 10.0
    assert not a.leading()  # 5 s before any standby may take over (15 s)


def test_a_leader_that_finds_another_holder_stops_at_once(api):
    clock = FakeClock(0.0)
    a = elector(api, "a", clock)
    assert a.step()
    lease = leases(api).get() or {}
    lease["spec"]["holderIdentity"] = "z"
    leases(api).replace(lease)
    clock.now = 2.0
    assert not a.step()
    assert not a.leading()


def test_a_released_lease_is_taken_at_the_next_try(api):
    clock = FakeClock(0.0)
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step()
    assert not b.step()
    a.release()
    assert not a.leading()
    assert spec(api)["holderIdentity"] == ""
    clock.now = 0.5
    assert b.step()
    assert spec(api)["holderIdentity"] == "b"


def test_a_new_leader_serves_only_once_its_state_is_rebuilt(api):
    rebuilding, release = threading.Event(), threading.Event()

    def rebuild() -> None:
        rebuilding.set()
        assert release.wait(10)

    timings = LeaseTimings(lease_s=2.0, renew_s=1.5, retry_s=0.1)
    leadership = Leadership(Elector(leases(api), "a", timings), rebuild)
    leadership.start()
    try:
        assert rebuilding.wait(10)
        assert leadership.elector.leading()
        assert not leadership.serving()
        release.set()
        deadline = time.monotonic() + 5
        while not leadership.serving():
            assert time.monotonic() < deadline, "never served after the rebuild"
            time.sleep(0.01)
    finally:
        leadership.stop()
    assert not leadership.serving()
    assert spec(api)["holderIdentity"] == ""  # released on stop


def test_kmock_replaces_whole_objects_and_refuses_a_stale_resource_version_with_409(api):
    """The real API server's optimistic concurrency, which the election above relies on."""
    from kubernetes.client.exceptions import ApiException

    store = leases(api)
    created = store.create(
        {"metadata": {"name": NAME}, "spec": {"holderIdentity": "a", "leaseTransitions": 0}}
    )
    replaced = store.replace({"metadata": created["metadata"], "spec": {"holderIdentity": "b"}})
    assert replaced["spec"] == {"holderIdentity": "b"}  # a replace, not a merge
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(replaced["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(LeaseConflictError):
        store.replace({"metadata": created["metadata"], "spec": {"holderIdentity": "c"}})
    with pytest.raises(LeaseConflictError):
        store.create({"metadata": {"name": NAME}, "spec": {}})
    assert spec(api) == {"holderIdentity": "b"}
    with pytest.raises(ApiException) as missing:
        KubeLeases(api.api_client(), NAMESPACE, "other").replace({"metadata": {"name": "other"}, "spec": {}})
    assert missing.value.status == 404
