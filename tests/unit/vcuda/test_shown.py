"""``vcuda.errors.shown``: the one way a hostile value enters an error message, bounded in depth, items,
length and time, for every kind of value a tenant's JSON or a settings file's YAML can hold."""

import sys

import pytest
import yaml

from vcuda.annotations import decode_status
from vcuda.errors import MAX_SHOWN, ContractError, shown


def _laughs(levels: int = 9) -> object:
    """YAML aliases nesting a list ``levels`` deep, nine items each: 9**levels leaves, loaded at no cost."""
    chain = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    chain += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return yaml.safe_load(f"[{', '.join(chain)}]")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 10**6, id="a megabyte string"),
        pytest.param(_laughs(), id="a billion laughs"),
        pytest.param({str(i): [i] * 100 for i in range(10**5)}, id="a mapping of a hundred thousand keys"),
        pytest.param(set(range(10**5)), id="a large set"),
        pytest.param(10**5000, id="an int past Python's 4300-digit repr limit"),
        pytest.param(-(10**4299), id="an int just under the limit"),
        pytest.param(b"\xff" * 10**5, id="bytes"),
    ],
)
def test_a_hostile_value_is_shown_in_at_most_max_shown_characters(value: object) -> None:
    assert 0 < len(shown(value)) <= MAX_SHOWN


def test_an_int_too_long_to_print_is_named_by_its_size() -> None:
    assert shown(10**5000) == f"<int of {(10**5000).bit_length()} bits>"


def test_an_int_past_a_lowered_digit_limit_is_named_by_its_size() -> None:
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        assert shown(10**1000).startswith("<int of ")
    finally:
        sys.set_int_max_str_digits(before)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("500m", "'500m'"),
        (2**64, "18446744073709551616"),
        (None, "None"),
        (True, "True"),
        ({"a": [1]}, "{'a': [1]}"),
        ({"b": 1, "a": 2}, "{'b': 1, 'a': 2}"),
    ],
)
def test_a_short_value_is_shown_as_its_repr(value: object, text: str) -> None:
    assert shown(value) == text


def test_a_long_string_keeps_its_start_and_end() -> None:
    text = shown("head" + "x" * 1000 + "tail")
    assert text.startswith("'head")
    assert text.endswith("tail'")


def test_an_annotation_with_a_huge_wrong_value_gets_a_short_error() -> None:
    """A tenant may write any annotation on its own pod: the decoder's message stays short."""
    with pytest.raises(ContractError) as caught:
        decode_status('{"v": 1, "phase": "' + "x" * 200_000 + '"}')
    assert len(str(caught.value)) < 200
