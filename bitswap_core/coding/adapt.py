"""Per-image adaptation: the encoder fits two small corrections of the model's pixel distributions to
one image and stores them in the payload; the decoder applies the same, so coding stays exact.

Why: a model is over- or under-confident on images unlike its training data (scanner noise, smooth
renders), and no amount of training on one set fixes that for every user's set. The encoder knows the
image, so it picks, for each (pixel phase, channel, band of the model's own scale level), an integer shift
of the scale level (one level is about 7% in scale), estimated on a sample of the image's blocks, and
stores the shifts in the payload. The decoder maps every pixel's scale level through the same table before
the same CDF tables are looked up, so coding stays exact; a zero shift is the model unchanged.

Spikes (container version 4 on): graphics, screenshots and saturated areas repeat exact values, which a
smooth logistic cannot predict however narrow. A pixel whose already coded neighbours agree on a value
(phases.neighbour_spikes; phase (0,0) is coded in four sub-phases so that most of it has such neighbours)
gets a mixture: L/256 of its mass moves onto that value (coding/rans.py
does it in exact integers). From container version 5 on, a pixel whose neighbours disagree also gets a
second spike, L2/256 on the value the dissenting neighbours share (the other side of an edge between two
flat areas). The encoder picks the levels per (coding step, channel, agreement class) on the same sampled
blocks; photos mostly keep them 0.

Payload header: u8 bands (0 = no scale shifts), then phases x channels x bands int8 shifts in C order;
from container version 4 on, then u8 spike classes (0 = no spikes), then, for each coding step with decoded
neighbours (phase 0's sub-phases 1-3, phases 1-3: phases.coding_steps), channels x classes u8 levels;
from version 5 on, then u8 second-spike classes (0 = none, else 2: agreement classes 1 and 2, the ones
with dissenting neighbours), then, for the same steps, channels x 2 u8 levels (each adds up with its
first spike's level to at most 255); from version 6 on, then u8 blend classes (0 = none, else 4), then
(version 7 on) u8 blended steps (3: phase (0,0)'s sub-phases 1-3; 6: and phases 1-3), then for those
steps channels x classes x (int8 weight, int8 scale shift); version 6 holds the sub-phases only, with
weights 0..8, version 7 weights -8..8; from version 9 on, then u8 colour classes (0 = none, else 6), then
u8 coloured steps (3 or 6, as the blend's), then for those steps (channels - 1) x classes x (int8 weight
0..8, int8 scale shift).

Blend (container version 6 on): phase (0,0)'s means come from z1 alone, yet three quarters of its pixels
are coded after decoded pixels two apart. The encoder may move their means toward those neighbours' mean,
mean' = floor((w pred + (8 - w) mean) / 8), and shift their scale, with w and the shift per (step,
channel, class of the neighbours' value range): on smooth areas the neighbours say more than the latents.
From version 7 on the later phases get the same correction of the model's own neighbour interpolation
(a negative w where the model moves too far toward the neighbours).

Colour blend (container version 9 on): on colour photos a channel's fine detail follows the channel
before it, so the same steps' G and B may move toward "this pixel's previous channel plus the neighbours'
mean difference", mean' = floor((w (F x_(c-1) + D) + (8 - w) mean) / 8) with D from
phases.colour_context, and shift their scale, with w in 0..8 and the shift per (step, channel, class of
the neighbours' range of that difference). The model's own colour residual reads the previous channel's
residual against its *predicted* mean; this reads the neighbours' actual differences, which the model's
networks see only blurred (measured: docs/BENCHMARKS.md, bench/adaptation.py).
Value cells (container version 12 on): scanned and LUT-stretched images use only some of the 256 values
of a channel (usc-4.1.01: 121 of R's), and a smooth logistic spends its mass on the rest too. The encoder
stores, per channel that pays for it, the set of values the image holds, and the coder codes each pixel
with the mass of its value's cell, the kept value and the left-out values nearest to it
(rans.value_cells): the networks and their contexts are unchanged, only the intervals are. From container
version 13 on, an image of few colours may store its palette instead (coding/palette.py): each channel is
then coded with the cells of the values the palette allows after the pixel's earlier channels.

Deflated (container version 19 on): the header above, from its split byte on, is stored as one raw deflate
stream (RFC 1951, zlib's level 9); the decoder inflates at most HEADER_LIMIT bytes and reads the v18 layout
from them. Why: the per-step tables repeat themselves across steps and are mostly small numbers; deflate
halves a photo's header (usc-4.1.07: 487 -> 273 bytes) and saves 0.11% of the validation set's coded
bytes (docs/BENCHMARKS.md, "Deflated adaptation header"), and any inflate, in any language, reads it.

Steps (container version 18 on): phase (0,0)'s first sub-phase is split again (model/phases.py coding_steps,
split 2), so every per-step section above holds rows for ten coding steps instead of seven (the steps with
decoded neighbours: nine instead of six; a blend of phase (0,0) alone: its six sub-phases instead of three).

Measured on the validation set: docs/BENCHMARKS.md (bench/ratio.py, bench/adaptation.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from bitswap_core.blocks import BLOCK, grid, to_blocks, valid_sizes
from bitswap_core.coding import palette, residual, surprise
from bitswap_core.container import split_for
from bitswap_core.errors import CorruptPayloadError
from bitswap_core.model import phases as pixel_phases

BANDS = 3  # what the encoder writes; the decoder takes any count up to MAX_BANDS
MAX_BANDS = 16
MAX_SHIFT = 24
SAMPLE_BLOCKS = 16  # blocks per image the encoder looks at at least (evenly spread over the image)
SAMPLE_SHARE = 8  # and one block in this many of a larger image (sample_size)
MAX_SAMPLE_BLOCKS = 64
_BATCH_BLOCKS = 256  # sample blocks per network call (of 32x32 pixels)
# The largest block side the adaptation is fitted on: an image coded in 128x128 blocks is fitted on 64x64 ones.
# Why: the fit samples a number of blocks, and a few 128x128 ones describe an image unevenly: fitted on 4 to 6
# of them, usc-house codes 0.5% larger than fitted on 64x64 ones (docs/BENCHMARKS.md, "Block side").
FIT_SIDE = 64
# candidate shifts, smallest first, so that ties keep the smaller change
_CANDIDATES = np.array(sorted(range(-MAX_SHIFT, MAX_SHIFT + 1), key=lambda s: (abs(s), s)), dtype=np.int64)
SPIKE_CLASSES = pixel_phases.SPIKE_CLASSES
# spike weight levels the encoder tries (L / 256 of the mass on the agreed value), smallest first
_SPIKE_LEVELS = np.array([0, 2, 8, 16, 32, 64, 96, 128, 160, 192, 224, 240, 248, 252, 254, 255], dtype=np.int64)


@dataclass(frozen=True)
class Adaptation:
    """One image's corrections: scale shifts (phases, channels, bands), spike levels and second-spike
    levels (coding steps, channels, classes; rows of steps without decoded neighbours are 0, and so is
    class 0 of the second spikes), the blend (coding steps, channels, range classes, (weight of 8,
    scale shift)) and the colour blend (coding steps, channels - 1 (G, B), colour classes, (weight of 8,
    scale shift)); rows of steps without decoded neighbours are 0; and the latent shift, added to every
    latent distribution's scale level (q and p alike); and the value masks (channels, 256) bool, the
    values each channel holds (rows of channels without one all True), or instead the palette, the
    image's colours (coding/palette.py). None / 0 = the model as is."""

    shifts: np.ndarray | None = None
    spikes: np.ndarray | None = None
    spikes2: np.ndarray | None = None
    blend: np.ndarray | None = None
    colour: np.ndarray | None = None
    latent: int = 0
    values: np.ndarray | None = None
    palette: np.ndarray | None = None  # (N, channels) uint8 colours in increasing order (coding/palette.py)
    # the surprise context (coding/surprise.py): scale shifts (coding steps, channels, surprise.CLASSES) and the
    # score edges (surprise.CLASSES - 1,) of its classes; edges with no shifts score pixels without moving them
    surprise: np.ndarray | None = None
    surprise_edges: np.ndarray | None = None
    # the residual feedback (coding/residual.py): weights (coding steps, channels, residual.CLASSES) in
    # -MAX_WEIGHT..MAX_WEIGHT and the |R| edges (residual.CLASSES - 1,) of its classes; all-zero weights (not
    # None) track the residuals without moving any mean
    residual: np.ndarray | None = None
    residual_edges: np.ndarray | None = None
    # how deep the coder splits phase (0,0) (phases.coding_steps): the per-step tables have its steps' rows,
    # and from container version 18 on the header's first byte records it (1 or 2) for the decoder
    split: int = pixel_phases.SPLIT


NONE = Adaptation()
_SECOND_CLASSES = list(range(1, SPIKE_CLASSES))  # agreement classes that have dissenting neighbours
BLEND_CLASSES = pixel_phases.BLEND_CLASSES
BLEND_ONE = 8  # blend weights w / 8 of the neighbours' mean
MAX_BLEND_SHIFT = 12
COLOUR_CLASSES = pixel_phases.COLOUR_CLASSES
COLOUR_WEIGHTS = (0, BLEND_ONE)  # the colour blend's weights of the previous channel plus the difference
FORMAT = 21  # the container version whose header layout to_bytes writes (10's is 9's, 13's on alike, 20-21's 19's)
# The layout the fit prices its sections in: the raw header (container v18's). Why not the deflated size: deflate's
# saving on one section depends on the rest of the header, and pricing raw keeps the fit what it was, so that v19
# codes every image exactly as v18 did and only its header shrinks.
PRICED = 18
# The most bytes a deflated header (container version 19 on) may inflate to: a header with a full palette
# (palette.MAX_COLOURS colours, at most 4 bytes each) and every section is about 17 KB.
HEADER_LIMIT = 1 << 16
MAX_LATENT_SHIFT = 16
LATENT_SHIFTS = (0, 2, 5)  # latent shifts the encoder tries (one scale level is 6% of a latent's scale)
# fit_latent only for images of at least this many blocks: it costs a network pass over the sample per
# candidate, which is up to half a 256x256 image's encode time for a saving of a few tenths of a percent
LATENT_MIN_BLOCKS = 128
EFFORTS = (1, 2)  # the encoder's fit: 1 fast (half the sample, no latent shift), 2 everything (choose)


