"""The DRA preparer and its checkpoint on a temporary state tree, with a claim source in memory (no gRPC).

Cases: records survive a new Checkpoint (a restart); a corrupt or foreign-version record is set aside and
its claim's files are still removed by UID; a call whose deadline passed writes nothing; a half-way
prepare for another owner pod leaves no directory behind; restore writes the specs of prepared claims again;
claims whose shares of one GPU add up to more than it are refused until one is unprepared; an unprepare that
arrives while a prepare reads the claim wins; two prepares of one claim at once write it once.
"""

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from plugin.core.allocate import PlanOptions
from plugin.core.cdi import DriverFiles
from plugin.core.dra import ClaimRef, cdi_kind, node_devices
from plugin.dra.checkpoint import Checkpoint
from plugin.dra.prepare import ClaimPreparer, DriverInfo
from plugin.statedir import StateDir
from tests.builders.dra import DRIVER, GIB, NODE, claim, dev, result
from tests.builders.plugin import NAMES, h100x8

GPUS = h100x8().gpus


class Claims:
    def __init__(self) -> None:
        self.bodies: dict[str, dict[str, Any]] = {}

    async def read(self, ref: ClaimRef) -> Any:
        return self.bodies[ref.uid]

    def add(self, body: dict[str, Any]) -> ClaimRef:
        meta = body["metadata"]
        self.bodies[meta["uid"]] = body
        return ClaimRef(meta["namespace"], meta["name"], meta["uid"])


def preparer(root: Path, claims: Claims) -> ClaimPreparer:
    state = StateDir(root / "state")
    state.prepare()
    kind = cdi_kind(NAMES.domain)
    info = DriverInfo(DRIVER, NAMES.domain, NODE, kind, root / "cdi", "0.5.0", PlanOptions(), DriverFiles())
    checkpoint = Checkpoint(root / "state" / "dra" / "claims")
    return ClaimPreparer(
        info=info, claims=claims, state=state, checkpoint=checkpoint, gpus=lambda: node_devices(GPUS)
    )


def share(uid: str, owner: str = "pod-1") -> dict[str, Any]:
    return claim(uid=uid, pods=[("p", owner)], results=[result(dev(GPUS[0]), memory=GIB, cores=20)])


