"""Quantities from a tenant or a stranger: :func:`vcuda.request.parse_quantity` is exact, total and bounded.

Properties (hypothesis, examples per test in ``settings``; 1,700 in all):
- over Kubernetes' quantity grammar (sign, digits, fraction, decimal/binary suffix or exponent), the value is
  the exact one (a :class:`fractions.Fraction` reference) when it is a whole number within int64, and a
  ``QuantityError`` otherwise;
- any text, any JSON value, any exponent up to ten digits: an int or a ``QuantityError`` (never another
  exception), each in well under the bound, as cheap for ``1e999999999`` as for ``30``;
- whole numbers and binary suffixes round-trip; the order of values is kept (``parse_quantity`` is monotone).
Plus the cases of issue 11 spelled out (``1e5000``, ``1e500000``, a megabyte of digits).
"""

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcuda.errors import InvalidRequestError
from vcuda.names import Names
from vcuda.request import MAX_QUANTITY, MAX_QUANTITY_CHARS, QuantityError, parse_pod_request, parse_quantity

BOUND_S = 0.05
"""One parse, worst case, on a loaded machine (a parse takes microseconds)."""
DECIMAL = {"": 0, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


@st.composite
def grammar(draw: st.DrawFn) -> tuple[str, Fraction]:
    """A quantity in Kubernetes' grammar and its exact value."""
    sign = draw(st.sampled_from(["", "+", "-"]))
    whole = draw(st.text("0123456789", max_size=12))
    frac = draw(st.one_of(st.none(), st.text("0123456789", max_size=6)))
    if not whole and not frac:
        whole = "0"
    value = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
    kind = draw(st.sampled_from(["decimal", "binary", "exponent"]))
    if kind == "decimal":
        suffix = draw(st.sampled_from(list(DECIMAL)))
        value *= Fraction(10) ** DECIMAL[suffix]
    elif kind == "binary":
        suffix = draw(st.sampled_from(list(BINARY)))
        value *= 2 ** BINARY[suffix]
    else:
        exponent = draw(st.integers(-25, 25))
        suffix = draw(st.sampled_from(["e", "E"])) + draw(
            st.sampled_from(["", "+"] if exponent >= 0 else [""])
        )
        suffix += str(exponent)
        value *= Fraction(10) ** exponent
    text = sign + whole + ("." + frac if frac is not None else "") + suffix
    return text, -value if sign == "-" else value


def timed_parse(raw: object) -> int | QuantityError:
    start = time.perf_counter()
    try:
        result: int | QuantityError = parse_quantity(raw)
    except QuantityError as err:
        result = err
    assert time.perf_counter() - start < BOUND_S, raw
    return result


@settings(max_examples=500)
@given(grammar())
def test_a_quantity_in_the_grammar_has_its_exact_value_or_a_reason(case):
    text, value = case
    result = timed_parse(text)
    if len(text) > MAX_QUANTITY_CHARS:
        assert isinstance(result, QuantityError)
    elif value.denominator != 1:  # (when also past int64, either reason)
        assert isinstance(result, QuantityError)
        assert str(result) in ("not a whole number", "too large")
    elif abs(value) > MAX_QUANTITY:
        assert isinstance(result, QuantityError)
        assert "too large" in str(result)
    else:
        assert result == value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8,
)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=200), json_values))
def test_any_value_is_a_number_or_a_reason_never_an_exception(raw):
    result = timed_parse(raw)
    assert isinstance(result, int | QuantityError)
    if isinstance(result, int):
        assert -MAX_QUANTITY <= result <= MAX_QUANTITY


@settings(max_examples=300)
@given(
    st.text("0123456789", min_size=1, max_size=30),
    st.sampled_from(["e", "E"]),
    st.integers(-(10**10), 10**10),
)
def test_huge_exponents_cost_nothing(mantissa, e, exponent):
    result = timed_parse(f"{mantissa}{e}{exponent}")
    if isinstance(result, int) and int(mantissa):
        assert abs(exponent) <= 9999


@settings(max_examples=200)
@given(st.integers(-MAX_QUANTITY, MAX_QUANTITY), st.sampled_from(list(BINARY)))
def test_whole_numbers_and_binary_suffixes_round_trip(n, suffix):
    assert parse_quantity(str(n)) == n == parse_quantity(n)
    small = n % 8  # 7Ei is the largest multiple of an Ei within int64
    assert parse_quantity(f"{small}{suffix}") == small * 2 ** BINARY[suffix]


@settings(max_examples=200)
@given(grammar(), grammar())
def test_parse_quantity_is_monotone(a, b):
    (text_a, value_a), (text_b, value_b) = a, b
    got_a, got_b = timed_parse(text_a), timed_parse(text_b)
    if isinstance(got_a, int) and isinstance(got_b, int):
        assert (got_a <= got_b) == (value_a <= value_b)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param("1e5000", "too large", id="1e5000 (was an HTTP 500)"),
        pytest.param("1e500000", "too large", id="1e500000 (stalled the event loop)"),
        pytest.param("1e-500000", "not a whole number", id="a tiny exponent"),
        pytest.param("9" * 1_000_000, "longer than", id="a megabyte of digits"),
        pytest.param("1e3Mi", "not a Kubernetes quantity", id="exponent and suffix"),
        pytest.param("1.2.3", "not a Kubernetes quantity", id="two points"),
        pytest.param("\u00b2", "not a Kubernetes quantity", id="a unicode digit"),
        pytest.param(True, "not bool", id="a boolean"),
        pytest.param(2**64, "too large", id="an integer past int64"),
        pytest.param(float("inf"), "not a Kubernetes quantity", id="infinity"),
        pytest.param({"a": [1]}, "not dict", id="an object"),
    ],
)
def test_hostile_quantities_are_refused_with_a_reason(raw, reason):
    result = timed_parse(raw)
    assert isinstance(result, QuantityError)
    assert reason in str(result)


def test_a_pod_with_a_hostile_quantity_gets_a_short_users_sentence():
    names = Names()
    pod = {"spec": {"containers": [{"name": "c", "resources": {"limits": {names.core: "1" * 10**6}}}]}}
    with pytest.raises(InvalidRequestError) as caught:
        parse_pod_request(pod, names)
    assert caught.value.reason == "quantity-invalid"
    assert len(str(caught.value)) < 300
    assert "is not a whole number (longer than 64 characters)" in str(caught.value)
