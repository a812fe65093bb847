"""Attack: a quantity such as ``1e500000`` through every quantity parser ``vcuda`` exports.

``vcuda.request.parse_quantity`` is bounded (``test_quantities.py``), but ``vcuda.units.parse_quantity``, a public
name of the same contract package, still multiplied ``Decimal`` values and took ``int()`` of the result: 6.8 s
for ``1e500000``, and anything that reaches it (the simulator's kubelet and fit today, any adapter tomorrow)
stalled. Now it is the bounded parser: every exported parser refuses the same hostile quantities at once.
"""

import time

import pytest

from vcuda import request, units
from vcuda.errors import ContractError

HOSTILE = ["1e500000", "1e5000", "9" * 64, "0." + "0" * 60 + "1e62", "1e-500000", "1" * 65]


@pytest.mark.parametrize("parse", [units.parse_quantity, request.parse_quantity], ids=["units", "request"])
@pytest.mark.parametrize("text", HOSTILE)
def test_every_exported_quantity_parser_refuses_hostile_quantities_at_once(parse, text):
    start = time.perf_counter()
    with pytest.raises(ContractError):
        parse(text)
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize("parse", [units.parse_quantity, request.parse_quantity], ids=["units", "request"])
def test_and_both_read_honest_quantities_alike(parse):
    assert [parse(q) for q in ("4096", "1k", "4Ki", "0.5Ki", 30, "1e3")] == [4096, 1000, 4096, 512, 30, 1000]
