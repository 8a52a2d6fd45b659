"""Compressed size, bits per dimension and speed of classical codecs and of the learned codecs.

Why here and not in bitswap_core: this is a measuring tool (benchmarks, reports, `bitswap compare`), not
part of the codec. Every measurement decodes what it encoded and compares pixels; a codec that does not
round-trip is reported as failed, never as a size. bpd = bits / (width * height * channels), channels
counted in the original image's mode (1 for L, P and "1"; 3 for RGB; 4 for RGBA).
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import importlib.util
import io
import json
import lzma
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from PIL import Image

CLASSICAL = ("gzip", "bzip2", "lzma", "png", "webp", "jxl")
LEARNED = ("bbans", "bitswap")
ALL_CODECS = CLASSICAL + LEARNED
LABELS = {
    "gzip": "gzip-9",
    "bzip2": "bzip2-9",
    "lzma": "LZMA-9",
    "png": "PNG opt",
    "webp": "WebP lossless m6",
    "jxl": "JPEG-XL lossless e9",
    "bbans": "BB-ANS",
    "bitswap": "Bit-Swap",
}


@dataclass(frozen=True)
class Measurement:
    """One codec on one image (or, from `totals`, on a whole set)."""

    image: str
    codec: str
    pixels: int  # width * height
    dims: int  # width * height * channels: the bpd denominator
    compressed_bytes: int | None  # None: not measured (see status)
    encode_s: float | None
    decode_s: float | None
    status: str  # "ok", "n/a: <reason>", "FAILED: <reason>"
    note: str = ""  # e.g. the mode actually coded, or the container codec the API chose

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def bpd(self) -> float | None:
        if not self.ok or self.compressed_bytes is None:
            return None
        return 8 * self.compressed_bytes / self.dims

    def as_dict(self) -> dict:
        return {**asdict(self), "label": LABELS.get(self.codec, self.codec), "bpd": self.bpd}


class _Skip(Exception):
    """The codec cannot be measured here (missing plugin, API absent, mode not taken)."""


# ---- classical codecs: encode(image) -> (bytes, coded image); decode(bytes, coded image) -> image ----


def _raw_bytes(image: Image.Image) -> bytes:
    """Raw pixel bytes; a palette image also needs its palette to be decodable."""
    raw = image.tobytes()
    if image.mode in ("P", "PA"):
        raw += bytes(image.getpalette(None) or ())
    return raw


def _lzma9(data: bytes) -> bytes:
    # Preset 9 with the dictionary clamped to the input size, as the xz tool does: the same output as
    # plain preset 9 for inputs under 64 MiB, without allocating ~700 MB for a 64 MiB dictionary.
    dict_size = 1 << max(12, (len(data) - 1).bit_length())
    return lzma.compress(
        data, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": min(dict_size, 1 << 26)}]
    )


_STREAM = {
    "gzip": (lambda d: gzip.compress(d, compresslevel=9, mtime=0), gzip.decompress),
    "bzip2": (lambda d: bz2.compress(d, 9), bz2.decompress),
    "lzma": (_lzma9, lzma.decompress),
}


def _pil_save(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _pil_open(data: bytes) -> Image.Image:
    out = Image.open(io.BytesIO(data))
    out.load()
    return out


def _jxl_plugin() -> None:
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
    except ImportError as exc:
        raise _Skip(f"pillow_jxl plugin missing ({exc}); pip install pillow-jxl-plugin") from exc


# Modes each image format stores natively; other modes are converted losslessly first (noted in the row).
_NATIVE = {
    "png": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"},
    "webp": {"RGB", "RGBA"},
    "jxl": {"L", "LA", "RGB", "RGBA", "I;16", "F"},
}


def _coded_image(image: Image.Image, codec: str) -> Image.Image:
    """The image the format can store that holds the same pixel values (e.g. "1" as L, P as RGB)."""
    native = _NATIVE[codec]
    if image.mode in native:
        return image
    if image.mode == "1" and "L" in native:
        return image.convert("L")
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info or image.palette.mode == "RGBA"
        return image.convert("RGBA" if has_alpha else "RGB")
    if image.mode in ("1", "L") and "RGB" in native:
        return image.convert("RGB")
    if image.mode == "LA" and "RGBA" in native:
        return image.convert("RGBA")
    raise _Skip(f"{LABELS[codec]} cannot store mode {image.mode} losslessly here")


def _same_pixels(expected: Image.Image, decoded: Image.Image) -> bool:
    """Equal pixels; a different mode counts only when conversion both ways is exact on this image."""
    if expected.size != decoded.size:
        return False
    if expected.mode == decoded.mode:
        return expected.tobytes() == decoded.tobytes()
    try:
        there = expected.convert(decoded.mode)
        back = decoded.convert(expected.mode, dither=Image.Dither.NONE)
    except ValueError:
        return False
    return there.tobytes() == decoded.tobytes() and back.tobytes() == expected.tobytes()


def _measure_classical(image: Image.Image, codec: str) -> tuple[int, float, float, str]:
    if codec in _STREAM:
        compress, decompress = _STREAM[codec]
        raw = _raw_bytes(image)
        t0 = time.perf_counter()
        data = compress(raw)
        t1 = time.perf_counter()
        ok = decompress(data) == raw
        t2 = time.perf_counter()
        if not ok:
            raise AssertionError("decompressed bytes differ")
        return len(data), t1 - t0, t2 - t1, "pixels + palette" if image.mode in ("P", "PA") else ""
    if codec == "jxl":
        _jxl_plugin()
    coded = _coded_image(image, codec)
    params = {
        "png": ("PNG", {"optimize": True}),
        "webp": ("WEBP", {"lossless": True, "quality": 100, "method": 6, "exact": True}),
        "jxl": ("JXL", {"lossless": True, "effort": 9}),
    }
    fmt, kwargs = params[codec]
    t0 = time.perf_counter()
    data = _pil_save(coded, fmt, **kwargs)
    t1 = time.perf_counter()
    decoded = _pil_open(data)
    t2 = time.perf_counter()
    if not _same_pixels(coded, decoded):
        raise AssertionError(f"decoded {decoded.mode} pixels differ from the coded {coded.mode} image")
    if coded.mode in ("P", "PA") and decoded.getpalette(None) != coded.getpalette(None):
        raise AssertionError("the palette changed")
    if decoded.info.get("transparency") != coded.info.get("transparency"):
        raise AssertionError("the transparency (tRNS) changed")
    note = f"coded as {coded.mode}" if coded.mode != image.mode else ""
    return len(data), t1 - t0, t2 - t1, note


def _measure_learned(image: Image.Image, codec: str, model: object) -> tuple[int, float, float, str]:
    if importlib.util.find_spec("bitswap_core.api") is None:
        raise _Skip("bitswap_core.api is not in this build")
    try:
        api = importlib.import_module("bitswap_core.api")
    except ImportError as exc:
        raise _Skip(f"bitswap_core.api does not import: {exc}") from exc
    try:
        t0 = time.perf_counter()
        data = api.compress(image, model, codec=codec, smallest=False)  # measure the learned path itself
        t1 = time.perf_counter()
    except Exception as exc:  # no model, image refused, ...: a skipped row with its reason
        raise _Skip(f"compress raised {type(exc).__name__}: {exc}") from exc
    decoded = api.decompress(data, model)  # failing on its own output is a FAILED row, not a skip
    t2 = time.perf_counter()
    if (decoded.mode, decoded.size, decoded.tobytes()) != (image.mode, image.size, image.tobytes()):
        raise AssertionError("decompressed image differs")
    note = ""
    try:
        from bitswap_core.container import unpack

        box = unpack(data)
        note = "" if box.codec == codec else f"container codec {box.codec}"
        if box.codec == codec:  # how many blocks the context model coded instead (container v21 on)
            directs = api.learned_sections(box, api.resolve(model)).directs
            note = "" if directs is None else f"{int(directs.sum())} of {len(directs)} blocks direct"
    except Exception:  # the note is informative only
        pass
    return len(data), t1 - t0, t2 - t1, note


def measure(image: Image.Image, codec: str, *, name: str = "", model: object = None) -> Measurement:
    """Encode, decode and verify one image with one codec; never raises for a codec problem."""
    image.load()
    pixels = image.width * image.height
    fields = dict(image=name, codec=codec, pixels=pixels, dims=pixels * len(image.getbands()))
    if codec not in ALL_CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(ALL_CODECS)}")
    try:
        if codec in LEARNED:
            size, enc, dec, note = _measure_learned(image, codec, model)
        else:
            size, enc, dec, note = _measure_classical(image, codec)
    except _Skip as exc:
        return Measurement(
            **fields, compressed_bytes=None, encode_s=None, decode_s=None, status=f"n/a: {exc}"
        )
    except Exception as exc:  # a codec that crashes or does not round-trip is a result, not an abort
        return Measurement(
            **fields,
            compressed_bytes=None,
            encode_s=None,
            decode_s=None,
            status=f"FAILED: {type(exc).__name__}: {exc}",
        )
    return Measurement(**fields, compressed_bytes=size, encode_s=enc, decode_s=dec, status="ok", note=note)


def compare(
    images: Mapping[str, Image.Image] | Iterable[tuple[str, Image.Image]],
    codecs: Sequence[str] = ALL_CODECS,
    *,
    model: object = None,
    progress: Callable[[Measurement], None] | None = None,
) -> list[Measurement]:
    """Measure every codec on every image: one row per (image, codec), images in the given order."""
    items = images.items() if isinstance(images, Mapping) else images
    rows = []
    for name, image in items:
        for codec in codecs:
            row = measure(image, codec, name=name, model=model)
            rows.append(row)
            if progress:
                progress(row)
    return rows


def totals(rows: Sequence[Measurement]) -> list[Measurement]:
    """One row per codec over all images: total bits / total dims, only when every image succeeded."""
    out = []
    for codec in dict.fromkeys(r.codec for r in rows):
        mine = [r for r in rows if r.codec == codec]
        bad = [r for r in mine if not r.ok]
        pixels = sum(r.pixels for r in mine)
        base = dict(image=f"ALL ({len(mine)} images, {pixels / 1e6:.2f} MP)", codec=codec, pixels=pixels)
        base["dims"] = sum(r.dims for r in mine)
        if bad:
            status = bad[0].status if len(bad) == len(mine) else f"FAILED: {len(bad)} of {len(mine)} images"
            out.append(
                Measurement(**base, compressed_bytes=None, encode_s=None, decode_s=None, status=status)
            )
            continue
        out.append(
            Measurement(
                **base,
                compressed_bytes=sum(r.compressed_bytes or 0 for r in mine),
                encode_s=sum(r.encode_s or 0.0 for r in mine),
                decode_s=sum(r.decode_s or 0.0 for r in mine),
                status="ok",
            )
        )
    return out


def format_table(rows: Sequence[Measurement]) -> str:
    """Plain-text table: one line per row; n/a and failures show their reason."""
    header = f"{'image':<34} {'codec':<20} {'bytes':>10} {'bpd':>7} {'enc s':>8} {'dec s':>8}  note"
    lines = [header, "-" * len(header)]
    for r in rows:
        label = LABELS.get(r.codec, r.codec)
        if r.ok:
            lines.append(
                f"{r.image[:34]:<34} {label:<20} {r.compressed_bytes:>10} {r.bpd:>7.3f}"
                f" {r.encode_s:>8.3f} {r.decode_s:>8.3f}  {r.note}".rstrip()
            )
        else:
            lines.append(f"{r.image[:34]:<34} {label:<20} {'n/a':>10} {'n/a':>7} {'':>8} {'':>8}  {r.status}")
    return "\n".join(lines)


def to_json(rows: Sequence[Measurement], total_rows: Sequence[Measurement] = ()) -> str:
    return json.dumps(
        {"rows": [r.as_dict() for r in rows], "totals": [r.as_dict() for r in total_rows]}, indent=2
    )
