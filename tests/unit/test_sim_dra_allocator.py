"""The simulated scheduler's DRA allocator (tests/sim/dra_allocator.py) and invariant 4 (dra_invariants.py),
over the slices the real core publishes and the chart's DeviceClasses.

Cases: a 30 % / 4 GiB share consumes exactly that with a shareID; requests between steps and under the
minimum are rounded up as KEP-5075 documents, over the maximum they do not fit; validValues round to the next
valid value; three 40 % shares cannot share one GPU; a whole-GPU claim takes all of a GPU and no share fits
beside it, nor it beside a share; two NVLink GPUs are found by matchAttribute and refused when none are joined;
a model selector picks the product; tainted devices are skipped unless tolerated; MIG instances are exclusive
and bounded by their counters; an incomplete pool and an old generation are ignored; the unsupported is
refused. Property: any sequence of share and whole-GPU claims keeps invariant 4, and a claim is refused only
when no GPU has room for it; the invariant itself catches an over-commit and a doubly held device.
"""

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.core.gpu import NodeGpus
from plugin.core.resourceslice import SliceOptions, pool_specs
from plugin.slicepublisher import slice_object
from tests.builders.dra_claims import CLASSES, DRIVER, NODE, Obj, claim, published, share
from tests.builders.mig import a100
from tests.builders.plugin import gpus
from tests.sim.dra_allocator import Unallocatable, UnsupportedRequestError, allocate
from tests.sim.dra_cel import UnsupportedCelError, matches
from tests.sim.dra_invariants import dra_overcommit
from vcuda.model import GpuUuid

GIB = 1 << 30
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "dra"


def run(slices: list[Obj], *claims: Obj) -> list[Obj | Unallocatable]:
    """Allocate each claim in turn, as the scheduler does one pod at a time."""
    done: list[Obj] = []
    answers: list[Obj | Unallocatable] = []
    for c in claims:
        answer = allocate(c, node=NODE, slices=slices, classes=CLASSES, claims=done)
        answers.append(answer)
        if not isinstance(answer, Unallocatable):
            done.append(c | {"status": {"allocation": answer}})
    assert dra_overcommit(slices, done, [NODE]) == []
    return answers


def results(answer: Obj | Unallocatable) -> list[Obj]:
    assert not isinstance(answer, Unallocatable), answer
    found: list[Obj] = answer["devices"]["results"]
    return found


