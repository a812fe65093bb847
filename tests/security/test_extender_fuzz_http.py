"""Whole request bodies from hypothesis, sent over real HTTP to the extender's own listeners (scheduling verbs
on loopback, the webhook over TLS): every answer is a 200 or a 400, within a bound, and the extender keeps
serving. 300 examples per test, 1,200 in all (derandomised by the project's hypothesis profile).

Bodies: ``ExtenderArgs`` (pods with odd and hostile quantities, annotations of every kube-vgpu key with any
JSON, ``Nodes`` with made-up inventories, names of real and unknown nodes, wrong types anywhere, unknown keys),
``ExtenderBindingArgs`` (real pods: GPU, CPU-only, another scheduler's; wrong types), ``AdmissionReview`` (any
object, any uid) and raw bytes.
"""

import asyncio
import http.client
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.listeners import listeners
from extender.settings import Settings
from tests.fakes.extender import NAMES, gpu_node, make_deps, pod_obj
from tests.fixtures.certs import Ca
from tests.ports import free_port

BOUND_S = 2.0
EXAMPLES = 300
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class Running:
    """The listeners in a thread of their own (one event loop), and a client per listener."""

    def __init__(self, tmp: Path) -> None:
        ca = Ca(tmp, "fuzz-ca")
        server = ca.issue("server")
        self.settings = Settings(
            port=free_port(),
            metrics_port=free_port(),
            webhook_port=free_port(),
            tls_cert_file=server.cert,
            tls_key_file=server.key,
            scheduler_names="kube-vgpu-scheduler,default-scheduler",
        )
        self.deps, self.cluster = make_deps([gpu_node("n1", gpus=2), gpu_node("n2", gpus=1)])
        self.cluster.add(
            pod_obj("gpu", (30, 4096), uid="u-gpu"),
            pod_obj("cpu", uid="u-cpu"),
            {**pod_obj("other", (30, 4096), uid="u-other"), "spec": {"schedulerName": "x", "containers": []}},
        )
        self.context = ssl.create_default_context(cafile=str(ca.path))
        self._servers = [uvicorn.Server(item.config) for item in listeners(self.settings, self.deps)]
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        await asyncio.gather(*(s.serve() for s in self._servers))

    def __enter__(self) -> "Running":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not all(s.started for s in self._servers):
            assert time.monotonic() < deadline, "the listeners did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.should_exit = True
        self._thread.join(30)

    def post(self, listener: str, path: str, body: bytes) -> tuple[int, float]:
        status, elapsed, _ = self.exchange(listener, path, body)
        return status, elapsed

    def exchange(self, listener: str, path: str, body: bytes) -> tuple[int, float, bytes]:
        """POST ``body``; the status, the seconds it took and the answer's body."""
        conn: http.client.HTTPConnection
        if listener == "webhook":
            assert self.settings.webhook_port is not None
            conn = http.client.HTTPSConnection(
                "localhost", self.settings.webhook_port, context=self.context, timeout=10
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.settings.port, timeout=10)
        start = time.perf_counter()
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        return response.status, time.perf_counter() - start, answer


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with Running(tmp_path_factory.mktemp("fuzz-tls")) as served:
        yield served


def check(running: Running, listener: str, path: str, body: bytes) -> None:
    status, elapsed = running.post(listener, path, body)
    assert status in (200, 400), (path, status, body[:200])
    assert elapsed < BOUND_S, (path, elapsed, body[:200])


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=12)
)
anything = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
quantities = st.one_of(
    st.sampled_from(["30", "1k", "0.5", "-1", "150", "100", "1e3", "4096Mi", "", "x", "1e5000", "1e500000",
                     "1e-500000", "0.5Ki", "9" * 70, "+1E+2", "1e3Mi", ".", "8Ei"]),
    st.from_regex(r"[+-]?[0-9]{0,20}(\.[0-9]{0,8})?([eE][+-]?[0-9]{1,9}|[KMGTPE]i|[mkMGTPE])?", fullmatch=True),
    anything,
)  # fmt: skip
annotation_keys = st.sampled_from(
    [NAMES.assignment, NAMES.status, NAMES.gpu_policy, NAMES.node_policy, NAMES.core_limit,
     NAMES.include_models, NAMES.exclude_models, NAMES.include_uuids, NAMES.exclude_uuids, "other"]
)  # fmt: skip
containers = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.one_of(st.text(max_size=5), anything),
            "resources": st.fixed_dictionaries(
                {
                    "limits": st.dictionaries(
                        st.sampled_from([NAMES.core, NAMES.memory]), quantities, max_size=2
                    ),
                    "requests": st.one_of(st.none(), anything),
                }
            ),
        }
    ),
    max_size=3,
)
pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "name": st.text(max_size=5),
                "uid": st.one_of(st.sampled_from(["u-gpu", "u-cpu"]), st.text(max_size=5), anything),
                "resourceVersion": st.one_of(st.text(max_size=3), anything),
                "annotations": st.one_of(st.dictionaries(annotation_keys, anything, max_size=3), anything),
            }
        ),
        "spec": st.one_of(
            anything,
            st.fixed_dictionaries(
                {"containers": containers, "initContainers": containers, "schedulerName": st.text(max_size=4)}
            ),
        ),
    }
)
nodes = st.one_of(
    st.none(),
    anything,
    st.fixed_dictionaries(
        {
            "items": st.lists(
                st.one_of(
                    st.builds(gpu_node, st.sampled_from(["n1", "n2", "ghost"]), st.integers(1, 8)),
                    st.fixed_dictionaries(
                        {"metadata": st.fixed_dictionaries({"name": anything, "annotations": anything})}
                    ),
                    anything,
                ),
                max_size=3,
            )
        }
    ),
)
names = st.one_of(st.none(), anything, st.lists(st.sampled_from(["n1", "n2", "ghost", ""]), max_size=4))


