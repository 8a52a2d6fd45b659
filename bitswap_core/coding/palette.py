"""Palette cells: in an image of few colours, a pixel's later channels are (nearly) fixed by its earlier ones.

Why: drawings, charts, screenshots and rendered graphics hold a few hundred or thousand colours
(waterloo-serrano 1313, waterloo-frymire 3622). The model codes G given R and B given R and G with a
smooth logistic, so it pays for every value of G near its mean even where this image's palette allows
only one or two G values with that R. The encoder stores the palette (container version 13 on) and the
coder codes each channel with the value cells (rans.value_cells) of the values the palette allows after
the channels already coded at that pixel: R with the palette's R values, G with the G values of the
palette colours with this R, B with the B values of those with this R and G. Like the value masks, the
cells only change the intervals, so the coding stays exact and no pixel costs more than without; the
networks and every context see the true values. A colour that leaves one value possible costs nothing
in that channel.

Header section: u16 colour count (0 = no palette), then the colours as packed keys (channel 0 most
significant, 8 bits per channel) in increasing order, each as an unsigned LEB128 varint of its gap from
the previous key (the first key itself; the gaps less one). MAX_COLOURS bounds the cell tables the
decoder builds (one (3, 256) table per distinct set of allowed values).
"""

from __future__ import annotations

import numpy as np

from bitswap_core.coding.rans import GroupedCells, value_cells
from bitswap_core.errors import CorruptPayloadError

MAX_COLOURS = 4096  # tables for at most this many prefixes per channel: (4096, 3, 256) int64 = 25 MB at worst
_MAX_VARINT = 4  # a gap below 2**24 (3 channels) takes at most 4 LEB128 bytes


def colours(image: np.ndarray, limit: int = MAX_COLOURS) -> np.ndarray | None:
    """The (N, C) uint8 colours of an (H, W, C) uint8 image in increasing order, or None if it holds more
    than limit of them."""
    keys = _keys(image.reshape(-1, image.shape[-1]))
    found = np.unique(keys)
    if len(found) > limit:
        return None
    return _colours(found, image.shape[-1])


def _keys(colours: np.ndarray) -> np.ndarray:
    out = np.zeros(len(colours), dtype=np.int64)
    for c in range(colours.shape[1]):
        out = (out << 8) | colours[:, c].astype(np.int64)
    return out


def _colours(keys: np.ndarray, channels: int) -> np.ndarray:
    return np.stack([(keys >> (8 * (channels - 1 - c))) & 255 for c in range(channels)], axis=1).astype(np.uint8)


def to_bytes(palette: np.ndarray | None) -> bytes:
    """The palette section of an adaptation header (see the module docstring)."""
    if palette is None:
        return b"\0\0"
    keys = _keys(palette)
    if not 1 <= len(keys) <= MAX_COLOURS or (len(keys) > 1 and np.diff(keys).min() < 1):
        raise ValueError(f"a palette holds 1 to {MAX_COLOURS} distinct colours in increasing order")
    gaps = np.concatenate([keys[:1], np.diff(keys) - 1])
    out = bytearray(len(keys).to_bytes(2, "little"))
    for g in gaps.tolist():
        while True:
            byte, g = g & 0x7F, g >> 7
            out.append(byte | (0x80 if g else 0))
            if not g:
                break
    return bytes(out)


def from_bytes(rest: bytes, channels: int) -> tuple[np.ndarray | None, bytes]:
    """(palette or None, the rest of the header) of a palette section; CorruptPayloadError if malformed."""
    if len(rest) < 2:
        raise CorruptPayloadError("adaptation header truncated: the palette section is missing")
    count, at = int.from_bytes(rest[:2], "little"), 2
    if count == 0:
        return None, rest[2:]
    if count > MAX_COLOURS:
        raise CorruptPayloadError(f"palette declares {count} colours, more than {MAX_COLOURS}")
    keys, key = np.empty(count, dtype=np.int64), -1
    for i in range(count):
        gap, shift = 0, 0
        for n in range(_MAX_VARINT + 1):
            if at >= len(rest):
                raise CorruptPayloadError("adaptation header truncated inside the palette")
            if n == _MAX_VARINT:
                raise CorruptPayloadError("palette colour gap is longer than any colour key")
            byte, at = rest[at], at + 1
            gap |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        key = gap if i == 0 else key + gap + 1
        if key >= 1 << (8 * channels):
            raise CorruptPayloadError(f"palette colour key {key} is out of range for {channels} channels")
        keys[i] = key
    return _colours(keys, channels), rest[at:]


class PaletteCells:
    """The coder's cells of one palette: channel c's pixels are coded with the cells of the values the
    palette allows after the pixel's channels 0..c-1 (its prefix). Per channel, the palette's distinct
    prefixes (sorted keys), one cell table per distinct set of allowed values, and each prefix's table."""

    def __init__(self, palette: np.ndarray):
        self.prefixes, self.table_of, self.tables = [], [], []
        for c in range(palette.shape[1]):
            prefix = _keys(palette[:, :c]) if c else np.zeros(len(palette), dtype=np.int64)
            found, which = np.unique(prefix, return_inverse=True)
            masks = np.zeros((len(found), 256), dtype=bool)
            masks[which, palette[:, c]] = True
            sets, table_of = np.unique(np.packbits(masks, axis=1), axis=0, return_inverse=True)
            tables = np.stack([value_cells(np.unpackbits(s).astype(bool)) for s in sets])
            self.prefixes.append(found)
            self.table_of.append(table_of.reshape(-1).astype(np.int64))
            self.tables.append(tables)

    def cells(self, channel: int, earlier: list[np.ndarray]) -> np.ndarray | GroupedCells:
        """Cells for pixels whose channels 0..channel-1 hold `earlier` (flat int arrays, one per channel):
        one (3, 256) table for channel 0, GroupedCells after it."""
        if channel == 0:
            return self.tables[0][0]
        prefix = _keys(np.stack(earlier[:channel], axis=1)) if len(earlier[0]) else np.zeros(0, np.int64)
        found = self.prefixes[channel]
        at = np.minimum(np.searchsorted(found, prefix), len(found) - 1)
        if len(prefix) and not np.array_equal(found[at], prefix):
            raise ValueError("a pixel's earlier channels are not a prefix of any palette colour")
        return GroupedCells(self.tables[channel], self.table_of[channel][at])