def test_a_restarted_plugin_answers_and_unprepares_from_its_records(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(share("c-1"))
    first = asyncio.run(preparer(tmp_path, claims).prepare([ref]))
    again = preparer(tmp_path, Claims())  # a new process: nothing to read from the API
    assert asyncio.run(again.prepare([ref])) == first
    assert asyncio.run(again.unprepare([ref])) == {"c-1": ""}
    assert list((tmp_path / "cdi").iterdir()) == []
    assert list((tmp_path / "state" / "containers").iterdir()) == []


def test_a_corrupt_record_is_set_aside_and_its_claim_still_fully_unprepared(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(share("c-2"))
    asyncio.run(preparer(tmp_path, claims).prepare([ref]))
    record = tmp_path / "state" / "dra" / "claims" / "c-2.json"
    record.write_text('{"v": 1, "namespace": "default"')  # cut short
    restarted = preparer(tmp_path, Claims())
    assert (record.parent / "c-2.json.corrupt").exists()
    assert asyncio.run(restarted.unprepare([ref])) == {"c-2": ""}  # found by its UID
    assert list((tmp_path / "cdi").iterdir()) == []
    assert list((tmp_path / "state" / "containers").iterdir()) == []
    assert list((tmp_path / "state" / "node" / "tenants").iterdir()) == []


def test_a_record_of_another_version_is_not_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "dra" / "claims"
    folder.mkdir(parents=True)
    (folder / "c-3.json").write_text(json.dumps({"v": 2}))
    assert len(preparer(tmp_path, Claims()).checkpoint) == 0


def test_a_call_past_its_deadline_writes_nothing(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(share("c-4"))
    outcome = asyncio.run(preparer(tmp_path, claims).prepare([ref], expired=lambda: True))
    assert "deadline" in outcome["c-4"].error
    assert not (tmp_path / "cdi").exists()
    assert list((tmp_path / "state" / "containers").iterdir()) == []


def test_a_half_way_prepare_for_another_owner_leaves_no_directory(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(share("c-5", owner="pod-a"))
    p = preparer(tmp_path, claims)
    cdi = tmp_path / "cdi"
    cdi.write_text("")  # the spec cannot be written: the claim stays recorded, not prepared
    assert asyncio.run(p.prepare([ref]))["c-5"].error
    cdi.unlink()
    claims.add(share("c-5", owner="pod-b"))  # reserved for another pod by the time the kubelet retries
    assert not asyncio.run(p.prepare([ref]))["c-5"].error
    assert [d.name for d in (tmp_path / "state" / "containers").iterdir()] == ["pod-b_dra-c-5"]


def test_restore_writes_the_specs_of_prepared_claims_again(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(share("c-6"))
    asyncio.run(preparer(tmp_path, claims).prepare([ref]))
    for spec in (tmp_path / "cdi").iterdir():
        spec.unlink()  # a reboot empties /var/run/cdi
    assert preparer(tmp_path, Claims()).restore() == 1
    assert len(list((tmp_path / "cdi").iterdir())) == 1


def on_gpu0(uid: str, cores: int) -> dict[str, Any]:
    return claim(uid=uid, pods=[("p", f"pod-{uid}")], results=[result(dev(GPUS[0]), memory=GIB, cores=cores)])


def test_claims_whose_shares_of_one_gpu_add_up_to_more_than_it_are_refused_until_one_is_unprepared(
    tmp_path: Path,
) -> None:
    # The scheduler keeps the sum within the GPU, but a claim it deallocated may still be prepared here
    # (the kubelet unprepares it later): the node refuses the overlap and the kubelet retries.
    claims = Claims()
    p = preparer(tmp_path, claims)
    big, over, fits = (
        claims.add(on_gpu0(uid, cores)) for uid, cores in (("c-7", 60), ("c-8", 50), ("c-9", 40))
    )
    assert not asyncio.run(p.prepare([big]))["c-7"].error
    assert "in use" in asyncio.run(p.prepare([over]))["c-8"].error
    assert not (tmp_path / "state" / "containers" / "pod-c-8_dra-c-8").exists()
    assert not (tmp_path / "cdi" / f"{cdi_kind(NAMES.domain).replace('/', '-')}_c-8.json").exists()
    assert not asyncio.run(p.prepare([fits]))["c-9"].error  # 60 + 40: exactly the GPU
    asyncio.run(p.unprepare([big]))
    assert not asyncio.run(p.prepare([over]))["c-8"].error  # 40 + 50


def test_a_claim_prepared_twice_is_not_counted_against_itself(tmp_path: Path) -> None:
    claims = Claims()
    p = preparer(tmp_path, claims)
    whole = claims.add(on_gpu0("c-10", 100))
    assert not asyncio.run(p.prepare([whole]))["c-10"].error
    assert not asyncio.run(p.prepare([whole, whole]))["c-10"].error


class SlowClaims(Claims):
    """Claims whose read waits for ``release``: the kubelet's unprepare arrives while prepare reads."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def read(self, ref: ClaimRef) -> Any:
        await self.release.wait()
        return await super().read(ref)


def test_a_claim_unprepared_while_its_prepare_was_reading_is_not_prepared_behind_the_kubelets_back(
    tmp_path: Path,
) -> None:
    claims = SlowClaims()
    ref = claims.add(share("c-11"))
    p = preparer(tmp_path, claims)

    async def race() -> str:
        prepare = asyncio.create_task(p.prepare([ref]))
        await asyncio.sleep(0)  # prepare is reading the claim
        assert await p.unprepare([ref]) == {"c-11": ""}
        claims.release.set()
        return (await prepare)["c-11"].error

    assert "unprepared" in asyncio.run(race())
    assert not (tmp_path / "cdi").exists() or list((tmp_path / "cdi").iterdir()) == []
    assert list((tmp_path / "state" / "containers").iterdir()) == []
    assert p.checkpoint.get("c-11") is None


def test_concurrent_prepares_of_one_claim_answer_the_same_devices_once(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(share("c-12"))
    p = preparer(tmp_path, claims)

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(p.prepare([ref]), p.prepare([ref])))

    first, second = asyncio.run(both())
    assert first == second
    assert not first["c-12"].error
    assert len(list((tmp_path / "cdi").iterdir())) == 1


def test_restore_skips_a_claim_whose_files_cannot_be_written_and_restores_the_others(tmp_path: Path) -> None:
    claims = Claims()
    p = preparer(tmp_path, claims)
    refs = [claims.add(on_gpu0(uid, 10)) for uid in ("c-13", "c-14")]
    asyncio.run(p.prepare(refs))
    shutil.rmtree(tmp_path / "state" / "containers" / "pod-c-13_dra-c-13")
    (tmp_path / "state" / "containers" / "pod-c-13_dra-c-13").write_text("")  # its directory cannot be made
    for spec in (tmp_path / "cdi").iterdir():
        spec.unlink()
    assert (
        preparer(tmp_path, Claims()).restore() == 1
    )  # the plugin starts; the kubelet's prepare retries c-13
    assert [s.name.rsplit("_", 1)[1] for s in (tmp_path / "cdi").iterdir()] == ["c-14.json"]