def check_effort(effort: int) -> None:
    """Refuse an effort outside EFFORTS (a bool too, which would pass for 0 or 1)."""
    if isinstance(effort, bool) or effort not in EFFORTS:
        raise ValueError(f"effort must be one of {EFFORTS}, not {effort!r}")


def _blend_weights(version: int) -> tuple[int, int]:
    """The blend weights a header of this container version may hold: 0..8 in version 6 (phase (0,0)'s
    sub-phases only); from version 7 on -8..8 (a later phase's model mean may already overshoot its
    neighbours' mean, and a negative weight pulls it back)."""
    return (0 if version < 7 else -BLEND_ONE), BLEND_ONE


def to_bytes(a: Adaptation, version: int = FORMAT) -> bytes:
    """The payload header of an adaptation in a container of this version (7 to FORMAT; 7 and 8 share a
    layout without the colour blend, which only version 9 on can hold; 9 and 10 share one; 11 adds the
    latent shift; 12 the value masks; 13 the palette; 16 the surprise context; 17 the residual feedback;
    18 starts with the split, a.split, by which its per-step sections are sized; 19 deflates 18's layout)."""
    if version >= 19:
        _header_split(version, a.split)
        return _deflate(to_bytes(a, 18))
    split = _header_split(version, a.split)
    if not 7 <= version <= FORMAT:
        raise ValueError(f"adaptation headers are written for container versions 7 to {FORMAT}, not {version}")
    if version < 9 and a.colour is not None and a.colour.any():
        raise ValueError(f"container version {version} cannot hold a colour blend")
    if version < 11 and a.latent:
        raise ValueError(f"container version {version} cannot hold a latent shift")
    if version < 12 and a.values is not None:
        raise ValueError(f"container version {version} cannot hold value masks")
    if version < 13 and a.palette is not None:
        raise ValueError(f"container version {version} cannot hold a palette")
    if a.palette is not None and a.values is not None:
        raise ValueError("an adaptation holds value masks or a palette, not both")
    shifts = b"\0" if a.shifts is None or not a.shifts.any() else (
        bytes([a.shifts.shape[2]]) + a.shifts.astype(np.int8).tobytes())
    spikes = b"\0" if a.spikes is None or not a.spikes.any() else (
        bytes([a.spikes.shape[2]]) + a.spikes[_spike_rows(a.spikes.shape[0])].astype(np.uint8).tobytes())
    second = b"\0" if a.spikes2 is None or not a.spikes2.any() else (
        bytes([len(_SECOND_CLASSES)])
        + a.spikes2[_spike_rows(a.spikes2.shape[0])][..., _SECOND_CLASSES].astype(np.uint8).tobytes())
    if version < 16 and a.surprise is not None and a.surprise.any():
        raise ValueError(f"container version {version} cannot hold a surprise context")
    if version < 17 and a.residual is not None and a.residual.any():
        raise ValueError(f"container version {version} cannot hold a residual feedback")
    held = _steps_held(a)
    if held - {len(pixel_phases.coding_steps(4, split))}:
        raise ValueError(f"phase (0,0) split {split} times (container version {version}) is not coded in the "
                         f"{sorted(held)} steps of this adaptation")
    return ((bytes([split]) if version >= 18 else b"")
            + shifts + spikes + second + _blend_bytes(a.blend) + (_blend_bytes(a.colour) if version >= 9 else b"")
            + (np.int8(a.latent).tobytes() if version >= 11 else b"")
            + (_value_bytes(a.values) if version >= 12 else b"")
            + (palette.to_bytes(a.palette) if version >= 13 else b"")
            + (_surprise_bytes(a) if version >= 16 else b"")
            + (_residual_bytes(a) if version >= 17 else b""))


def _classed_bytes(values: np.ndarray | None, edges, what: str, kinds: tuple[str, str], limit: int,
                   classes_ok: tuple[int, ...]) -> bytes:
    """A section of per (step, channel, class) int8 values with its classes' u8 edges (the surprise context,
    container version 16 on; the residual feedback, 17 on): u8 classes (0 = none), then classes - 1 u8
    edges, then for each step with decoded neighbours channels x classes values in -limit..limit. kinds:
    what the values and the edges are, for the errors."""
    if values is None or not values.any():
        return b"\0"
    k = values.shape[2]
    if k not in classes_ok:
        raise ValueError(f"{what} {kinds[0]} come in {' or '.join(map(str, classes_ok))} classes, not {k}")
    edges = np.asarray(edges if edges is not None else [], dtype=np.int64).reshape(-1)
    if edges.shape != (k - 1,) or np.any(np.diff(edges) < 0) or not np.all((edges >= 0) & (edges <= 255)):
        raise ValueError(f"{what} {kinds[0]} need {k - 1} ordered {kinds[1]} edges in 0..255, not {edges}")
    if np.abs(values).max() > limit:
        raise ValueError(f"{what} {kinds[0]} must lie in -{limit}..{limit}")
    rows = values[_spike_rows(values.shape[0])]
    return bytes([k]) + edges.astype(np.uint8).tobytes() + rows.astype(np.int8).tobytes()


def _classed_section(rest: bytes, what: str, limit: int, classes_ok: tuple[int, ...], phases: int, channels: int,
                     split: int) -> tuple[np.ndarray | None, np.ndarray | None, bytes]:
    """(values (steps, channels, classes), edges (None for one class), the rest) of a _classed_bytes
    section; raises CorruptPayloadError on a malformed one."""
    if not rest:
        raise CorruptPayloadError(f"adaptation header truncated: the {what} section is missing")
    if not rest[0]:
        return None, None, rest[1:]
    k = rest[0]
    rows = _spike_rows(spike_shape(phases, channels, split)[0])
    n = len(rows) * channels * k
    if k not in classes_ok or not rows or len(rest) < k + n:
        raise CorruptPayloadError(f"{what} header declares {k} classes for a {phases}-phase model in a {len(rest)}-"
                                  f"byte remainder (expected {' or '.join(map(str, classes_ok))} classes, 4 phases)")
    edges = np.frombuffer(rest, dtype=np.uint8, count=k - 1, offset=1).astype(np.int64)
    if np.any(np.diff(edges) < 0):
        raise CorruptPayloadError(f"{what} edges {edges.tolist()} are not in order")
    values = np.frombuffer(rest, dtype=np.int8, count=n, offset=k).astype(np.int64)
    if np.abs(values).max() > limit:
        raise CorruptPayloadError(f"{what} value {int(np.abs(values).max())} exceeds {limit}")
    table = np.zeros((spike_shape(phases, channels, split)[0], channels, k), np.int64)
    table[rows] = values.reshape(len(rows), channels, k)
    return table, edges if k > 1 else None, rest[k + n :]


def _surprise_bytes(a: Adaptation) -> bytes:
    """The surprise section (container version 16 on): scale shifts per (step, channel, score class)."""
    return _classed_bytes(a.surprise, a.surprise_edges, "surprise", ("shifts", "score"), surprise.MAX_SHIFT,
                          (surprise.CLASSES,))


def _residual_bytes(a: Adaptation) -> bytes:
    """The residual feedback section (container version 17 on): weights per (step, channel, class of |R|),
    in residual.CLASSES classes or one."""
    return _classed_bytes(a.residual, a.residual_edges, "residual feedback", ("weights", "|R|"),
                          residual.MAX_WEIGHT, (1, residual.CLASSES))


def _value_bytes(values: np.ndarray | None) -> bytes:
    """The value section: u8 flags, bit c set when channel c has a mask, then per flagged channel its 256
    bits (value v: byte v // 8, bit v % 8)."""
    if values is None:
        return b"\0"
    flagged = [c for c in range(len(values)) if not values[c].all()]
    return (bytes([sum(1 << c for c in flagged)])
            + b"".join(np.packbits(values[c], bitorder="little").tobytes() for c in flagged))