def test_a_share_consumes_what_it_asks_with_a_share_id() -> None:
    (answer,) = run(published(gpus(1)), claim("c", share("30", "4Gi")))
    (result,) = results(answer)
    assert not isinstance(answer, Unallocatable)
    assert result["consumedCapacity"] == {"cores": "30", "memory": "4Gi"}
    assert result["shareID"]
    assert (result["driver"], result["pool"]) == (DRIVER, NODE)
    assert answer["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [NODE]


@pytest.mark.parametrize(
    ("cores", "memory", "consumed"),
    [
        pytest.param("30", "100Mi", {"cores": "30", "memory": "256Mi"}, id="under the minimum: raised to it"),
        pytest.param("30", "1000000000", {"cores": "30", "memory": "954Mi"}, id="between steps: rounded up"),
        pytest.param("0", "1Gi", {"cores": "1", "memory": "1Gi"}, id="0 cores: the minimum, 1"),
    ],
)
def test_requests_are_rounded_by_the_policy(cores: str, memory: str, consumed: dict[str, str]) -> None:
    (answer,) = run(published(gpus(1)), claim("c", share(cores, memory)))
    assert results(answer)[0]["consumedCapacity"] == consumed


def test_a_request_over_the_maximum_does_not_fit() -> None:
    (answer,) = run(published(gpus(1, memory_mib=1024)), claim("c", share("30", "2Gi")))
    assert isinstance(answer, Unallocatable)


def test_valid_values_round_to_the_next_valid_value() -> None:
    slices = published(gpus(1))
    cores = slices[0]["spec"]["devices"][0]["capacity"]["cores"]
    cores["requestPolicy"] = {"default": "100", "validValues": ["25", "50", "100"]}
    first, second, third = run(
        slices, *(claim(f"c{i}", share(c, "1Gi")) for i, c in enumerate(["30", "10", "60"]))
    )
    assert results(first)[0]["consumedCapacity"]["cores"] == "50"
    assert results(second)[0]["consumedCapacity"]["cores"] == "25"
    assert isinstance(third, Unallocatable)  # 100 would be needed, 25 is left


def test_three_forty_percent_shares_do_not_fit_one_gpu() -> None:
    answers = run(published(gpus(1)), *(claim(f"c{i}", share("40", "1Gi")) for i in range(3)))
    assert [isinstance(a, Unallocatable) for a in answers] == [False, False, True]


def test_a_whole_gpu_claim_shares_with_no_one() -> None:
    slices = published(gpus(1))
    whole, extra = run(slices, claim("w", share(cls="gpu.nvidia.com")), claim("s", share("1", "256Mi")))
    assert results(whole)[0]["consumedCapacity"] == {"cores": "100", "memory": "81559Mi"}
    assert isinstance(extra, Unallocatable)
    _, late_whole = run(slices, claim("s", share("1", "256Mi")), claim("w", share(cls="gpu.nvidia.com")))
    assert isinstance(late_whole, Unallocatable)


def test_two_nvlink_gpus_are_found_by_match_attribute() -> None:
    node = gpus(4, nvlinks=0)
    _, _, c, d = node.gpus
    joined = dataclasses.replace(
        node, links=tuple(lk for lk in node.links if {lk.a, lk.b} == {c.uuid, d.uuid})
    )
    joined = dataclasses.replace(
        joined, links=tuple(dataclasses.replace(lk, nvlinks=18) for lk in joined.links)
    )
    two = claim(
        "c",
        share(cls="gpu.nvidia.com", count=2),
        constraints=[{"requests": ["gpu"], "matchAttribute": f"{DRIVER}/nvlinkDomain"}],
    )
    (answer,) = run(published(joined), two)
    assert sorted(r["device"] for r in results(answer)) == ["gpu-node-1-0002", "gpu-node-1-0003"]
    (none,) = run(published(node), two)
    assert isinstance(none, Unallocatable)


def test_a_model_selector_picks_the_product() -> None:
    h100 = gpus(1)
    h200 = gpus(1, model="NVIDIA H200")
    other = dataclasses.replace(h200.gpus[0], uuid=GpuUuid("GPU-h200"), index=1)
    node = dataclasses.replace(h100, gpus=(*h100.gpus, other))
    example = next(yaml.safe_load_all((EXAMPLES / "model-selection.yaml").read_text()))
    wanted = claim("c", *example["spec"]["spec"]["devices"]["requests"])
    (answer,) = run(published(node), wanted)
    assert [r["device"] for r in results(answer)] == ["gpu-node-1-0000"]


def test_tainted_devices_are_skipped_unless_tolerated() -> None:
    node = gpus(1)
    slices = published(node, unhealthy={str(node.gpus[0].uuid): "xid-79"})
    (refused,) = run(slices, claim("c", share("10", "1Gi")))
    assert isinstance(refused, Unallocatable)
    tolerant = share("10", "1Gi", tolerations=[{"key": f"{DRIVER}/unhealthy", "operator": "Exists"}])
    (answer,) = run(slices, claim("c", tolerant))
    assert len(results(answer)) == 1


def test_mig_instances_are_exclusive_and_bounded_by_counters() -> None:
    node = NodeGpus((a100(0, "3g.20gb", "3g.20gb"),), (), "580.95.05", "13.0")
    slices = published(node)
    answers = run(slices, *(claim(f"c{i}", share(cls="mig.nvidia.com")) for i in range(3)))
    assert [isinstance(a, Unallocatable) for a in answers] == [False, False, True]
    assert "consumedCapacity" not in results(answers[0])[0]
    counters = next(s for s in slices if "sharedCounters" in s["spec"])
    counters["spec"]["sharedCounters"][0]["counters"]["memory"]["value"] = "20Gi"  # room for one
    answers = run(slices, *(claim(f"c{i}", share(cls="mig.nvidia.com")) for i in range(2)))
    assert [isinstance(a, Unallocatable) for a in answers] == [False, True]


def test_an_incomplete_pool_and_an_old_generation_are_ignored() -> None:
    node = NodeGpus((a100(0, "3g.20gb"),), (), "580.95.05", "13.0")
    counters_only = [s for s in published(node) if "sharedCounters" in s["spec"]]
    (incomplete,) = run(counters_only, claim("c", share(cls="mig.nvidia.com")))
    assert isinstance(incomplete, Unallocatable)
    old = published(gpus(1))
    newer = [slice_object(s, name="new") for s in pool_specs(gpus(0), SliceOptions(DRIVER, NODE, {}, {}), 2)]
    (gone,) = run(old + newer, claim("c", share("10", "1Gi")))
    assert isinstance(gone, Unallocatable)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param({"name": "g", "firstAvailable": []}, id="firstAvailable"),
        pytest.param(
            {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "allocationMode": "All"}}, id="All"
        ),
    ],
)
def test_unsupported_requests_are_refused(request_: Obj) -> None:
    with pytest.raises(UnsupportedRequestError):
        allocate(claim("c", request_), node=NODE, slices=published(gpus(1)), classes=CLASSES, claims=[])


