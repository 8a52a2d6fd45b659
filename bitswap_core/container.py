"""Versioned binary container for one compressed image.

Why a container: a payload alone cannot say which codec and model made it, what the image mode and size
were, or whether the bytes are intact. The header answers those before any decoder touches the payload,
and every length is checked against the bytes actually present, so damaged input fails fast with a
clear error instead of a crash or a huge allocation.

Layout, versions 1 to 21 (integers big-endian; "str8" = u8 length then that many ASCII bytes). The
versions share the layout; from version 2 on the learned codecs' ANS slots are dithered (coding/rans.py),
so version 1 learned payloads are decoded without dithering; from version 3 on a learned payload starts
with its per-image scale adaptation header (coding/adapt.py), from version 4 on that header also holds
the spike levels, from version 5 on the second-spike levels, from version 6 on the blend of phase (0,0)'s
sub-phases, from version 7 on the blend of every step with decoded neighbours, and from version 8 on a
block's neighbour predictor, spikes and blend also read the first row and column of the blocks below and
to its right, which the decoder holds already (blocks.bordered), and from version 9 on the adaptation
header also holds the colour blend (coding/adapt.py), and from version 10 on a u8 after that header gives
the first block's latent grid (coding/first_block.py; 0: bits-back as before), and from version 11 on the
adaptation header ends with the latent shift (coding/adapt.py), and from version 12 on with the value masks
of the channels that use only some values (coding/adapt.py), and from version 13 on with the palette of an
image of few colours (coding/palette.py), and from version 14 on a u8 after the grid byte gives the
posterior samples per block (coding/importance.py; 1: one, as before), followed, when above 1, by a u32
(big-endian): the first block coded with them, and from version 15 on a u8 between the grid byte and the
particles byte gives the block side (blocks.SIDES: 0 = 32, 1 = 64, 2 = 128), and from version 16 on the
adaptation header ends with the surprise context (coding/surprise.py), and from version 17 on with the residual
feedback (coding/residual.py), and from version 18 on a learned payload starts with a u8 that says how deep
its phase (0,0) is split into sub-phases (model/phases.py coding_steps): 1 as versions 4-17 code it, or 2,
its first sub-phase split into four once more (ten coding steps, so the adaptation's per-step sections hold
rows for three more steps); it is the first byte of the adaptation header (coding/adapt.py), and the encoder
picks it per image (api.phase_split_for), and from version 19 on that adaptation header, split byte and all,
is one raw deflate stream (coding/adapt.py), and from version 20 on a u8 after the grid byte says how many of
the image's first 32x32 parts (or blocks) in coding order are coded on that grid (coding/first_block.py's
lead; 0 with grid 0; before, the first alone), and from version 21 on the particles section is followed by
the direct blocks section: u8 0, or 1 and a bitmap of the blocks a classical context model codes instead of
the latent model (coding/direct.py). New containers are always version 21.


    offset  size  field
    0       4     magic b"BSWP"
    4       1     format version (1 to 21)
    5       str8  codec name, non-empty printable ASCII ("bitswap", "bbans", "fallback:png", ...)
    .       str8  model id, lowercase hex, empty for the fallback codecs
    .       str8  PIL mode ("RGB", "L", "I;16", ...), a mode Pillow knows
    .       4     width  (u32, >= 1)
    .       4     height (u32, >= 1)
    .       1     flags: bit 0 = an ICC profile follows; other bits must be 0
    .       4+n   if flag bit 0: ICC profile length (u32) and bytes
    .       32    pixel digest (see pixel_digest)
    .       8     payload length (u64)
    .       n     payload
    end-4   4     CRC32 of every byte before it (header and payload)
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from bitswap_core.errors import CorruptPayloadError, ImageRefusedError, UnsupportedFormatError

MAGIC = b"BSWP"
VERSION = 21
SUPPORTED_VERSIONS = tuple(range(1, VERSION + 1))
DIGEST_SIZE = 32


def split_for(version: int) -> int:
    """How deep a container of this version splits phase (0,0) into sub-phases (model/phases.py
    coding_steps): 0 before version 4 (one step), 1 in versions 4-17 (four sub-phases); from version 18 on
    the payload's first byte says, 1 or 2 (the first of those sub-phases in four again), and this is the
    deepest it may say."""
    return 0 if version < 4 else 1 if version < 18 else 2
DEFAULT_MAX_PIXELS = 2**31
_FLAG_ICC = 0x01
_HEX = frozenset("0123456789abcdef")
_KNOWN_MODES = frozenset(Image.MODES)


def pixel_digest(image: Image.Image) -> bytes:
    """32-byte BLAKE2b over mode, size, palette (if any) and raw pixels: what a lossless decode must give.

    The palette is included because a P image's bytes are indices; the same indices with another
    palette are a different picture.
    """
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    h.update(f"{image.mode}\0{image.width}x{image.height}\0".encode("ascii"))
    if image.mode in ("P", "PA") and image.palette is not None:
        palette_mode = image.palette.mode
        h.update(f"palette:{palette_mode}\0".encode("ascii"))
        h.update(bytes(image.getpalette(None) or ()))
    h.update(b"pixels\0")
    h.update(image.tobytes())
    return h.digest()


def _field_problem(
    codec: str, model_id: str, mode: str, width: int, height: int, digest: bytes
) -> str | None:
    """Why these field values cannot be stored, or None when they can (shared by pack and unpack)."""
    if not codec or len(codec) > 255 or not (codec.isascii() and codec.isprintable()):
        return f"codec name {codec!r} is not 1-255 printable ASCII characters"
    if len(model_id) > 255 or not set(model_id) <= _HEX:
        return f"model id {model_id!r} is not lowercase hex of at most 255 characters"
    if mode not in _KNOWN_MODES:
        return f"image mode {mode!r} is not a mode Pillow knows"
    if not (1 <= width < 2**32 and 1 <= height < 2**32):
        return f"image size {width}x{height} is outside 1..2**32-1"
    if len(digest) != DIGEST_SIZE:
        return f"pixel digest has {len(digest)} bytes, expected {DIGEST_SIZE}"
    return None


@dataclass(frozen=True)
class Container:
    """One compressed image and everything needed to decode and check it."""

    codec: str
    model_id: str
    mode: str
    width: int
    height: int
    icc_profile: bytes | None
    pixel_digest: bytes
    payload: bytes
    version: int = VERSION  # as read; pack() always writes the current VERSION

    @property
    def dithered_ans(self) -> bool:
        """Whether a learned payload's ANS slots are dithered (every version from 2 on)."""
        return self.version >= 2

    @property
    def scale_adapted(self) -> bool:
        """Whether a learned payload starts with a scale adaptation header (every version from 3 on)."""
        return self.version >= 3

    @property
    def spike_adapted(self) -> bool:
        """Whether that header has the spike section (every version from 4 on)."""
        return self.version >= 4

    @property
    def second_spikes(self) -> bool:
        """Whether it also has the second-spike section (every version from 5 on)."""
        return self.version >= 5

    @property
    def blended(self) -> bool:
        """Whether it also has the blend section (every version from 6 on)."""
        return self.version >= 6

    @property
    def bordered(self) -> bool:
        """Whether a learned payload's blocks read their neighbours' first row and column (version 8 on)."""
        return self.version >= 8

    @property
    def first_grid_byte(self) -> bool:
        """Whether a learned payload gives its first block's latent grid after the adaptation (version 10 on)."""
        return self.version >= 10

    @property
    def lead_byte(self) -> bool:
        """Whether a learned payload gives, after the grid byte, how many of its first 32x32 parts are on that
        grid (version 20 on; before, the first alone)."""
        return self.version >= 20

    @property
    def block_side_byte(self) -> bool:
        """Whether a learned payload gives its block side after the grid byte (version 15 on)."""
        return self.version >= 15

    @property
    def direct_section(self) -> bool:
        """Whether a learned payload says, after its particles section, which blocks are coded directly
        (coding/direct.py; version 21 on)."""
        return self.version >= 21

    @property
    def particles_section(self) -> bool:
        """Whether a learned payload gives its posterior samples per block after the grid byte (version 14 on)."""
        return self.version >= 14

    def __post_init__(self) -> None:
        problem = _field_problem(
            self.codec, self.model_id, self.mode, self.width, self.height, self.pixel_digest
        )
        if problem:
            raise ValueError(problem)
        if self.icc_profile is not None and len(self.icc_profile) >= 2**32:
            raise ValueError("ICC profile of 4 GiB or more cannot be stored")