def _value_section(rest: bytes, channels: int, n: int = 256) -> tuple[np.ndarray | None, bytes]:
    if not rest:
        raise CorruptPayloadError("adaptation header truncated: the value section is missing")
    flags, rest = rest[0], rest[1:]
    if flags >> channels:
        raise CorruptPayloadError(f"value section flags {flags:#x} name channels a {channels}-channel model lacks")
    if not flags:
        return None, rest
    values = np.ones((channels, n), dtype=bool)
    for c in range(channels):
        if flags >> c & 1:
            if len(rest) < n // 8:
                raise CorruptPayloadError("adaptation header truncated inside a value mask")
            values[c] = np.unpackbits(np.frombuffer(rest[: n // 8], np.uint8), bitorder="little").astype(bool)
            rest = rest[n // 8 :]
            if not values[c].any():
                raise CorruptPayloadError(f"value mask of channel {c} keeps no value")
    return values, rest


def _blend_bytes(table: np.ndarray | None) -> bytes:
    """A blend or colour blend section: u8 classes (0 = none), u8 steps, then steps x channels x classes x
    (weight, shift) int8."""
    if table is None or not table.any():
        return b"\0"
    rows = _blend_rows(table.shape[0], FORMAT)
    first = _first_rows(table.shape[0])
    rows = rows if table[rows[first:]].any() else rows[:first]  # phase (0,0)'s sub-phases alone: fewer bytes
    return bytes([table.shape[2], len(rows)]) + table[rows].astype(np.int8).tobytes()


def _split_steps(steps: int) -> tuple[tuple[int, int], ...]:
    """The coding steps of a 4-phase model coded in this many steps with phase (0,0) split (7: container
    v4-v17; 10: v18 on), or () for any other count (one phase, or phase (0,0) in one step)."""
    return pixel_phases.coding_steps(4, pixel_phases.split_of(steps)) if steps >= 7 and steps % 3 == 1 else ()


def _spike_rows(steps: int) -> list[int]:
    """The spike-capable steps of a model with this many coding steps (container v4 layout)."""
    return pixel_phases.spike_steps(_split_steps(steps))


def _blend_rows(steps: int, version: int) -> list[int]:
    """The steps a blend may hold of a model with this many coding steps: phase (0,0)'s sub-phases with
    decoded neighbours, and from container version 7 on phases 1-3 too."""
    return pixel_phases.blend_steps(_split_steps(steps), version >= 7)


def _first_rows(steps: int) -> int:
    """How many of _blend_rows are phase (0,0)'s sub-phases (3, or 6 with container v18's deeper split)."""
    return len(pixel_phases.blend_steps(_split_steps(steps), later=False))


def _steps_held(a: Adaptation) -> set[int]:
    """The row counts (coding steps) of an adaptation's per-step tables: a single count when they agree."""
    return {t.shape[0] for t in (a.spikes, a.spikes2, a.blend, a.colour, a.surprise, a.residual) if t is not None}


def _deflate(body: bytes) -> bytes:
    """body as one raw deflate stream (no zlib wrapper: the container's CRC already guards the bytes)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return packer.compress(body) + packer.flush()


def _inflate(payload: bytes) -> tuple[bytes, bytes]:
    """(the header a raw deflate stream at the start of payload holds, the bytes after the stream), reading at
    most HEADER_LIMIT inflated bytes, so a hostile stream costs bounded memory and time."""
    unpacker = zlib.decompressobj(-15)
    try:
        body = unpacker.decompress(payload, HEADER_LIMIT + 1)
    except zlib.error as exc:
        raise CorruptPayloadError(f"adaptation header does not inflate: {exc}") from None
    if len(body) > HEADER_LIMIT:
        raise CorruptPayloadError(f"adaptation header inflates to more than {HEADER_LIMIT} bytes")
    if not unpacker.eof:
        raise CorruptPayloadError("adaptation header truncated: its deflate stream does not end")
    return body, unpacker.unused_data


def _header_split(version: int, split: int) -> int:
    """The phase (0,0) split a header of this version sizes its per-step sections by: the version's own
    before 18; from 18 on the adaptation's, which must be 1 to the version's deepest."""
    if version < 18:
        return split_for(version)
    if not 1 <= split <= split_for(version):
        raise ValueError(f"container version {version} splits phase (0,0) 1 to {split_for(version)} times, "
                         f"not {split}")
    return split


def spike_shape(phases: int, channels: int, split: int = pixel_phases.SPLIT) -> tuple[int, int, int]:
    """Shape of Adaptation.spikes for a model coded with phase (0,0) split so (phases.coding_steps; container
    v4-v17: 1, v18 on: 2)."""
    return len(pixel_phases.coding_steps(phases, split)), channels, SPIKE_CLASSES


def blend_shape(phases: int, channels: int, split: int = pixel_phases.SPLIT) -> tuple[int, int, int, int]:
    """Shape of Adaptation.blend for a model."""
    return len(pixel_phases.coding_steps(phases, split)), channels, BLEND_CLASSES, 2


def colour_shape(phases: int, channels: int, split: int = pixel_phases.SPLIT) -> tuple[int, int, int, int]:
    """Shape of Adaptation.colour for a model: the blend's steps, channels 1.. (each against the one before)."""
    return len(pixel_phases.coding_steps(phases, split)), channels - 1, COLOUR_CLASSES, 2


def _section(rest: bytes, what: str, classes_ok: int, rows: list[int], channels: int, per_class: int, dtype,
             phases: int) -> tuple[np.ndarray | None, bytes]:
    """One optional header section: u8 class count (0 = absent), then rows x channels x classes x per_class
    values. Returns (values (rows, channels, classes, per_class) or None, the rest)."""
    if not rest:
        raise CorruptPayloadError(f"learned payload ends before its {what} header")
    classes = rest[0]
    if not classes:
        return None, rest[1:]
    n = len(rows) * channels * classes * per_class
    if not rows or classes != classes_ok or len(rest) < 1 + n:
        raise CorruptPayloadError(f"{what} header declares {classes} classes for a {phases}-phase model in a "
                                  f"{len(rest)}-byte remainder (expected {classes_ok} classes, 4 phases)")
    values = np.frombuffer(rest, dtype=dtype, count=n, offset=1).astype(np.int64)
    return values.reshape(len(rows), channels, classes, per_class), rest[1 + n :]


def from_bytes(payload: bytes, phases: int, channels: int, version: int = FORMAT) -> tuple[Adaptation, bytes]:
    """(adaptation, the rest of the payload) of a learned payload of this container version (3 on: scale
    shifts; 4 on: spikes; 5 on: second spikes; 6 on: the blend of phase (0,0)'s sub-phases; 7 on: and of
    the later phases; 18 on: first, phase (0,0)'s split, which sizes the per-step sections); the
    adaptation's split is the one to code with; 19 on: all that deflated). Raises CorruptPayloadError on a
    malformed header."""
    if version >= 19:
        body, rest = _inflate(payload)
        adaptation, inside = from_bytes(body, phases, channels, 18)
        if inside:
            raise CorruptPayloadError(f"adaptation header is corrupt: {len(inside)} bytes follow it inside its "
                                      "deflate stream")
        return adaptation, rest
    split = split_for(version)
    if version >= 18:
        if not payload:
            raise CorruptPayloadError("learned payload is empty: its phase (0,0) split is missing")
        if not 1 <= payload[0] <= split:
            raise CorruptPayloadError(f"learned payload is corrupt: phase (0,0) split {payload[0]} is not 1 to {split}")
        split, payload = payload[0], payload[1:]
    if not payload:
        raise CorruptPayloadError("learned payload is empty: no scale adaptation header")
    bands, shifts = payload[0], None
    n = phases * channels * bands
    if bands > MAX_BANDS or len(payload) < 1 + n:
        raise CorruptPayloadError(f"scale adaptation header declares {bands} bands ({n} shifts) in a "
                                  f"{len(payload)}-byte payload")
    if bands:
        shifts = np.frombuffer(payload, dtype=np.int8, count=n, offset=1).astype(np.int64)
        if np.abs(shifts).max() > MAX_SHIFT:
            raise CorruptPayloadError(f"scale adaptation shift {int(np.abs(shifts).max())} exceeds {MAX_SHIFT}")
        shifts = shifts.reshape(phases, channels, bands)
    rest = payload[1 + n :]
    steps = spike_shape(phases, channels, split)[0]
    spikes = second = blend = None
    if version >= 4:
        rows = _spike_rows(steps)
        values, rest = _section(rest, "spike", SPIKE_CLASSES, rows, channels, 1, np.uint8, phases)
        if values is not None:
            spikes = np.zeros(spike_shape(phases, channels, split), np.int64)
            spikes[rows] = values[..., 0]
    if version >= 5:
        values, rest = _section(rest, "second-spike", len(_SECOND_CLASSES), rows, channels, 1, np.uint8, phases)
        if values is not None:
            second = np.zeros(spike_shape(phases, channels, split), np.int64)
            second[np.ix_(rows, range(channels), _SECOND_CLASSES)] = values[..., 0]
            if ((np.zeros_like(second) if spikes is None else spikes) + second).max() > 255:
                raise CorruptPayloadError("second-spike levels add up with their first spikes' to more than 255")
    if version >= 6:
        blend, rest = _blend_section(rest, "blend", BLEND_CLASSES, steps, channels, version, _blend_weights(version),
                                     blend_shape(phases, channels, split), phases)
    colour = None
    if version >= 9:
        colour, rest = _blend_section(rest, "colour blend", COLOUR_CLASSES, steps if channels > 1 else 0,
                                      channels - 1, version, COLOUR_WEIGHTS, colour_shape(phases, channels, split),
                                      phases)
    latent = 0
    if version >= 11:
        if not rest:
            raise CorruptPayloadError("adaptation header truncated: the latent shift is missing")
        latent, rest = int(np.frombuffer(rest[:1], dtype=np.int8)[0]), rest[1:]
        if abs(latent) > MAX_LATENT_SHIFT:
            raise CorruptPayloadError(f"latent shift {latent} exceeds {MAX_LATENT_SHIFT}")
    values = colours = None
    if version >= 12:
        values, rest = _value_section(rest, channels)
    if version >= 13:
        colours, rest = palette.from_bytes(rest, channels)
        if colours is not None and values is not None:
            raise CorruptPayloadError("adaptation header holds both value masks and a palette")
    shocks = edges = None
    if version >= 16:
        shocks, edges, rest = _classed_section(rest, "surprise", surprise.MAX_SHIFT, (surprise.CLASSES,), phases,
                                               channels, split)
    weights = weight_edges = None
    if version >= 17:
        weights, weight_edges, rest = _classed_section(rest, "residual feedback", residual.MAX_WEIGHT,
                                                       (1, residual.CLASSES), phases, channels, split)
    return (Adaptation(shifts, spikes, second, blend, colour, latent, values, colours, shocks, edges, weights,
                       weight_edges, split), rest)


def _blend_section(rest: bytes, what: str, classes: int, steps: int, channels: int, version: int,
                   weights: tuple[int, int], shape: tuple[int, ...], phases: int) -> tuple[np.ndarray | None, bytes]:
    """A blend (version 6 on) or colour blend (version 9 on) section: (table of this shape or None, the rest)."""
    rows = _blend_rows(steps, version)
    if version >= 7 and len(rest) > 1 and rest[0]:  # u8 classes, u8 steps: the sub-phases or all
        if rest[1] not in (_first_rows(steps), len(rows)) or not rows:
            raise CorruptPayloadError(f"{what} header declares {rest[1]} steps for a {phases}-phase model")
        rows, rest = rows[: rest[1]], rest[:1] + rest[2:]
    values, rest = _section(rest, what, classes, rows, channels, 2, np.int8, phases)
    if values is None:
        return None, rest
    lo, hi = weights
    if values[..., 0].min() < lo or values[..., 0].max() > hi:
        raise CorruptPayloadError(f"{what} weight outside {lo}..{hi}")
    if np.abs(values[..., 1]).max() > MAX_BLEND_SHIFT:
        raise CorruptPayloadError(f"{what} scale shift exceeds {MAX_BLEND_SHIFT}")
    table = np.zeros(shape, np.int64)
    table[rows] = values
    return table, rest


@dataclass(frozen=True)
class CodingMaps:
    """What the coder applies for a batch of blocks: each block's scale level map (B, phases, channels,
    levels), spike and second-spike levels (B, coding steps, channels, classes), blends (B, coding steps,
    channels, range classes, 2), colour blends (B, coding steps, channels - 1, colour classes, 2), latent
    shifts (B,) and value cells (B, channels, 3, 256) (rans.value_cells), each None when no block has one;
    and per block its palette's cells (palette.PaletteCells) or None, or None when no block has a palette."""

    levels: torch.Tensor | None
    spikes: torch.Tensor | None
    spikes2: torch.Tensor | None = None
    blend: torch.Tensor | None = None
    colour: torch.Tensor | None = None
    latent: torch.Tensor | None = None  # (B,) latent shifts
    cells: torch.Tensor | None = None
    palettes: tuple | None = None  # (B,) palette.PaletteCells or None
    surprise: torch.Tensor | None = None  # (B, coding steps, channels, surprise.CLASSES) scale shifts
    surprise_edges: torch.Tensor | None = None  # (B, surprise.CLASSES - 1) score edges; None: no surprise context
    residual: torch.Tensor | None = None  # (B, coding steps, channels, residual.CLASSES) weights; None: none
    residual_edges: torch.Tensor | None = None  # (B, residual.CLASSES - 1) |R| edges

    def _parts(self):
        return (self.levels, self.spikes, self.spikes2, self.blend, self.colour, self.latent, self.cells,
                self.surprise, self.surprise_edges, self.residual, self.residual_edges)

    def _with(self, tensors, palettes) -> CodingMaps:
        *head, shifts, edges, weights, weight_edges = tensors
        return CodingMaps(*head, palettes, shifts, edges, weights, weight_edges)

    def __getitem__(self, idx) -> CodingMaps:
        palettes = None
        if self.palettes is not None:
            picked = np.arange(len(self.palettes))[idx]
            palettes = tuple(self.palettes[k] for k in np.atleast_1d(picked))
        return self._with([None if t is None else t[idx] for t in self._parts()], palettes)

    def repeat(self, n: int) -> CodingMaps:
        """The maps of one image for n of its blocks."""
        return self._with([None if t is None else t[:1].expand(n, *t.shape[1:]) for t in self._parts()],
                          None if self.palettes is None else self.palettes[:1] * n)


def cells_of(maps: CodingMaps | None, block: int, channel: int, earlier=None):
    """One block's value cells of one channel for AnsCoder.push / pop, or None (each value its own cell).
    earlier: a callable giving the block's pixels' channels before this one, coded already (flat arrays),
    which a palette's cells depend on."""
    if maps is None:
        return None
    if maps.palettes is not None and maps.palettes[block] is not None:
        return maps.palettes[block].cells(channel, earlier() if channel else [])
    if maps.cells is None:
        return None
    return np.ascontiguousarray(maps.cells[block, channel].numpy())


def value_cells(values: np.ndarray | None, channels: int) -> np.ndarray:
    """(channels, 3, 256) cells of an adaptation's value masks (all values kept where None)."""
    from bitswap_core.coding.rans import value_cells as cells

    masks = np.ones((channels, 256), dtype=bool) if values is None else values
    return np.stack([cells(m) for m in masks])


def latent_shift(maps: CodingMaps | None) -> torch.Tensor | None:
    """The blocks' latent shifts (B,) for BlockCoder._latent_codes, or None for none."""
    return None if maps is None else maps.latent


def coding_maps(adaptations: Sequence[Adaptation] | None, cfg, steps: int | None = None) -> CodingMaps | None:
    """The batch's CodingMaps, or None when every image keeps the model as is. steps: how many coding steps
    the coder has (the adaptations' per-step tables must have as many rows); None: as the tables have."""
    if adaptations is None:
        return None
    held = set().union(*map(_steps_held, adaptations))
    if len(held) > 1 or (steps is not None and held - {steps}):
        raise ValueError(f"adaptations for {sorted(held)} coding steps cannot drive a coder of {steps} steps")
    steps = held.pop() if held else steps or len(pixel_phases.coding_steps(cfg.pixel_phases, pixel_phases.SPLIT))
    split = pixel_phases.split_of(steps) if cfg.pixel_phases == 4 else 0
    levels = level_maps([a.shifts for a in adaptations], cfg.pixel_phases, cfg.channels, cfg.x_scales)

    def stacked(parts, shape):
        if all(t is None for t in parts):
            return None
        out = torch.zeros((len(parts), *shape), dtype=torch.int64)
        for i, t in enumerate(parts):
            if t is not None:
                out[i] = torch.from_numpy(t)
        return out

    spiked, blended = (spike_shape(cfg.pixel_phases, cfg.channels, split),
                       blend_shape(cfg.pixel_phases, cfg.channels, split))
    maps = CodingMaps(levels, stacked([a.spikes for a in adaptations], spiked),
                      stacked([a.spikes2 for a in adaptations], spiked),
                      stacked([a.blend for a in adaptations], blended),
                      stacked([a.colour for a in adaptations], colour_shape(cfg.pixel_phases, cfg.channels, split)),
                      torch.tensor([a.latent for a in adaptations], dtype=torch.int64)
                      if any(a.latent for a in adaptations) else None,
                      torch.from_numpy(np.stack([value_cells(a.values, cfg.channels) for a in adaptations]))
                      if any(a.values is not None for a in adaptations) else None,
                      tuple(None if a.palette is None else palette_cells(a.palette) for a in adaptations)
                      if any(a.palette is not None for a in adaptations) else None,
                      *_surprise_maps(adaptations, spiked[0], cfg.channels),
                      *_residual_maps(adaptations, spiked[0], cfg.channels))
    return None if all(t is None for t in maps._parts()) and maps.palettes is None else maps


def _surprise_maps(adaptations: Sequence[Adaptation], steps: int, channels: int):
    """(shifts (B, steps, channels, CLASSES), edges (B, CLASSES - 1)) of the images that have a surprise
    context, or (None, None); an image without one gets edges no score reaches and zero shifts."""
    if all(a.surprise_edges is None for a in adaptations):
        return None, None
    shifts = torch.zeros((len(adaptations), steps, channels, surprise.CLASSES), dtype=torch.int64)
    edges = torch.full((len(adaptations), surprise.CLASSES - 1), surprise.MAX_SCORE + 1, dtype=torch.int64)
    for i, a in enumerate(adaptations):
        if a.surprise_edges is not None:
            edges[i] = torch.as_tensor(np.asarray(a.surprise_edges, dtype=np.int64))
            if a.surprise is not None:
                shifts[i] = torch.from_numpy(a.surprise.astype(np.int64))
    return shifts, edges


def _residual_maps(adaptations: Sequence[Adaptation], steps: int, channels: int):
    """(weights (B, steps, channels, residual.CLASSES), edges (B, CLASSES - 1)) of the images that have a
    residual feedback, or (None, None); an image without one gets zero weights (its residuals are tracked,
    its means never move)."""
    if all(a.residual is None for a in adaptations):
        return None, None
    weights = torch.zeros((len(adaptations), steps, channels, residual.CLASSES), dtype=torch.int64)
    edges = torch.zeros((len(adaptations), residual.CLASSES - 1), dtype=torch.int64)
    for i, a in enumerate(adaptations):
        if a.residual is not None:  # one class: its weights in every class
            weights[i] = torch.from_numpy(np.broadcast_to(a.residual, weights.shape[1:]).astype(np.int64))
            if a.residual_edges is not None and len(a.residual_edges):
                edges[i] = torch.as_tensor(np.asarray(a.residual_edges, dtype=np.int64))
    return weights, edges


_PALETTE_CACHE: dict[bytes, palette.PaletteCells] = {}


def palette_cells(colours: np.ndarray) -> palette.PaletteCells:
    """The coder's cells of a palette, built once per palette (an image's batches share them)."""
    key = colours.tobytes() + bytes([colours.shape[1]])
    if key not in _PALETTE_CACHE:
        if len(_PALETTE_CACHE) >= 8:
            _PALETTE_CACHE.pop(next(iter(_PALETTE_CACHE)))
        _PALETTE_CACHE[key] = palette.PaletteCells(colours)
    return _PALETTE_CACHE[key]


def spike_levels(spikes: np.ndarray | None, cls: np.ndarray) -> np.ndarray | None:
    """Per-pixel spike level of one coding step and channel: spikes (B, classes) levels, cls (B, h, w) classes
    (-1 = no spike); None when no pixel gets a spike. numpy: these are a few hundred pixels per block."""
    if spikes is None or not spikes.any():
        return None
    lv = spikes[np.arange(len(cls))[:, None, None], np.maximum(cls, 0)]
    return np.where(cls >= 0, lv, 0)


def blended(mean: np.ndarray, scale: np.ndarray, pred: np.ndarray, cls: np.ndarray, blend: np.ndarray | None,
            levels: int, mean_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) levels of one blended step and channel: mean, scale, pred, cls (B, h, w) (pred in the
    mean's 1/mean_frac units, cls the range class), blend (B, classes, 2) (weight w of 8, scale shift):
    mean' = floor((w pred + (8 - w) mean) / 8) clamped to [0, mean_max] (a negative weight can leave it),
    scale' = scale + shift clamped to the grid. Integers only."""
    if blend is None or not blend.any():
        return mean, scale
    per = blend[np.arange(len(cls))[:, None, None], cls]  # (B, h, w, 2)
    return _blend_each(mean, scale, pred, per[..., 0], per[..., 1], levels, mean_max)


def _blend_each(mean, scale, pred, w, shift, levels: int, mean_max: int) -> tuple[np.ndarray, np.ndarray]:
    """The blend's arithmetic, elementwise for per-pixel weights and shifts: the one formula the coder
    (blended) and the encoder's fit (_fit_blend, _corrected) share."""
    mixed = np.clip((w * pred + (BLEND_ONE - w) * mean) // BLEND_ONE, 0, mean_max)
    return mixed, np.clip(scale + shift, 0, levels - 1)


def level_maps(shifts: Sequence[np.ndarray | None], phases: int, channels: int, levels: int
               ) -> torch.Tensor | None:
    """(images, phases, channels, levels) int64: each scale level's adapted level; None if all are None."""
    if all(s is None for s in shifts):
        return None
    base = np.arange(levels, dtype=np.int64)
    out = np.broadcast_to(base, (len(shifts), phases, channels, levels)).copy()
    for i, s in enumerate(shifts):
        if s is not None:
            band = base * s.shape[2] // levels
            out[i] = np.clip(base + s[:, :, band], 0, levels - 1)
    return torch.from_numpy(out)


def apply(scale: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
    """scale: (B, h, w) levels of one phase and channel; maps: (B, levels) from level_maps, or None."""
    if maps is None:
        return scale
    b = scale.shape[0]
    return torch.gather(maps, 1, scale.reshape(b, -1)).reshape(scale.shape)


def sample_size(blocks: int, sample_blocks: int | None = None, side: int = BLOCK, effort: int = 2) -> int:
    """How many of an image's blocks (of this side) the encoder samples: sample_blocks if given (at most all
    of them), else, counted in 32x32 blocks, one in SAMPLE_SHARE, at least SAMPLE_BLOCKS and at most
    MAX_SAMPLE_BLOCKS. Why: the header's hundreds of fitted values need more pixels than 16 blocks of a large
    image give (48 of a 768 x 512 photo's 384 blocks code it 0.5% smaller than 16, for 13% more encode time;
    128 only 0.05% more, docs/BENCHMARKS.md), while a small image's whole fit must stay cheap. Larger blocks
    are sampled twice those pixels: fewer, larger blocks describe an image less evenly (8 of a 256 x 256
    image's 16 blocks of 64x64 fit it 0.2% better than the pixels of 16 blocks of 32x32, all 16 another 0.06%
    for 1.8 times the fit's time, docs/BENCHMARKS.md, "Block side"). Effort 1 (the fast fit, choose) samples
    half of that rule's blocks. Depends on the image size and effort alone, so the bytes do too."""
    area = (side // BLOCK) ** 2
    if sample_blocks is None:
        sample_blocks = min(MAX_SAMPLE_BLOCKS, max(SAMPLE_BLOCKS, -(-blocks * area // SAMPLE_SHARE)))
        if area > 1:
            sample_blocks = -(-2 * sample_blocks // area)
        if effort < 2:
            sample_blocks = -(-sample_blocks // 2)
    return max(1, min(blocks, sample_blocks, _BATCH_BLOCKS // area))


def _sample(images: Sequence[np.ndarray], sample_blocks: int | None, side: int = BLOCK, effort: int = 2):
    """Per image: (its block count, the picked blocks, their valid sizes, (all its blocks, their valid sizes,
    blocks per row, the picks): what BlockCoder.borders takes), sample_size(...) blocks evenly spread."""
    for im in images:
        blocks, valid = to_blocks(im, side), valid_sizes(im.shape[0], im.shape[1], side)
        n = sample_size(len(blocks), sample_blocks, side, effort)
        pick = np.unique(np.linspace(0, len(blocks) - 1, n).round().astype(np.int64))
        yield len(blocks), blocks[pick], valid[pick], (blocks, valid, grid(*im.shape[:2], side)[1], pick)


def _groups(sizes: Sequence[int], limit: int):
    """Consecutive index groups whose sizes add up to at most limit (a larger item goes alone)."""
    group, total = [], 0
    for j, size in enumerate(sizes):
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(j)
        total += size
    if group:
        yield group


def _spike_costs(bits: np.ndarray, hit: np.ndarray, hit2: np.ndarray, l1: np.ndarray, l2: np.ndarray
                 ) -> np.ndarray:
    """Estimated bits of pixels costing `bits` under the model, hit / hit2 = equal to their spike / second
    spike value, for each candidate pair of levels (l1[i], l2[i]); plus one virtual miss, so that a few
    sampled hits never buy full confidence."""
    w1, w2 = l1 / 256.0, l2 / 256.0
    keep = 1 - w1 - w2
    cost = bits[~(hit | hit2)].sum() - (np.count_nonzero(~(hit | hit2)) + 1) * np.log2(keep)
    for h, w in ((hit, w1), (hit2, w2)):
        cost = cost - np.log2(keep[None, :] * 2.0 ** -bits[h][:, None] + w[None, :]).sum(0)
    return cost


def _fit_spikes(bits: np.ndarray, hit: np.ndarray, hit2: np.ndarray | None) -> tuple[int, int, int, float, float]:
    """(level, the level with a second spike, second level, estimated saving of one spike, further saving
    of the second) for one (step, channel, class): the first level over every candidate alone, then the
    second given it and the first again given the second (coordinate descent, smallest levels on ties)."""
    zero = np.zeros(len(_SPIKE_LEVELS), np.int64)
    none = np.zeros_like(hit)
    est = _spike_costs(bits, hit, none, _SPIKE_LEVELS, zero)
    l1 = int(_SPIKE_LEVELS[est.argmin()])
    if hit2 is None or not hit2.any():
        return l1, l1, 0, float(est[0] - est.min()), 0.0
    cand = _SPIKE_LEVELS[_SPIKE_LEVELS + l1 <= 255]
    est2 = _spike_costs(bits, hit, hit2, np.full(len(cand), l1), cand)
    l2 = int(cand[est2.argmin()])
    cand = _SPIKE_LEVELS[_SPIKE_LEVELS + l2 <= 255]
    est3 = _spike_costs(bits, hit, hit2, cand, np.full(len(cand), l2))
    return l1, int(cand[est3.argmin()]), l2, float(est[0] - est.min()), float(est.min() - est3.min())


def _corrected(p: dict, shifts, phase: int, c: int, blend, cfg, colour=None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale level) of sampled pixels p (choose's parts) after the scale shifts and, if given, the
    blend (classes, 2) and the colour blend (classes, 2) of their step and channel: what the coder will use
    (bitsback._pixel_codes)."""
    mf, levels = cfg.mean_frac, cfg.x_scales
    level, mean = p["rows"] // mf, p["bases"] * mf + p["rows"] % mf
    if shifts is not None:
        level = np.clip(level + shifts[phase, c, level * BANDS // levels], 0, levels - 1)
    if blend is not None and "pred" in p:
        per = blend[p["bcls"]]
        mean, level = _blend_each(mean, level, p["pred"], per[:, 0], per[:, 1], levels, 255 * mf)
    if colour is not None and "cpred" in p:
        per = colour[p["ccls"]]
        mean, level = _blend_each(mean, level, colour_prediction(p["prev"], p["cpred"], mf), per[:, 0], per[:, 1],
                                  levels, 255 * mf)
    return mean, level


def colour_prediction(prev: np.ndarray, diff: np.ndarray, mean_frac: int) -> np.ndarray:
    """The colour blend's target in 1/mean_frac units: the pixel's previous channel plus the neighbours'
    mean difference (phases.colour_context); the blend clamps the result to the pixel range."""
    return prev * mean_frac + diff


_BLEND_SHIFTS = np.array(sorted(range(-MAX_BLEND_SHIFT, MAX_BLEND_SHIFT + 1), key=lambda s: (abs(s), s)))


def _fit_blend(vals, mean, level, pred, cls, table, levels: int, mf: int, weights: tuple[int, int],
               classes: int = BLEND_CLASSES, cells: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(blend (classes, 2), estimated saving in bits) of one blended step and channel from its sampled
    pixels (flat arrays: values, mean and scale levels after the scale shifts, neighbour prediction, range
    class): per class the weight of the prediction (in weights = (lo, hi)) with the scale unshifted, then the
    scale shift given the weights, then the weights again (coordinate descent; the smallest change on ties).
    cells: the channel's value cells, or None."""
    from bitswap_core.coding.grid_costs import blend_grid

    cands_w = np.array(sorted(range(weights[0], weights[1] + 1), key=lambda v: (abs(v), v)), dtype=np.int64)
    w, shift = np.zeros(classes, np.int64), np.zeros(classes, np.int64)

    def grid(vary, cands, only=None):  # (candidates, classes): each class at each candidate, the other part at its own
        return blend_grid(vals, mean, level, pred, cls, w, shift, vary, cands, table, mf, levels, BLEND_ONE, cells,
                          only)

    if cands_w[0] != 0:
        raise ValueError(f"blend weights {weights} must hold 0, the model as is")
    first = grid("weight", cands_w)
    base = first[0].sum()  # (weight 0, shift 0: the pixels as they are)
    w[:] = cands_w[np.argmin(first, axis=0)]
    shift[:] = _BLEND_SHIFTS[np.argmin(grid("shift", _BLEND_SHIFTS), axis=0)]
    # the weights again given the shifts: the classes are priced apart, so a class whose shift stayed 0 has
    # its first column again and only the moved ones are priced anew
    moved, costs = shift != 0, first
    if moved.any():
        costs = np.where(moved[None], grid("weight", cands_w, moved), first)
    pick = np.argmin(costs, axis=0)
    w[:] = cands_w[pick]
    return np.stack([w, shift], axis=1), float(base - np.take_along_axis(costs, pick[None], 0)[0].sum())


def _with_spikes(parts: dict, j: int, shifts, mixing, spiky: list[int], blendy: list[int], spikes: int, cfg,
                 table, scale_up: float, colours=None, split: int = pixel_phases.SPLIT) -> tuple[Adaptation, float]:
    """(image j's adaptation with these shifts, blend and colour blend and its spikes fitted on top, its
    estimated bits: the pixels of the steps in blendy, less the spikes' saving, plus the whole header).
    Each spike part is kept only where its estimated saving pays for its header twice. The pixels are
    coded with their part's cells (p["cells"]: value or palette cells, or None)."""
    from bitswap_core.coding.rans import cost_bits_each

    ch, mf = cfg.channels, cfg.mean_frac
    steps = pixel_phases.coding_steps(cfg.pixel_phases, split)
    one, first, second = (np.zeros(spike_shape(cfg.pixel_phases, ch, split), dtype=np.int64) for _ in range(3))
    saving, saving2, base = 0.0, 0.0, 0.0
    for s in sorted(set(spiky) | set(blendy)):
        for c in range(ch):
            if (j, s, c) not in parts:  # an image too small to have pixels in this step
                continue
            p = parts[(j, s, c)]
            mean, level = _corrected(p, shifts, steps[s][0], c, None if mixing is None else mixing[s, c], cfg,
                                     None if colours is None or c == 0 else colours[s, c - 1])
            bits = cost_bits_each(p["vals"], level * mf + mean % mf, mean // mf, table, None, p["cells"])
            if s in blendy:
                base += bits.sum() * scale_up
            if s not in spiky:
                continue
            for q in range(SPIKE_CLASSES):
                sel = p["cls"] == q
                if sel.any():
                    hit2 = p["vals"][sel] == p["value2"][sel] if spikes == 2 and q in _SECOND_CLASSES else None
                    one[s, c, q], first[s, c, q], second[s, c, q], gain, gain2 = _fit_spikes(
                        bits[sel], p["vals"][sel] == p["value"][sel], hit2)
                    saving, saving2 = saving + gain * scale_up, saving2 + gain2 * scale_up
    keep = saving > 2 * 8 * (1 + len(spiky) * ch * SPIKE_CLASSES) and one.any()
    keep2 = keep and saving2 > 2 * 8 * (1 + len(spiky) * ch * len(_SECOND_CLASSES)) and second.any()
    tables = split or 1  # (a coder without sub-phases has no per-step tables: any split prices its header)
    if keep2:
        a, saved = Adaptation(shifts, first if first.any() else None, second, mixing, colours, split=tables), \
            saving + saving2
    else:
        a, saved = (Adaptation(shifts, one if keep else None, None, mixing, colours, split=tables),
                    saving if keep else 0.0)
    return replace(a, split=split), base - saved + 8 * len(to_bytes(a, PRICED))


def _fit_values(parts: dict, j: int, image: np.ndarray, table, scale_up: float, channels: int
                ) -> tuple[np.ndarray | None, list]:
    """(value masks or None, cells per channel or None) of image j: a channel gets its mask where the
    sampled pixels, coded with the model as is, save more than the mask's 32 bytes twice."""
    from bitswap_core.coding.rans import cost_bits_each, value_cells

    values = np.ones((channels, 256), dtype=bool)
    cells: list = [None] * channels
    for c in range(channels):
        mask = np.bincount(image[..., c].reshape(-1), minlength=256) > 0
        if mask.all():
            continue
        cand = value_cells(mask)
        saving = 0.0
        for (jj, _, cc), p in parts.items():
            if jj == j and cc == c:
                saving += (cost_bits_each(p["vals"], p["rows"], p["bases"], table).sum()
                           - cost_bits_each(p["vals"], p["rows"], p["bases"], table, None, cand).sum())
        if saving * scale_up > 2 * 8 * 32:
            values[c], cells[c] = mask, cand
    return (None if values.all() else values), cells


def _fit_palette(parts: dict, j: int, image: np.ndarray, table, scale_up: float, masks: np.ndarray | None,
                 cells: list) -> tuple[np.ndarray | None, dict]:
    """(image j's palette (coding/palette.py) or None, its cells per (step, channel) of the sampled pixels):
    kept, in place of its value masks, where those pixels coded with its cells save more than twice what
    its header section adds."""
    from bitswap_core.coding.rans import cost_bits_each

    if image.shape[-1] < 2:  # one channel: the value mask is the palette
        return None, {}
    colours = palette.colours(image)
    if colours is None:
        return None, {}
    pc, celled, saving = palette_cells(colours), {}, 0.0
    for (jj, s, c), p in parts.items():
        if jj == j:
            celled[(s, c)] = pc.cells(c, [parts[(j, s, k)]["vals"] for k in range(c)])
            saving += (cost_bits_each(p["vals"], p["rows"], p["bases"], table, None, cells[c]).sum()
                       - cost_bits_each(p["vals"], p["rows"], p["bases"], table, None, celled[(s, c)]).sum())
    added = len(palette.to_bytes(colours)) - len(_value_bytes(masks))
    return (colours, celled) if saving * scale_up > 2 * 8 * added else (None, {})


def choose(block_coder, images: Sequence[np.ndarray], sample_blocks: int | None = None, seed: int = 0,
           spikes: int = 2, blend: int = 2, colour: int = 1, latent: int = 1, values: int = 1, paletted: int = 1,
           shock: int = 1, residuals: int = 1, effort: int = 2) -> list[Adaptation]:
    """The adaptation of each (H, W, C) uint8 image, from the pixel costs of sample_size(its blocks, sample_blocks)
    of its blocks of block_coder's side, or of 64x64 ones above that (FIT_SIDE): first the scale shifts (every
    candidate shift), then, given them, the blend (_fit_blend; blend = 2: every step with decoded neighbours,
    weights -8..8; 1: phase (0,0)'s sub-phases only, weights 0..8, as container v6 wrote; 0: none), then, given
    them, the colour blend (colour = 1: the same steps' G and B, weights 0..8; 0: none, as container v8 wrote),
    then, given all, the spike levels (spikes = 2: both spikes, 1: the first only, 0: none; _fit_spikes); blend,
    colour blend and spikes on 4-phase models only. One latent sample per block from a sampler seeded alike for
    every image, so the choice, and the bytes, depend on the image alone, not on the batch; the networks see the
    samples of several images at once. A part is left out (None) where its estimated saving does not pay for its
    header twice. Before all that (values = 1; 0: none, as container v11 wrote) the value masks (_fit_values), then
    (paletted = 1; 0: none, as container v12 wrote) the palette in their place where it pays (_fit_palette); every
    later fit codes with them. Then (residuals = 1; 0: none, as container v16 wrote), given all that, the
    residual feedback, and (shock = 1; 0: none, as container v15 wrote), given all that too, the surprise
    context (_fit_feedback). Last (latent = 1; 0: none, as container v10 wrote), given all that, the latent shift
    (fit_latent). effort = 1 is the fast fit: half the sample (sample_size) and no latent shift, for an
    encoder 1.4x as fast on the validation set for 0.32% more bytes (docs/BENCHMARKS.md, "Effort"); 2 is everything."""
    from bitswap_core.coding.grid_costs import shift_grid

    block_coder = block_coder.at_side(min(block_coder.side, FIT_SIDE))
    cfg = block_coder.cfg
    ph, ch, levels, mf = cfg.pixel_phases, cfg.channels, cfg.x_scales, cfg.mean_frac
    steps = block_coder.steps
    if spikes not in (0, 1, 2):
        raise ValueError(f"spikes must be 0, 1 or 2, not {spikes!r}")
    check_effort(effort)
    split = block_coder.split if _split_steps(len(steps)) else 0  # spikes, blends, feedback: phase (0,0) split
    spiky = pixel_phases.spike_steps(steps) if spikes and split else []
    if blend not in (0, 1, 2):
        raise ValueError(f"blend must be 0, 1 or 2, not {blend!r}")
    blendy = pixel_phases.blend_steps(steps, blend == 2) if blend and split else []
    if colour not in (0, 1):
        raise ValueError(f"colour must be 0 or 1, not {colour!r}")
    colourful = pixel_phases.blend_steps(steps) if colour and split and ch > 1 else []
    scored = sorted(set(blendy) | set(colourful))  # the steps whose pixels the estimates compare
    weights = _blend_weights(7 if blend == 2 else 6)
    samples = list(_sample(images, sample_blocks, block_coder.side, effort))
    batch = _BATCH_BLOCKS // (block_coder.side // BLOCK) ** 2
    # cost[image, phase, channel, band, candidate] summed over the image's picked blocks
    cost = np.zeros((len(images), ph, ch, BANDS, len(_CANDIDATES)))
    masks, kept = [None] * len(images), [None] * len(images)
    out: list[Adaptation] = [NONE] * len(images)
    # group by group (each image's blocks are in one group, and fitted the same in any batch): the networks'
    # outputs that the feedback fit reads again are held for one group at a time, not for the whole batch
    for group in _groups([len(picked) for _, picked, _, _ in samples], batch):
        parts: dict[tuple[int, int, int], list] = {}
        x = torch.from_numpy(np.concatenate([samples[j][1] for j in group]).astype(np.int64))
        valid = np.concatenate([samples[j][2] for j in group])
        owner = np.concatenate([np.full(len(samples[j][1]), j) for j in group])
        z1 = draw_z1(block_coder, x, [len(samples[j][1]) for j in group], seed)
        border = block_coder.borders([samples[j][3] for j in group])
        nets: dict = {}  # the networks' outputs on these blocks, which the feedback fit reads again
        drawn = [(x, valid, owner, z1, border, nets)]  # what the feedback fit codes again
        xc, known = block_coder._bordered(x, valid, border)
        agreed = {s: [t.numpy() for t in pixel_phases.step_spikes(steps[s], xc, known)] for s in spiky}
        context = {s: pixel_phases.step_context(steps[s], xc, known, mf) for s in blendy}
        colours = {s: pixel_phases.colour_context(steps[s], xc, known, mf) for s in colourful}
        xn = x.numpy()
        for sym in block_coder.pixel_symbols(x, z1, valid, border=border, nets=nets):
            i, s, c = sym.image, sym.step, sym.channel
            item = {"vals": sym.values, "rows": sym.rows, "bases": sym.bases}
            rr, cc = block_coder._extents(s, valid[i : i + 1])[0]
            for names, found in ((("value", "cls", "value2"), agreed), (("pred", "bcls"), context)):
                if s in found:  # these pixels' spike values and classes, blend predictions and classes
                    item.update((k, t[i, c, :rr, :cc].reshape(-1)) for k, t in zip(names, found[s]))
            if s in colours and c > 0:  # the previous channel's values, the colour blend's differences
                item["prev"] = block_coder.step_view(xn, s)[i, c - 1, :rr, :cc].reshape(-1).astype(np.int64)
                item.update((k, t[i, c - 1, :rr, :cc].reshape(-1)) for k, t in zip(("cpred", "ccls"), colours[s]))
            parts.setdefault((int(owner[i]), s, c), []).append(item)
        for key, items in parts.items():
            parts[key] = {k: np.concatenate([it[k] for it in items]) for k in items[0]}
        for j in group:
            total, picked = samples[j][:2]
            cells, celled = [None] * ch, {}
            if values:
                masks[j], cells = _fit_values(parts, j, images[j], block_coder.tx, total / len(picked), ch)
                if paletted:
                    kept[j], celled = _fit_palette(parts, j, images[j], block_coder.tx, total / len(picked), masks[j],
                                                   cells)
                    masks[j] = None if kept[j] is not None else masks[j]
            for (jj, s, c), p in parts.items():  # what every later fit codes these pixels with
                if jj == j:
                    p["cells"] = celled.get((s, c), cells[c])
        for (j, s, c), p in parts.items():
            band = p["rows"] // mf * BANDS // levels
            cost[j, steps[s][0], c] += shift_grid(p["vals"], p["rows"], p["bases"], band, BANDS, _CANDIDATES,
                                                  block_coder.tx, mf, levels, cells=p["cells"]).T
        for j in group:
            total, picked = samples[j][:2]
            scale_up = total / len(picked)
            best = cost[j].argmin(axis=3)
            saving = (cost[j, ..., 0].sum() - np.take_along_axis(cost[j], best[..., None], 3).sum()) * scale_up
            shifts = _CANDIDATES[best] if saving > 2 * 8 * (1 + ph * ch * BANDS) else None

            mixing = np.zeros(blend_shape(ph, ch, split), dtype=np.int64)
            for s in blendy:
                for c in range(ch):
                    if (j, s, c) in parts:  # (an image too small to have pixels in this step has none)
                        p = parts[(j, s, c)]
                        mixing[s, c], _ = _fit_blend(p["vals"], *_corrected(p, shifts, steps[s][0], c, None, cfg),
                                                     p["pred"], p["bcls"], block_coder.tx, levels, mf, weights,
                                                     cells=p["cells"])
            # the blend is kept if the whole estimate, spikes refitted on top of it and headers included, is
            # smaller by its header once more (on flat areas the spikes take what the blend alone would save)
            plain = _with_spikes(parts, j, shifts, None, spiky, scored, spikes, cfg, block_coder.tx, scale_up,
                                 split=split)
            if mixing.any():
                mixed = _with_spikes(parts, j, shifts, mixing, spiky, scored, spikes, cfg, block_coder.tx, scale_up,
                                     split=split)
                section = len(to_bytes(Adaptation(blend=mixing, split=split), PRICED)) - len(to_bytes(NONE, PRICED)) + 1
                plain = mixed if mixed[1] + 8 * section < plain[1] else plain
            if colourful:  # the colour blend on top of the blend kept, kept on the same terms
                mixing = plain[0].blend
                table = np.zeros(colour_shape(ph, ch, split), dtype=np.int64)
                for s in colourful:
                    for c in range(1, ch):
                        if (j, s, c) in parts:
                            p = parts[(j, s, c)]
                            blended_as = None if mixing is None else mixing[s, c]
                            mean, level = _corrected(p, shifts, steps[s][0], c, blended_as, cfg)
                            target = colour_prediction(p["prev"], p["cpred"], mf)
                            table[s, c - 1], _ = _fit_blend(p["vals"], mean, level, target, p["ccls"], block_coder.tx,
                                                            levels, mf, COLOUR_WEIGHTS, COLOUR_CLASSES, p["cells"])
                if table.any():
                    coloured = _with_spikes(parts, j, shifts, mixing, spiky, scored, spikes, cfg, block_coder.tx,
                                            scale_up, table, split)
                    section = (len(to_bytes(Adaptation(colour=table, split=split), PRICED))
                               - len(to_bytes(NONE, PRICED)) + 1)
                    plain = coloured if coloured[1] + 8 * section < plain[1] else plain
            out[j] = replace(plain[0], values=masks[j], palette=kept[j], split=split)
        if (shock or residuals) and split:
            out = _fit_feedback(block_coder, drawn, out, [total / len(picked) for total, picked, _, _ in samples],
                                shock, residuals)
    return fit_latent(block_coder, images, out, sample_blocks, seed) if latent and effort >= 2 else out


def draw_z1(block_coder, x: torch.Tensor, counts: Sequence[int], seed: int = 0) -> torch.Tensor:
    """One latent sample z1 of each block x from q(z1|x), popped from a random coder seeded alike for every
    image (counts: the blocks of each image, in order), so what the fits see depends on the image alone."""
    from bitswap_core.coding.rans import random_coder

    dist = block_coder.q1(x)
    rows, bases = block_coder._latent_codes(*dist)
    z1, at = [], 0
    for n in counts:
        sampler = random_coder(np.random.default_rng(seed), 4 * block_coder.z_dims * n)
        z1 += [sampler.pop(rows[at + r], bases[at + r], block_coder.tz) for r in range(n)]
        at += n
    return torch.from_numpy(np.stack(z1).reshape(dist[0].shape))


# surprise shifts the encoder tries, smallest first: fitted from -12..12, the validation photos chose -5..5
# and the flat graphic serrano down to -12 (its calm classes narrow), so the encoder spares itself the wide
# end; each candidate prices every sampled pixel once more
_SURPRISE_SHIFTS = np.array(sorted(range(-surprise.MAX_SHIFT, 7), key=lambda v: (abs(v), v)))
_RESIDUAL_WEIGHTS = np.array(sorted(range(-residual.MAX_WEIGHT, residual.MAX_WEIGHT + 1), key=lambda v: (abs(v), v)))


def _fit_feedback(block_coder, drawn, adaptations: list[Adaptation], scale_ups: list[float], shock: int = 1,
                  residuals: int = 1) -> list[Adaptation]:
    """Each image's adaptation with its residual feedback (residuals = 1; coding/residual.py) and, given that,
    its surprise context (shock = 1; coding/surprise.py), fitted on the sampled blocks coded with the
    adaptation: one network pass over each group of blocks, whose symbols carry the surprise scores and the
    neighbours' residuals (both taken before either feedback, so neither depends on what is fitted)."""
    cfg, steps = block_coder.cfg, block_coder.steps
    rows_of = set(_spike_rows(len(steps)))
    probe = np.zeros(surprise.CLASSES - 1, np.int64)  # edges that only score: every pixel in the last class
    zeros = np.zeros((len(steps), cfg.channels, residual.CLASSES), np.int64)  # weights that only track
    out = list(adaptations)
    for x, valid, owner, z1, border, nets in drawn:
        maps = coding_maps([replace(adaptations[j], surprise=None, surprise_edges=probe if shock else None,
                                    residual=zeros if residuals else None) for j in owner], cfg, len(steps))
        syms = [(int(owner[sym.image]), sym) for sym in block_coder.pixel_symbols(x, z1, valid, maps, border, nets)
                if sym.step in rows_of]
        nets.clear()  # (the group's network outputs are not needed again)
        images = sorted(set(owner.tolist()))
        fitted = _fit_residual(block_coder, syms, images, scale_ups) if residuals else {}
        shocks = _fit_surprise(block_coder, syms, images, fitted, scale_ups) if shock else {}
        for j in images:
            out[j] = replace(adaptations[j], **fitted.get(j, {}), **shocks.get(j, {}))
    return out


def _quartile_edges(counts: np.ndarray, k: int) -> np.ndarray:
    """k - 1 integer edges at the k-quantiles of values 0..len(counts) - 1 counted in counts (a value at
    or past an edge is in the class above it), capped at len(counts) - 1."""
    cum = np.cumsum(counts) / counts.sum()
    edges = np.array([int(np.searchsorted(cum, q / k)) + 1 for q in range(1, k)], dtype=np.int64)
    return np.minimum(edges, len(counts) - 1)


def _fit_residual(block_coder, syms, images: list[int], scale_ups: list[float]) -> dict[int, dict]:
    """Per image, its residual feedback (the Adaptation fields): the |R| edges at the quartiles of its
    sampled pixels' |R|, then per (step, channel, class) the weight of _RESIDUAL_WEIGHTS that codes them
    smallest (spikes and cells included), or one weight per (step, channel) for every class where the
    classes do not pay for their larger section twice (small images); left out where the estimated saving
    does not pay for the section twice."""
    from bitswap_core.coding.grid_costs import residual_grid

    cfg, mf, k = block_coder.cfg, block_coder.cfg.mean_frac, residual.CLASSES
    counts = {j: np.zeros(residual.MAX_EDGE + 1) for j in images}
    for j, sym in syms:
        counts[j] += np.bincount(np.minimum(np.abs(sym.feedback), residual.MAX_EDGE), minlength=residual.MAX_EDGE + 1)
    edges = {j: _quartile_edges(counts[j], k) for j in images if counts[j].sum()}
    cost = {j: np.zeros((len(block_coder.steps), cfg.channels, k, len(_RESIDUAL_WEIGHTS))) for j in edges}
    for j, sym in syms:
        if j not in edges:  # an image whose sampled steps hold no pixel
            continue
        cls = residual.classes(sym.feedback[None], edges[j][None])[0]
        cost[j][sym.step, sym.channel] += residual_grid(sym.values, sym.rows, sym.bases, sym.feedback, cls, k,
                                                        _RESIDUAL_WEIGHTS, block_coder.tx, mf, sym.spikes,
                                                        sym.cells).T
    shape = (len(block_coder.steps), cfg.channels)
    header = {n: 8 * len(_residual_bytes(Adaptation(residual=np.ones((*shape, n), np.int64),
                                                    residual_edges=np.zeros(n - 1, np.int64)))) for n in (1, k)}
    out = {}
    for j, c in cost.items():
        best = {}
        for n, per in ((1, c.sum(axis=2, keepdims=True)), (k, c)):  # (steps, channels, classes, weights)
            pick = per.argmin(axis=3)
            saving = (per[..., 0].sum() - np.take_along_axis(per, pick[..., None], 3).sum()) * scale_ups[j]
            if saving > 2 * header[n] and pick.any():
                best[n] = (saving - 2 * header[n], pick)
        if best:
            n = max(best, key=lambda n: best[n][0])
            out[j] = {"residual": _RESIDUAL_WEIGHTS[best[n][1]], "residual_edges": edges[j] if n > 1 else None}
    return out


def _fit_surprise(block_coder, syms, images: list[int], fitted: dict[int, dict], scale_ups: list[float]
                  ) -> dict[int, dict]:
    """Per image, its surprise context (the Adaptation fields) fitted on its sampled symbols coded with the
    residual feedback's weights: the score edges at the quartiles of the sampled pixels' scores, then per
    (step, channel, class) the scale shift that codes them smallest (spikes and cells included); kept where
    the estimated saving pays for the section twice. The scores do not depend on the shifts (they count
    errors against the unshifted rows), so one pass over the sample prices every candidate."""
    from bitswap_core.coding.grid_costs import shift_grid

    cfg = block_coder.cfg
    mf, levels, ch, k = cfg.mean_frac, cfg.x_scales, cfg.channels, surprise.CLASSES
    n_score = surprise.MAX_SCORE + 1
    cost = {j: np.zeros((len(block_coder.steps), ch, n_score, len(_SURPRISE_SHIFTS))) for j in images}
    count = {j: np.zeros(n_score) for j in images}
    for j, sym in syms:
        rows, bases = sym.rows, sym.bases
        if j in fitted and fitted[j]["residual"][sym.step, sym.channel].any():
            f = fitted[j]
            cut = np.zeros(0, np.int64) if f["residual_edges"] is None else f["residual_edges"]
            moved = residual.moved(rows[None], bases[None], sym.feedback[None],
                                   f["residual"][sym.step, sym.channel][None], cut[None], mf)
            rows, bases = moved[0][0], moved[1][0]
        cost[j][sym.step, sym.channel] += shift_grid(sym.values, rows, bases, sym.score, n_score, _SURPRISE_SHIFTS,
                                                     block_coder.tx, mf, levels, sym.spikes, sym.cells).T
        if sym.channel == 0:
            count[j] += np.bincount(sym.score, minlength=n_score)
    probe = np.zeros(k - 1, np.int64)
    header = 8 * len(_surprise_bytes(Adaptation(surprise=np.ones((len(block_coder.steps), ch, k), np.int64),
                                                surprise_edges=probe)))
    out = {}
    for j in images:
        if not count[j].sum():
            continue
        edges = _quartile_edges(count[j], k)
        cls = surprise.classes(np.arange(n_score)[None, None, :], edges[None, :])[0, 0]
        per = np.stack([cost[j][:, :, cls == c].sum(2) for c in range(k)], axis=2)  # (steps, ch, k, shifts)
        best = per.argmin(axis=3)
        saving = (per[..., 0].sum() - np.take_along_axis(per, best[..., None], 3).sum()) * scale_ups[j]
        if saving > 2 * header and best.any():
            out[j] = {"surprise": _SURPRISE_SHIFTS[best], "surprise_edges": edges}
    return out


def fit_latent(block_coder, images: Sequence[np.ndarray], adaptations: Sequence[Adaptation],
               sample_blocks: int | None = None, seed: int = 0, shifts: Sequence[int] = LATENT_SHIFTS,
               min_blocks: int = LATENT_MIN_BLOCKS) -> list[Adaptation]:
    """Each image's adaptation with the latent shift from `shifts` whose negative ELBO on the image's sampled
    blocks, with that adaptation, is smallest; kept where it saves its header byte twice.

    Why: a model trained on other images can be too sure of its latents here; widening q and p alike
    (trained with free bits, the posterior may carry more than pays) costs a little reconstruction and
    saves more KL (bench/latent_shift.py). One latent sample per block, from a sampler seeded alike for
    every candidate and image: the candidates are compared on coupled draws, and the choice depends on the
    image alone. Images of fewer than min_blocks 32x32 blocks' pixels keep the shift 0 (LATENT_MIN_BLOCKS)."""
    from bitswap_core.coding.rans import random_coder

    block_coder = block_coder.at_side(min(block_coder.side, FIT_SIDE))
    cfg = block_coder.cfg
    area = (block_coder.side // BLOCK) ** 2
    samples = list(_sample(images, sample_blocks, block_coder.side))
    out = list(adaptations)
    fitted = [j for j, (total, _, _, _) in enumerate(samples) if total * area >= min_blocks]
    for part in _groups([len(samples[j][1]) for j in fitted], _BATCH_BLOCKS // area):
        group = [fitted[k] for k in part]
        x = torch.from_numpy(np.concatenate([samples[j][1] for j in group]).astype(np.int64))
        valid = np.concatenate([samples[j][2] for j in group])
        owner = np.concatenate([np.full(len(samples[j][1]), j) for j in group])
        border = block_coder.borders([samples[j][3] for j in group])
        q1 = block_coder.q1(x)  # the shift changes only its codes, not the network's output
        costs = np.zeros((len(shifts), len(images)))
        for t, shift in enumerate(shifts):
            samplers, per_block = [], []
            for j in group:
                n = len(samples[j][1])
                samplers += [random_coder(np.random.default_rng(seed), 4 * cfg.nz * block_coder.z_dims * n)] * n
                per_block += [replace(adaptations[j], latent=int(shift))] * n
            maps = coding_maps(per_block, cfg, len(block_coder.steps))
            bits = block_coder.sample_elbo_bits(x, valid, samplers, maps, border, q1)
            costs[t] = np.bincount(owner, weights=bits, minlength=len(images))
        for j in group:
            best = int(costs[:, j].argmin())
            saving = (costs[0, j] - costs[best, j]) * samples[j][0] / len(samples[j][1])
            if shifts[best] and saving > 2 * 8:
                out[j] = replace(adaptations[j], latent=int(shifts[best]))
    return out