@pytest.mark.parametrize(
    "expression",
    ['device.driver == "a" || device.driver == "b"', '(device.driver == "a")', "size(device.attributes) > 0"],
)
def test_unsupported_cel_is_refused(expression: str) -> None:
    with pytest.raises(UnsupportedCelError):
        matches(expression, {"driver": "a"})


@given(st.text(max_size=60) | st.builds("".join, st.lists(st.sampled_from(
    ['device.driver', 'device.attributes["d"].', 'x', ' == ', ' >= ', '"a"', "1", "&&", "||", "(", ")",
     '.startsWith("', '.compareTo(semver("', '1.2.3', '"))', " 0"]), max_size=12)))  # fmt: skip
def test_the_cel_subset_answers_or_refuses_any_text(expression: str) -> None:
    device = {"driver": "d", "attributes": {"x": {"version": "1.2.3"}, "d/y": {"int": 1}}}
    with contextlib.suppress(UnsupportedCelError):
        assert matches(expression, device) in (True, False)


@settings(max_examples=60)
@given(
    st.lists(st.one_of(st.tuples(st.integers(0, 120), st.integers(0, 90_000)), st.just("whole")), max_size=12)
)
def test_any_sequence_of_claims_keeps_the_invariant(asks: list[Any]) -> None:
    """run() asserts invariant 4 after the whole sequence; a refusal means no GPU had room."""
    slices = published(gpus(2, memory_mib=81920))
    claims = [
        claim(f"c{i}", share(cls="gpu.nvidia.com") if a == "whole" else share(str(a[0]), f"{a[1]}Mi"))
        for i, a in enumerate(asks)
    ]
    answers = run(slices, *claims)
    used = {"gpu-node-1-0000": [0, 0], "gpu-node-1-0001": [0, 0]}
    for answer, ask in zip(answers, asks, strict=True):
        if isinstance(answer, Unallocatable):
            need = (100, 80 * GIB) if ask == "whole" else (max(ask[0], 1), max(ask[1], 256) << 20)
            assert (ask != "whole" and ask[0] > 100) or all(
                u[0] + need[0] > 100 or u[1] + need[1] > 80 * GIB for u in used.values()
            )
            continue
        (result,) = results(answer)
        took = result["consumedCapacity"]
        used[result["device"]][0] += int(took["cores"])
        used[result["device"]][1] += _bytes(took["memory"])


def _bytes(quantity: str) -> int:
    from vcuda.units import parse_quantity

    return parse_quantity(quantity)


def test_the_invariant_catches_overcommit_and_double_holders() -> None:
    slices = published(gpus(1))

    def held(name: str, consumed: Obj | None) -> Obj:
        result: Obj = {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": "gpu-node-1-0000"}
        if consumed is not None:
            result |= {"shareID": name, "consumedCapacity": consumed}
        return claim(name) | {"status": {"allocation": {"devices": {"results": [result]}}}}

    over = [held("a", {"cores": "60", "memory": "1Gi"}), held("b", {"cores": "60", "memory": "1Gi"})]
    assert dra_overcommit(slices, over, [NODE]) == [
        f"{DRIVER}/{NODE}/gpu-node-1-0000: cores consumed 120 > capacity 100"
    ]
    assert "without shareID" in dra_overcommit(slices, [held("a", None)], [NODE])[0]