def _str8(value: str) -> bytes:
    raw = value.encode("ascii")
    return bytes([len(raw)]) + raw


def pack(c: Container) -> bytes:
    """Serialise a container (fields were validated when it was built)."""
    parts = [
        MAGIC,
        bytes([VERSION]),
        _str8(c.codec),
        _str8(c.model_id),
        _str8(c.mode),
        struct.pack(">II", c.width, c.height),
    ]
    if c.icc_profile is None:
        parts.append(bytes([0]))
    else:
        parts.append(bytes([_FLAG_ICC]) + struct.pack(">I", len(c.icc_profile)) + bytes(c.icc_profile))
    parts += [bytes(c.pixel_digest), struct.pack(">Q", len(c.payload)), bytes(c.payload)]
    body = b"".join(parts)
    return body + struct.pack(">I", zlib.crc32(body))


class _Reader:
    """Bounds-checked cursor: every read names its field, so truncation errors say where."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        left = len(self.data) - self.pos
        if n > left:
            raise CorruptPayloadError(
                f"container truncated: {field} needs {n} bytes at offset {self.pos}, only {left} remain"
            )
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "big")

    def str8(self, field: str) -> str:
        raw = self.take(self.u8(f"{field} length"), field)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise CorruptPayloadError(f"container {field} is not ASCII: {raw[:32]!r}") from None


def unpack(data: bytes | bytearray | memoryview, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Container:
    """Parse and check container bytes.

    Raises UnsupportedFormatError for another format or version, CorruptPayloadError for truncated,
    damaged or inconsistent bytes, ImageRefusedError when the declared size exceeds max_pixels.
    """
    view = memoryview(data).cast("B")
    if bytes(view[: len(MAGIC)]) != MAGIC[: len(view)]:
        raise UnsupportedFormatError(f"not a Bit-Swap container: magic {bytes(view[:4])!r} != {MAGIC!r}")
    r = _Reader(view)
    r.take(len(MAGIC), "magic")
    version = r.u8("format version")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedFormatError(
            f"container format version {version} is not supported (only {', '.join(map(str, SUPPORTED_VERSIONS))})")
    codec = r.str8("codec name")
    model_id = r.str8("model id")
    mode = r.str8("image mode")
    width = r.u32("width")
    height = r.u32("height")
    flags = r.u8("flags")
    if flags & ~_FLAG_ICC:
        raise CorruptPayloadError(f"container flags 0x{flags:02x} have unknown bits set")
    icc = r.take(r.u32("ICC profile length"), "ICC profile") if flags & _FLAG_ICC else None
    digest = r.take(DIGEST_SIZE, "pixel digest")
    payload_len = r.u64("payload length")
    remaining = len(view) - r.pos
    if payload_len + 4 != remaining:
        raise CorruptPayloadError(
            f"container payload length {payload_len} + 4-byte CRC does not match the {remaining} bytes"
            " that follow the header (truncated or trailing data)"
        )
    payload = r.take(payload_len, "payload")
    stored_crc = r.u32("CRC32")
    actual_crc = zlib.crc32(view[: r.pos - 4])
    if stored_crc != actual_crc:
        raise CorruptPayloadError(
            f"container CRC32 mismatch: stored {stored_crc:08x}, computed {actual_crc:08x}"
        )
    problem = _field_problem(codec, model_id, mode, width, height, digest)
    if problem:
        raise CorruptPayloadError(f"container field invalid: {problem}")
    if width * height > max_pixels:
        raise ImageRefusedError(
            f"container declares {width}x{height} = {width * height} pixels, above max_pixels={max_pixels}"
        )
    return Container(codec, model_id, mode, width, height, icc, digest, payload, version)
