"""Fuzz unpack with mutated real containers: it returns an equal Container or raises a BitswapError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitswap_core.container import Container, pack, unpack
from bitswap_core.errors import BitswapError

ORIGINAL = Container(
    codec="fallback:png",
    model_id="",
    mode="RGBA",
    width=33,
    height=17,
    icc_profile=b"icc" * 20,
    pixel_digest=bytes(range(32)),
    payload=bytes(range(200)),
)
OTHER = Container("bitswap", "deadbeef", "L", 3, 2, None, bytes(32), b"payload")
DATA = pack(ORIGINAL)
OTHER_DATA = pack(OTHER)



@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(DATA)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice"]))
        i = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        elif kind == "splice":  # a piece of another valid container, where a parser may trust it
            j = draw(st.integers(0, len(OTHER_DATA)))
            data[i:i] = OTHER_DATA[j : j + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_unpack_mutated_bytes(data: bytes) -> None:
    try:
        result = unpack(data)
    except BitswapError:
        return
    assert result == ORIGINAL  # only possible when the mutations cancelled out


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_unpack_random_bytes(data: bytes) -> None:
    for candidate in (data, b"BSWP\x01" + data):
        try:
            unpack(candidate)
        except BitswapError:
            pass