def _dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


extender_args = st.one_of(
    st.builds(lambda p, n, nn: _dump({"Pod": p, "Nodes": n, "NodeNames": nn}), pods, nodes, names),
    st.builds(lambda p, extra: _dump({"Pod": p, "NodeNames": ["n1"], **extra}), pods, st.dictionaries(st.text(max_size=6), anything, max_size=2)),
    st.builds(_dump, anything),
    st.binary(max_size=64),
)  # fmt: skip


@FUZZ
@given(
    st.sampled_from(["/scheduler/filter", "/scheduler/prioritize", "/filter", "/scheduler/preempt"]),
    extender_args,
)
def test_any_extender_args_get_a_200_or_a_400_in_time(running, path, body):
    check(running, "scheduling", path, body)


binding_args = st.one_of(
    st.builds(
        lambda n, ns, u, node: _dump({"PodName": n, "PodNamespace": ns, "PodUID": u, "Node": node}),
        st.one_of(st.sampled_from(["gpu", "cpu", "other", "nope"]), anything),
        st.one_of(st.just("default"), anything),
        st.one_of(st.sampled_from(["u-gpu", "u-cpu", "u-other", ""]), anything),
        st.one_of(st.sampled_from(["n1", "n2", "ghost"]), anything),
    ),
    st.builds(_dump, anything),
    st.binary(max_size=64),
)


@FUZZ
@given(binding_args)
def test_any_binding_args_get_a_200_or_a_400_in_time(running, body):
    check(running, "scheduling", "/scheduler/bind", body)


reviews = st.one_of(
    st.builds(
        lambda v, uid, op, obj: _dump({"apiVersion": v, "kind": "AdmissionReview",
                                       "request": {"uid": uid, "operation": op, "object": obj}}),
        st.sampled_from(["admission.k8s.io/v1", ""]),
        st.one_of(st.text(max_size=8), anything),
        st.one_of(st.sampled_from(["CREATE", "UPDATE"]), anything),
        st.one_of(pods, anything),
    ),
    st.builds(lambda r: _dump({"request": r}), anything),
    st.binary(max_size=64),
)  # fmt: skip


@FUZZ
@given(st.sampled_from(["/validate", "/mutate"]), reviews)
def test_any_admission_review_gets_a_200_or_a_400_in_time(running, path, body):
    check(running, "webhook", path, body)


@FUZZ
@given(
    st.sampled_from(["/scheduler/filter", "/scheduler/bind", "/scheduler/preempt"]), st.binary(max_size=512)
)
def test_any_bytes_get_a_200_or_a_400_in_time(running, path, body):
    check(running, "scheduling", path, body)


def _nested(depth: int) -> object:
    value: object = "lol"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES = {
    "nested 500 deep": _nested(500),
    "a mapping of 20,000 keys": {str(i): i for i in range(20_000)},
    "a 4,000-digit int": 10**3999,
    "a 200 KB string": "x" * 200_000,
    "a JSON text nested 500 deep": "[" * 500 + "]" * 500,
    "a JSON text with NaN and 1e999": '{"v": NaN, "phase": 1e999, "gpus": [{"uuid": null}]}',
    "a JSON text with a 4,000-digit version": '{"v": ' + "9" * 4000 + "}",
    "a JSON text of an unknown phase, 200 KB": json.dumps({"v": 1, "phase": "p" * 200_000, "allocated": []}),
}
HOSTILE_PLACES = {
    "vcuda-core limit": lambda pod, v: pod["spec"]["containers"][0]["resources"]["limits"].update({NAMES.core: v}),
    "nvidia.com/gpu limit": lambda pod, v: pod["spec"]["containers"][0]["resources"]["limits"].update(
        {"nvidia.com/gpu": v}
    ),
    "container name": lambda pod, v: pod["spec"]["containers"][0].update(name=v),
    **{
        f"annotation {key}": (lambda k: lambda pod, v: pod["metadata"].update(annotations={k: v}))(key)
        for key in (NAMES.core_limit, NAMES.gpu_policy, NAMES.node_policy, NAMES.include_models,
                    NAMES.exclude_uuids, NAMES.assignment, NAMES.status)
    },
}  # fmt: skip


@pytest.mark.parametrize("place", sorted(HOSTILE_PLACES))
@pytest.mark.parametrize("value", sorted(HOSTILE_VALUES))
def test_a_hostile_value_anywhere_a_message_shows_it_gets_a_short_answer(
    running: Running, value: str, place: str
) -> None:
    """Every value an error message names goes through one bounded ``shown``: deep, wide, huge or not-a-number
    values (and annotation texts holding them) get a 200 or a 400, in time, whose answer never echoes them."""
    pod = pod_obj("gpu", (30, 4096), uid="u-gpu")
    HOSTILE_PLACES[place](pod, HOSTILE_VALUES[value])
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "r1", "operation": "CREATE", "object": pod}}  # fmt: skip
    for listener, path, doc in [
        ("scheduling", "/scheduler/filter", {"Pod": pod, "NodeNames": ["n1", "n2", "ghost"]}),
        ("scheduling", "/scheduler/prioritize", {"Pod": pod, "NodeNames": ["n1", "n2"]}),
        ("webhook", "/mutate", review),
        ("webhook", "/validate", review),
    ]:
        status, elapsed, answer = running.exchange(listener, path, _dump(doc))
        assert status in (200, 400), (path, status, answer[:300])
        assert elapsed < BOUND_S, (path, elapsed)
        assert len(answer) < 4096, (path, answer[:300])
