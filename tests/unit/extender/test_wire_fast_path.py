"""The HTTP layer's fast paths give exactly what the wire models give.

Cases: the filter/prioritize body read with ``json`` equals the model's validation for the common shape, and
every other body (full Nodes, other or snake_case keys, NaN, surrogate escapes, non-UTF-8 bytes, wrong types)
gets the model's answer or the model's 400 message; the HostPriorityList encoder equals the model's JSON for
scores 0..10 and still formats scores outside that range.
"""

import json

import pytest

from extender.api import ExtenderArgs, HostPriority, HostPriorityList, encode_host_priorities
from extender.app import BadRequestError, _parse, _parse_args

POD = {"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": []}}
BODIES = [
    pytest.param(json.dumps({"Pod": POD, "Nodes": None, "NodeNames": ["n1", "n2"]}), id="common shape"),
    pytest.param(json.dumps({"Pod": POD, "NodeNames": []}), id="no nodes key"),
    pytest.param(json.dumps({"Pod": POD, "NodeNames": ["n1"], "Extra": 1}), id="an unknown key"),
    pytest.param(json.dumps({"pod": POD, "node_names": ["n1"]}), id="snake_case keys"),
    pytest.param(
        json.dumps({"Pod": POD, "Nodes": {"items": [{"metadata": {"name": "n1"}}]}}), id="full mode"
    ),
    pytest.param(json.dumps({"Pod": POD, "NodeNames": None}), id="null names"),
    pytest.param('{"Pod": {"x": NaN}, "NodeNames": ["n1"]}', id="NaN"),
    pytest.param('{"Pod": {"x": "\\u00e9\\u0026"}, "NodeNames": ["\\u00e9"]}', id="escapes"),
    pytest.param('{"Pod": {"x": "\\ud800"}, "NodeNames": ["n1"]}', id="a lone surrogate"),
    pytest.param('{"Pod": {}, "NodeNames": ["n1", 2]}', id="a name that is a number"),
    pytest.param('{"Pod": [], "NodeNames": ["n1"]}', id="a pod that is a list"),
    pytest.param('{"NodeNames": ["n1"]}', id="no pod"),
    pytest.param("[1, 2]", id="a list"),
    pytest.param("{", id="truncated"),
    pytest.param(b'{"Pod": {"x": "\xff"}, "NodeNames": []}', id="not UTF-8"),
    pytest.param('\ufeff{"Pod": {}, "NodeNames": []}', id="a byte order mark"),
]


def _answer(parse, body: bytes):
    try:
        return "ok", repr(parse(body))  # repr: NaN != NaN
    except BadRequestError as err:
        return "400", str(err)


@pytest.mark.parametrize("body", BODIES)
def test_the_fast_filter_body_reader_answers_as_the_wire_model(body):
    raw = body if isinstance(body, bytes) else body.encode()
    assert _answer(_parse_args, raw) == _answer(lambda b: _parse(ExtenderArgs, b), raw)


@pytest.mark.parametrize(
    "scores",
    [
        pytest.param({}, id="none"),
        pytest.param({"n1": 0, "n2": 10, "n3": 7}, id="0..10"),
        pytest.param({'node-with-"quote"': 5}, id="a name to escape"),
    ],
)
def test_the_priority_encoder_writes_the_wire_models_json(scores):
    model = HostPriorityList([HostPriority(host=h, score=s) for h, s in scores.items()])
    assert encode_host_priorities(scores) == model.model_dump_json(by_alias=True)


def test_the_priority_encoder_formats_scores_outside_0_to_10():
    assert encode_host_priorities({"a": 11, "b": -1}) == '[{"Host":"a","Score":11},{"Host":"b","Score":-1}]'
