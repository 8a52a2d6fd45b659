"""Fallback codecs: every Pillow mode round-trips exactly, and damaged payloads raise CorruptPayloadError."""

from __future__ import annotations

import io
import lzma
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bitswap_core import fallback
from bitswap_core.errors import CorruptPayloadError, ImageRefusedError, UnsupportedFormatError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
rng = np.random.default_rng(7)


def _random(mode: str, size: tuple[int, int] = (37, 23)) -> Image.Image:
    """Random raw bytes in any mode: every bit pattern Pillow stores, odd sizes included."""
    image = Image.new(mode, size)
    image.frombytes(rng.integers(0, 256, len(image.tobytes()), dtype=np.uint8).tobytes())
    if mode in ("P", "PA"):
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return image


def _assert_lossless(image: Image.Image) -> str:
    name, payload = fallback.encode(image)
    assert name in fallback.CODECS
    out = fallback.decode(name, payload, image.mode, image.size)
    assert (out.mode, out.size) == (image.mode, image.size)
    assert out.tobytes() == image.tobytes()
    if image.mode in ("P", "PA"):
        assert out.palette.mode == image.palette.mode
        assert out.getpalette(None) == image.getpalette(None)
    assert out.info.get("transparency") == image.info.get("transparency")
    return name


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_round_trips(mode: str) -> None:
    name = _assert_lossless(_random(mode))
    if mode in ("1", "P", "I;16"):
        assert name == fallback.PNG  # the compact, common path must not silently regress to raw
    if mode in ("L", "LA", "RGB", "RGBA"):
        assert name in (fallback.PNG, fallback.WEBP, fallback.JXL)


@pytest.mark.parametrize("transparency", [3, bytes([255, 0, 128, 7])])
def test_palette_with_transparency(transparency: int | bytes) -> None:
    image = Image.fromarray(rng.integers(0, 16, (20, 30), dtype=np.uint8), "P")
    image.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tobytes())
    image.info["transparency"] = transparency
    assert _assert_lossless(image) == fallback.PNG


def test_palette_with_alpha_palette() -> None:
    # quantize() of RGBA gives an RGBA palette; PNG would turn it into RGB + tRNS, so it must not be used.
    image = Image.fromarray(rng.integers(0, 256, (24, 40, 4), dtype=np.uint8), "RGBA").quantize(16)
    assert image.palette.mode == "RGBA"
    assert _assert_lossless(image) == fallback.RAW


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_grayscale(mode: str) -> None:
    values = rng.integers(0, 65536, (31, 45), dtype=np.uint16)
    values[0, :2] = (0, 65535)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (45, 31), values.astype(dtype).tobytes())
    _assert_lossless(image)
    out = fallback.decode(*fallback.encode(image), mode, image.size)
    assert np.array_equal(np.frombuffer(out.tobytes(), dtype).reshape(31, 45), values)


def test_grey_and_rgb_transparency_and_special_floats() -> None:
    grey = Image.fromarray(rng.integers(0, 8, (9, 11), dtype=np.uint8) * 30, "L")
    grey.info["transparency"] = 30
    rgb = Image.fromarray(rng.integers(0, 4, (9, 11, 3), dtype=np.uint8) * 60, "RGB")
    rgb.info["transparency"] = (0, 60, 120)
    floats = Image.fromarray(np.array([[np.nan, np.inf, -np.inf], [-0.0, 1e-40, 3.5]], np.float32), "F")
    ints = Image.fromarray(np.array([[-(2**31), 2**31 - 1, 0]], np.int32), "I")
    for image in (grey, rgb, floats, ints):
        _assert_lossless(image)


def test_icc_profile_stays_out_of_the_payload() -> None:
    image = _random("RGBA")
    image.info["icc_profile"] = b"ICC-MARKER-" * 10
    for encoder in (fallback._encode_png, fallback._encode_tiff):
        assert b"ICC-MARKER-" not in encoder(image)
    _assert_lossless(image)


