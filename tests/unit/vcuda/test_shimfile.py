"""The shim config file: exact round trip, and every kind of corruption refused with a clear message."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcuda import shimfile
from vcuda.errors import ContractError
from vcuda.model import GpuUuid
from vcuda.shimfile import GpuLimit, ShimConfig, decode_config, encode_config

limits = st.builds(
    lambda u, mem, core, extra: GpuLimit(GpuUuid("GPU-" + u), mem, core, min(100, core + extra)),
    st.text("0123456789abcdef", min_size=8, max_size=36),
    st.integers(1, 1 << 40),
    st.integers(1, 100),
    st.integers(0, 99),
)
configs = st.builds(
    ShimConfig,
    st.text("abc-0123", max_size=36),
    st.text("abcdef", max_size=20),
    st.text("abcdef", max_size=60),
    st.text("abcdef", max_size=60),
    st.lists(limits, min_size=1, max_size=shimfile.MAX_GPUS).map(tuple),
)


@settings(max_examples=300)
@given(configs)
def test_config_round_trips(config: ShimConfig) -> None:
    data = encode_config(config)
    assert len(data) == shimfile.CONFIG_HEADER.size
    assert decode_config(data) == config


GOOD = encode_config(ShimConfig("uid", "ns", "pod", "c", (GpuLimit(GpuUuid("GPU-1"), 1 << 30, 30, 50),)))


def _patched(offset: int, value: bytes) -> bytes:
    return GOOD[:offset] + value + GOOD[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(GOOD[:-1], "expected 2264", id="truncated"),
        pytest.param(_patched(0, b"XXXXXXXX"), "bad magic", id="wrong magic"),
        pytest.param(_patched(8, b"\x02\0\0\0"), "layout version 2", id="unknown version"),
        pytest.param(_patched(100, b"\xff"), "corrupt", id="flipped byte"),
    ],
)
def test_corrupt_configs_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        decode_config(data)


def test_limits_out_of_range_are_refused() -> None:
    with pytest.raises(ContractError, match="out of range"):
        encode_config(ShimConfig("u", "n", "p", "c", (GpuLimit(GpuUuid("GPU-1"), 1, 60, 50),)))


def test_a_fresh_usage_file_has_no_live_process() -> None:
    assert shimfile.decode_usage(shimfile.empty_usage_file(2)) == ()


def test_every_64_bit_field_is_naturally_aligned() -> None:
    for struct in (shimfile.CONFIG_HEADER, shimfile.GPU_RECORD, shimfile.USAGE_FILE, shimfile.PROC_SLOT):
        assert struct.size % 8 == 0, struct.name
        for field in struct.fields:
            if field.kind == "u64" or not isinstance(field.kind, str):
                assert struct.offset(field.name) % 8 == 0, (struct.name, field.name)
