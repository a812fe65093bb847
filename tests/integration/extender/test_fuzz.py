"""No input makes the extender answer 500 (hypothesis, in-process ASGI): random bytes, random JSON, and
ExtenderArgs whose Pod is random Kubernetes-ish JSON (odd quantities, wrong types, odd annotations) are
answered 200 or 400 by every verb and by the webhook.
"""

import json

from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.app import create_app
from tests.unit.extender.fakes import NAMES, gpu_node, make_deps

VERBS = [
    "/scheduler/filter",
    "/scheduler/prioritize",
    "/scheduler/bind",
    "/scheduler/preempt",
    "/validate",
    "/mutate",
]

deps, _ = make_deps([gpu_node("n1", gpus=2)], scheduler_name="kube-vgpu-scheduler")
client = TestClient(create_app(deps), raise_server_exceptions=False)

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
    st.sampled_from(["30", "1k", "0.5", "-1", "150", "100", "1e3", "4096Mi", "", "x"]), anything
)
annotation_keys = st.sampled_from(
    [
        NAMES.assignment,
        NAMES.status,
        NAMES.gpu_policy,
        NAMES.core_limit,
        NAMES.include_models,
        NAMES.exclude_uuids,
        "other",
    ]
)
containers = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=5),
            "resources": st.fixed_dictionaries(
                {
                    "limits": st.dictionaries(
                        st.sampled_from([NAMES.core, NAMES.memory]), quantities, max_size=2
                    )
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
                "uid": st.text(max_size=5),
                "annotations": st.dictionaries(annotation_keys, anything, max_size=3),
            }
        ),
        "spec": st.one_of(
            anything, st.fixed_dictionaries({"containers": containers, "initContainers": containers})
        ),
    }
)
bodies = st.one_of(
    st.binary(max_size=64),
    anything.map(lambda doc: json.dumps(doc).encode()),
    st.builds(
        lambda pod, names: json.dumps({"Pod": pod, "Nodes": None, "NodeNames": names}).encode(),
        pods,
        st.one_of(st.none(), st.lists(st.sampled_from(["n1", "n2", ""]), max_size=3)),
    ),
    st.builds(lambda pod: json.dumps({"request": {"uid": "u", "object": pod}}).encode(), pods),
    st.builds(
        lambda n, ns, u, node: json.dumps(
            {"PodName": n, "PodNamespace": ns, "PodUID": u, "Node": node}
        ).encode(),
        st.text(max_size=4),
        st.text(max_size=4),
        st.text(max_size=4),
        st.sampled_from(["n1", "x"]),
    ),
)


@settings(max_examples=200)
@given(st.sampled_from(VERBS), bodies)
def test_no_input_makes_any_verb_answer_500(verb, body):
    answer = client.post(verb, content=body)
    assert answer.status_code in (200, 400), (answer.status_code, answer.text)