def test_sample_images_round_trip() -> None:
    paths = sorted(SAMPLES.glob("*.png"))
    assert paths, "samples/ is empty"
    for path in paths:
        with Image.open(path) as image:
            crop = image.crop((0, 0, 61, 47))  # small: the test is about modes, not speed
        _assert_lossless(crop)


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "YCbCr"])  # one mode per codec: PNG, TIFF, raw
def test_truncated_and_damaged_payloads_are_corrupt(mode: str) -> None:
    image = _random(mode)
    name, payload = fallback.encode(image)
    cuts = sorted({0, 1, 4, 8, 16, len(payload) // 3, len(payload) // 2, len(payload) - 1})
    for n in cuts:
        with pytest.raises(CorruptPayloadError):
            fallback.decode(name, payload[:n], mode, image.size)
    garbage = bytes(rng.integers(0, 256, len(payload), dtype=np.uint8))
    with pytest.raises(CorruptPayloadError):
        fallback.decode(name, garbage, mode, image.size)


def test_expectation_mismatches_are_corrupt() -> None:
    image = _random("RGBA")
    name, payload = fallback.encode(image)
    with pytest.raises(CorruptPayloadError, match="container says"):
        fallback.decode(name, payload, "RGB", image.size)
    with pytest.raises(CorruptPayloadError, match="container says"):
        fallback.decode(name, payload, "RGBA", (image.width + 1, image.height))
    with pytest.raises(CorruptPayloadError):  # a PNG is not accepted where TIFF was recorded
        fallback.decode(fallback.TIFF, payload, "RGBA", image.size)
    with pytest.raises(UnsupportedFormatError, match="unknown fallback codec"):
        fallback.decode("fallback:gif", payload, "RGBA", image.size)
    with pytest.raises(ImageRefusedError):
        fallback.decode(name, payload, "RGBA", (0, 5))


def test_decompression_bombs_are_refused_cheaply() -> None:
    # A PNG header declaring 100000 x 100000 pixels: refused from the header, before any allocation.
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = struct.pack(">II", 100_000, 100_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    with pytest.raises(CorruptPayloadError, match="container says"):
        fallback.decode(fallback.PNG, bytes(png), "L", (1, 1))
    # A raw payload whose xz stream expands far beyond the declared size: cut off at size + 1 bytes.
    meta = b'{"mode":"L","size":[4,4]}'
    bomb = struct.pack(">I", len(meta)) + meta + lzma.compress(bytes(50_000_000))
    with pytest.raises(CorruptPayloadError, match="expected exactly 16"):
        fallback.decode(fallback.RAW, bomb, "L", (4, 4))


def _graphic(mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Flat areas, a few colours and repeated tiles: what WebP's palette and LZ77 tools are for."""
    tile = rng.integers(0, 6, (8, 8), dtype=np.uint8)
    idx = np.tile(tile, (size[1] // 8 + 1, size[0] // 8 + 1))[: size[1], : size[0]]
    idx[size[1] // 3 :, size[0] // 2 :] = 6
    colours = rng.integers(0, 256, (7, len(mode)), dtype=np.uint8)
    pixels = colours[idx]
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_webp_wins_on_graphics_and_round_trips(mode: str) -> None:
    image = _graphic(mode)
    assert _assert_lossless(image) == fallback.WEBP
    fast = fallback.encode(image)[1]
    best = fallback.encode_webp(image, "max")
    assert best is not None and len(best) <= len(fast)
    assert fallback.decode(fallback.WEBP, best, mode, image.size).tobytes() == image.tobytes()


def test_webp_keeps_colour_under_transparent_pixels() -> None:
    pixels = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    pixels[..., 3] = 0  # WebP drops RGB under alpha 0 unless asked not to
    image = Image.fromarray(pixels, "RGBA")
    payload = fallback._encode_webp(image)
    assert fallback.decode(fallback.WEBP, payload, "RGBA", image.size).tobytes() == image.tobytes()
    assert fallback.encode_webp(image) is not None


def test_webp_is_not_used_where_it_cannot_store_the_image() -> None:
    rgb = _graphic()
    rgb.info["transparency"] = (0, 0, 0)  # a PNG tRNS colour: WebP has no such field
    assert _assert_lossless(rgb) == fallback.PNG
    assert fallback.encode_webp(rgb) is None
    assert fallback.encode_webp(_random("CMYK")) is None
    wide = Image.new("RGB", (16384, 1), (1, 2, 3))  # above WebP's 16383 a side
    assert fallback.encode_webp(wide) is None and _assert_lossless(wide) == fallback.PNG
    with pytest.raises(ValueError, match="effort"):
        fallback.encode(rgb, effort="extreme")


def test_damaged_webp_payloads_are_corrupt() -> None:
    image = _graphic()
    name, payload = fallback.encode(image)
    assert name == fallback.WEBP
    for n in sorted({0, 4, 16, 24, 25, len(payload) // 2, len(payload) - 1}):
        with pytest.raises(CorruptPayloadError):
            fallback.decode(name, payload[:n], "RGB", image.size)
    with pytest.raises(CorruptPayloadError, match="container says"):
        fallback.decode(name, payload, "RGB", (image.width, image.height + 1))
    with pytest.raises(CorruptPayloadError, match="container says"):
        fallback.decode(name, payload, "RGBA", image.size)
    with pytest.raises(CorruptPayloadError, match="simple lossless"):  # a PNG is not a WebP
        fallback.decode(name, fallback._encode_png(image), "RGB", image.size)
    damaged = bytearray(payload)
    damaged[30:] = rng.integers(0, 256, len(payload) - 30, dtype=np.uint8).tobytes()
    try:  # garbage after a valid header: an error, or other pixels (the container's digest catches those)
        out = fallback.decode(name, bytes(damaged), "RGB", image.size)
        assert out.tobytes() != image.tobytes() and out.size == image.size
    except CorruptPayloadError:
        pass


def test_webp_size_is_checked_before_the_decoder_allocates() -> None:
    payload = bytearray(fallback._encode_webp(Image.new("RGB", (2, 2))))
    payload[21:25] = (0x3FFF | 0x3FFF << 14).to_bytes(4, "little")  # declares 16384 x 16384
    with pytest.raises(CorruptPayloadError, match=r"\(16384, 16384\), container says \(2, 2\)"):
        fallback.decode(fallback.WEBP, bytes(payload), "RGB", (2, 2))


def test_grey_webp_must_hold_grey_pixels() -> None:
    grey = _graphic("L")
    payload = fallback._encode_webp(grey)
    colour = fallback._encode_webp(_graphic("RGB", grey.size))
    assert fallback.decode(fallback.WEBP, payload, "L", grey.size).tobytes() == grey.tobytes()
    with pytest.raises(CorruptPayloadError, match="colour pixels"):
        fallback.decode(fallback.WEBP, colour, "L", grey.size)
    with pytest.raises(CorruptPayloadError, match="cannot hold mode"):
        fallback.decode(fallback.WEBP, payload, "CMYK", grey.size)


def test_full_effort_is_tried_where_its_codec_won_or_came_close(monkeypatch) -> None:
    """A codec's full effort (WebP's was 0.7-4.8% smaller than its fast one on the validation photos) is
    tried where its fast payload won, or lost to the smallest so far by at most FULL_EFFORT_MARGIN; not
    where it lost by more, nor where it cannot store the image."""
    margin = fallback.FULL_EFFORT_MARGIN
    for codec in (fallback.WEBP, fallback.JXL):
        assert fallback.worth_full_effort(codec, 1000, 1000, codec)
        assert fallback.worth_full_effort("bitswap", 1000, int(1000 * (1 + margin)), codec)
        assert not fallback.worth_full_effort("bitswap", 1000, int(1000 * (1 + margin)) + 2, codec)
        assert not fallback.worth_full_effort("bitswap", 1000, None, codec)
        assert not fallback.worth_full_effort(fallback.PNG, 1000, None, codec)
    assert not fallback.worth_full_effort(fallback.WEBP, 1000, 2000, fallback.JXL)
    # a flat image (the smallest payload under FLAT_BPD): WebP's full effort may gain a third there
    flat, photo = 8000 // 2 + 1, 8000 // 2  # dims of 1000 bytes at just under / at 2 bpd
    assert fallback.worth_full_effort("bitswap", 1000, 1400, fallback.WEBP, dims=flat)
    assert not fallback.worth_full_effort("bitswap", 1000, 1400, fallback.WEBP, dims=photo)
    assert not fallback.worth_full_effort("bitswap", 1000, 1600, fallback.WEBP, dims=flat)
    monkeypatch.setattr(fallback, "FULL_EFFORT_MARGIN", 0.0)
    assert not fallback.worth_full_effort("bitswap", 1000, 1001, fallback.WEBP)


def _photo(mode: str = "RGB", size: int = 96) -> Image.Image:
    with Image.open(SAMPLES / "usc-4.2.07.png") as image:
        return image.convert(mode).crop((0, 0, size, size))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_xl_wins_on_photos_and_round_trips(mode: str) -> None:
    """JPEG-XL lossless is the smallest classical codec on photos (REFERENCE.md: 3.34 bpd on the validation
    set against WebP's 3.50), and its full effort no larger than its fast one."""
    image = _photo(mode)
    assert _assert_lossless(image) == fallback.JXL
    fast = fallback.candidates(image)[fallback.JXL]
    best = fallback.encode_verified(image, fallback.JXL, "max")
    assert best is not None and len(best) <= len(fast)
    assert fallback.decode(fallback.JXL, best, mode, image.size).tobytes() == image.tobytes()
    for other in ("RGBA", "LA"):
        alpha = _photo(other, 40)
        out = fallback.decode(fallback.JXL, fallback._encode_jxl(alpha), other, alpha.size)
        assert out.tobytes() == alpha.tobytes()


def test_damaged_jpeg_xl_payloads_are_corrupt() -> None:
    image = _photo("RGB", 64)
    payload = fallback.candidates(image)[fallback.JXL]
    for n in sorted({0, 1, 2, 3, 8, len(payload) // 2, len(payload) - 1}):
        with pytest.raises(CorruptPayloadError):
            fallback.decode(fallback.JXL, payload[:n], "RGB", image.size)
    with pytest.raises(CorruptPayloadError, match="container says"):
        fallback.decode(fallback.JXL, payload, "RGB", (image.width, image.height + 1))
    with pytest.raises(CorruptPayloadError, match="container says"):
        fallback.decode(fallback.JXL, payload, "L", image.size)
    with pytest.raises(CorruptPayloadError, match="cannot hold mode"):
        fallback.decode(fallback.JXL, payload, "CMYK", image.size)
    with pytest.raises(CorruptPayloadError, match="bare codestream"):  # a PNG is not a JPEG-XL
        fallback.decode(fallback.JXL, fallback._encode_png(image), "RGB", image.size)
    damaged = bytearray(payload)
    damaged[12:] = rng.integers(0, 256, len(payload) - 12, dtype=np.uint8).tobytes()
    try:  # garbage after a valid header: an error, or other pixels (the container's digest catches those)
        out = fallback.decode(fallback.JXL, bytes(damaged), "RGB", image.size)
        assert out.tobytes() != image.tobytes() and out.size == image.size
    except CorruptPayloadError:
        pass


def test_jpeg_xl_size_is_checked_before_the_decoder_allocates() -> None:
    """pillow-jxl-plugin decodes every pixel when it opens a file, so the size header is read by hand."""
    payload = bytearray(fallback._encode_jxl(Image.new("RGB", (8, 8), (1, 2, 3))))
    assert payload[2] & 0x3F == 0x01  # small header: height 8 * (1 + 0), ratio 1:1
    payload[2] |= 31 << 1  # declares 256 x 256
    with pytest.raises(CorruptPayloadError, match=r"\(256, 256\), container says \(8, 8\)"):
        fallback.decode(fallback.JXL, bytes(payload), "RGB", (8, 8))
    for size in [(1, 1), (31, 17), (1920, 1080), (513, 257), (20000, 3)]:
        assert fallback._jxl_size(fallback._encode_jxl(Image.new("L", size))) == size
