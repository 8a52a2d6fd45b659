"""Container round trip and every way damaged bytes must fail: a clear BitswapError, never a crash."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bitswap_core.container import MAGIC, Container, pack, pixel_digest, split_for, unpack
from bitswap_core.errors import CorruptPayloadError, ImageRefusedError, UnsupportedFormatError


def _image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), "RGB")


def _container(icc: bytes | None = b"fake-icc-profile") -> Container:
    image = _image()
    return Container(
        codec="bitswap",
        model_id="0123abcdef",
        mode=image.mode,
        width=image.width,
        height=image.height,
        icc_profile=icc,
        pixel_digest=pixel_digest(image),
        payload=bytes(range(256)) * 3,
    )


@pytest.mark.parametrize("icc", [None, b"", b"fake-icc-profile"])
def test_round_trip(icc: bytes | None) -> None:
    c = _container(icc)
    data = pack(c)
    assert data[:4] == MAGIC and data[4] == 21
    assert unpack(data) == c
    assert unpack(bytearray(data)) == c
    assert unpack(memoryview(data)) == c


def test_fallback_container_has_empty_model_id() -> None:
    c = Container("fallback:png", "", "RGBA", 1, 1, None, bytes(32), b"")
    assert unpack(pack(c)) == c


def test_every_truncation_is_corrupt() -> None:
    data = pack(_container())
    for n in range(len(data)):
        with pytest.raises(CorruptPayloadError):
            unpack(data[:n])


def test_trailing_bytes_are_corrupt() -> None:
    with pytest.raises(CorruptPayloadError, match="trailing"):
        unpack(pack(_container()) + b"\0")


def test_wrong_magic_and_version_are_unsupported() -> None:
    data = pack(_container())
    with pytest.raises(UnsupportedFormatError, match="magic"):
        unpack(b"\x89PNG" + data[4:])
    with pytest.raises(UnsupportedFormatError, match="magic"):
        unpack(b"X")
    with pytest.raises(UnsupportedFormatError, match="version 22"):
        unpack(data[:4] + b"\x16" + data[5:])


def _as_version(data: bytes, version: int) -> bytes:
    body = data[:4] + bytes([version]) + data[5:-4]
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_older_versions_are_still_read_and_say_how_their_payloads_differ() -> None:
    data = pack(_container())
    new = unpack(data)
    assert data[4] == 21 and new.lead_byte and not unpack(_as_version(data, 19)).lead_byte
    assert new.direct_section and not unpack(_as_version(data, 20)).direct_section
    assert new.block_side_byte and not unpack(_as_version(data, 14)).block_side_byte
    assert [split_for(v) for v in (3, 4, 17, 18, 19)] == [0, 1, 1, 2, 2]
    assert unpack(_as_version(data, 15)).block_side_byte
    assert new.dithered_ans and new.scale_adapted and new.spike_adapted and new.second_spikes
    assert new.blended and new.bordered and new.first_grid_byte and unpack(_as_version(data, 6)).blended
    assert unpack(_as_version(data, 10)).first_grid_byte
    v9 = unpack(_as_version(data, 9))
    assert v9.version == 9 and v9.bordered and not v9.first_grid_byte
    v7 = unpack(_as_version(data, 7))
    assert v7.version == 7 and v7.blended and not v7.bordered
    v5 = unpack(_as_version(data, 5))
    assert v5.version == 5 and v5.second_spikes and not v5.blended
    v4 = unpack(_as_version(data, 4))
    assert v4.version == 4 and v4.spike_adapted and not v4.second_spikes
    v3 = unpack(_as_version(data, 3))
    assert v3.version == 3 and v3.dithered_ans and v3.scale_adapted and not v3.spike_adapted
    v2 = unpack(_as_version(data, 2))
    assert v2.version == 2 and v2.dithered_ans and not v2.scale_adapted
    v1 = unpack(_as_version(data, 1))
    assert v1.version == 1 and not v1.dithered_ans and not v1.scale_adapted


def test_every_bit_flip_is_detected() -> None:
    data = pack(_container())
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises((CorruptPayloadError, UnsupportedFormatError, ImageRefusedError)):
                unpack(bytes(damaged))


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def test_huge_declared_lengths_fail_without_allocating() -> None:
    data = pack(_container(icc=None))
    body = data[:-4]
    # payload length field sits right before the payload; claim 2**63 bytes.
    pos = body.index(bytes(range(256)))
    huge = body[: pos - 8] + struct.pack(">Q", 2**63) + body[pos:]
    with pytest.raises(CorruptPayloadError, match="payload length"):
        unpack(_with_crc(huge))


def test_size_limits() -> None:
    c = _container()
    big = Container(c.codec, c.model_id, c.mode, 70000, 70000, None, c.pixel_digest, b"")
    with pytest.raises(ImageRefusedError, match="max_pixels"):
        unpack(pack(big))
    assert unpack(pack(big), max_pixels=70000 * 70000) == big
    # A zero width written by hand (pack refuses it) is corrupt.
    body = pack(c)[:-4]
    mode_end = body.index(b"RGB") + 3
    zero = body[:mode_end] + struct.pack(">I", 0) + body[mode_end + 4 :]
    with pytest.raises(CorruptPayloadError, match="size"):
        unpack(_with_crc(zero))


@pytest.mark.parametrize(
    "changes",
    [
        {"codec": ""},
        {"codec": "bit\nswap"},
        {"model_id": "XYZ"},
        {"mode": "RGB;weird"},
        {"width": 0},
        {"height": 2**32},
        {"pixel_digest": b"short"},
    ],
)
def test_container_refuses_bad_fields(changes: dict) -> None:
    fields = {**_container().__dict__, **changes}
    with pytest.raises(ValueError):
        Container(**fields)


def test_pixel_digest_sees_mode_size_pixels_and_palette() -> None:
    image = _image()
    d = pixel_digest(image)
    assert len(d) == 32 and d == pixel_digest(image.copy())
    assert d != pixel_digest(image.convert("RGBA"))
    assert d != pixel_digest(Image.frombytes("RGB", (7, 5), image.tobytes()[::-1]))
    assert pixel_digest(Image.new("L", (2, 3))) != pixel_digest(Image.new("L", (3, 2)))
    p = Image.new("P", (4, 4))
    p.putpalette(bytes(range(48)))
    q = p.copy()
    q.putpalette(bytes(range(1, 49)))
    assert p.tobytes() == q.tobytes() and pixel_digest(p) != pixel_digest(q)
