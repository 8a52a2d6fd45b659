"""compress / decompress / compress_batch: the codec's public API.

RGB images go through the learned path (Bit-Swap or BB-ANS over the exact model); every other mode, and
any RGB image that a classical lossless codec stores smaller (graphics, flat synthetic images), goes
through bitswap_core.fallback. The container records which, and the decoder checks the pixel digest.
Where WebP lossless wins at its fast effort, or comes within a few percent of the learned container, it is
encoded again at its full effort (fallback.worth_full_effort): the slow setting is spent only where it may
be kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from bitswap_core import container, fallback
from bitswap_core.blocks import BLOCK, SIDES, check_side, grid
from bitswap_core.coding import adapt, direct, first_block, importance
from bitswap_core.coding.bitsback import SCHEMES, decode_images, encode_images, lead_limit
from bitswap_core.coding.rans import AnsCoder
from bitswap_core.errors import (
    BitswapError,
    CorruptPayloadError,
    ImageRefusedError,
    ModelMismatchError,
    UnsupportedFormatError,
)
from bitswap_core.registry import Model, find_by_id, resolve

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 2**28  # 268 megapixels
MIN_BLOCKS = 16  # side_for: the fewest whole blocks an image holds of a side larger than 32
ModelArg = Model | str | Path | None


def _learned_mode(model: Model) -> str:
    return "RGB" if model.cfg.channels == 3 else "L"


def _check_size(image: Image.Image, max_pixels: int) -> None:
    w, h = image.size
    if w < 1 or h < 1:
        raise ImageRefusedError(f"image has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageRefusedError(f"image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels")


def _pack(image: Image.Image, codec: str, model_id: str, payload: bytes, digest: bytes) -> bytes:
    return container.pack(container.Container(
        codec=codec, model_id=model_id, mode=image.mode, width=image.width, height=image.height,
        icc_profile=image.info.get("icc_profile") or None, pixel_digest=digest, payload=payload,
    ))


def compress_batch(
    images: Sequence[Image.Image],
    model: ModelArg = None,
    *,
    codec: str = "bitswap",
    smallest: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    adapt_blocks: int | None = None,
    coarse_first: bool | None = None,
    particles: int = 1,
    block_side: int | None = None,
    phase_split: int | None = None,
    effort: int = 2,
) -> list[bytes]:
    """Compress several images at once: the networks run over one block of every image per step.

    codec: "bitswap" (recursive bits-back) or "bbans" (naive bits-back), for images the learned path takes.
    smallest: also try the classical codecs on those images and keep whichever container is smaller.
    adapt_blocks: blocks per image the encoder samples to fit its adaptation (coding/adapt.py; blocks of the
    coding side, at most 64x64; 0: none; None: adapt.sample_size's rule by the image's size).
    coarse_first: send each image's first block's latents on a coarse grid instead of by bits-back
    (coding/first_block.py); None: on for bitswap, off for bbans (the paper's naive baseline).
    particles: posterior samples per block (coding/importance.py): above 1, each block is coded at the
    importance-weighted bound, smaller, for about that many times the work when encoding and decoding.
    block_side: the side of the blocks an image is cut into (blocks.SIDES: 32, 64, 128); None: by the
    image's size and particles (side_for).
    phase_split: how deep phase (0,0) is split into sub-phases (model/phases.py coding_steps: 1 or 2); None:
    by the image's size (phase_split_for).
    effort: how hard the encoder fits the adaptation (adapt.EFFORTS): 2 (default) everything; 1 half the
    sample and no latent shift, an encoder 1.4x as fast for 0.32% more bytes on the validation set
    (docs/BENCHMARKS.md, "Effort"). Any effort decodes with the same decoder at the same speed.
    Raises ImageRefusedError (naming the reason) for an image that cannot be coded; nothing is dropped.
    """
    if codec not in SCHEMES:
        raise ValueError(f"codec must be one of {SCHEMES}, not {codec!r}")
    importance.check_particles(particles)
    adapt.check_effort(effort)
    if block_side is not None:
        check_side(block_side)
    if phase_split is not None and not 1 <= phase_split <= container.split_for(container.VERSION):
        raise ValueError(f"phase_split must be 1 to {container.split_for(container.VERSION)}, not {phase_split}")
    for im in images:
        _check_size(im, max_pixels)
    m = resolve(model)
    out: list[bytes | None] = [None] * len(images)
    learned = [i for i, im in enumerate(images) if im.mode == _learned_mode(m)]
    digests = {i: container.pixel_digest(images[i]) for i in range(len(images))}
    fast: dict[int, dict[str, int]] = {}  # per image, its fast classical payloads' sizes (judges of the full efforts)
    for i, im in enumerate(images):
        if i not in learned or smallest:
            found = fallback.candidates(im)
            name, payload = fallback.smallest(found)
            out[i] = _pack(im, name, "", payload, digests[i])
            fast[i] = {n: len(p) for n, p in found.items()}
    sides: dict[tuple[int, int], list[int]] = {}  # images of one block side and split are coded together
    for i in learned:
        side = block_side if block_side is not None else side_for(images[i].width, images[i].height, particles)
        split = (phase_split if phase_split is not None else phase_split_for(images[i].width, images[i].height)
                 if container.VERSION >= 18 else container.split_for(container.VERSION))
        sides.setdefault((side if container.VERSION >= 15 else BLOCK, split), []).append(i)
    for (side, split), group in sides.items():
        arrays = [np.asarray(images[i], dtype=np.uint8).reshape(images[i].height, images[i].width, -1)
                  for i in group]
        bc = m.block_coder(codec, split, side=side)
        directly = container.VERSION >= 21  # (benchmarks write older versions: no direct blocks)
        traces = [direct.trace(a, side) for a in arrays] if directly else None
        fit = [j for j in range(len(arrays)) if not (directly and direct.graphic(traces[j], arrays[j].size))]
        adaptations = [adapt.NONE] * len(arrays)  # (a graphic's blocks go direct: no fit, coding/direct.py)
        if fit and (adapt_blocks is None or adapt_blocks > 0):
            for j, a in zip(fit, adapt.choose(bc, [arrays[j] for j in fit], adapt_blocks, effort=effort)):
                adaptations[j] = a
        grid_byte = container.VERSION >= 10  # (benchmarks write older versions)
        coarse = (codec == "bitswap" if coarse_first is None else coarse_first) and grid_byte
        grids = first_block.choose(bc.at_side(BLOCK), arrays, adaptations) if coarse else [0] * len(arrays)
        starts: list[list[int]] = []
        parts: list[int] = []
        leads: list[int] = []
        directs: list = []
        lead_bytes = container.VERSION >= 20  # (benchmarks write older versions: the first part alone)
        try:
            coders = encode_images(bc, arrays, adaptations=adaptations, first_grids=grids, particles=particles,
                                   starts=starts, parts=parts, leads=leads, lead=lead_bytes, directly=directly,
                                   directs=directs, traces=traces)
        except CorruptPayloadError as exc:  # initial bits exhausted: cannot happen with sane models
            log.warning("learned path failed (%s); using the classical fallback", exc)
            coders = [None] * len(group)
        for i, coder, adaptation, k, start, parted, lead, went in zip(
                group, coders, adaptations, grids, starts or [[]] * len(group), parts or [0] * len(group),
                leads or [0] * len(group), directs or [None] * len(group)):
            if coder is None:
                if out[i] is None:
                    name, payload = fallback.encode(images[i])
                    out[i] = _pack(images[i], name, "", payload, digests[i])
                continue
            if went is not None and went.all():  # coding/direct.py: no block needs the adaptation
                adaptation = adapt.NONE
            adaptation = replace(adaptation, split=split)  # (v18 on, the header records the coder's split)
            if lead_bytes and not lead:  # every block direct (coding/direct.py): nothing went on the grid
                k = 0
            header = (adapt.to_bytes(adaptation, container.VERSION) + (bytes([k]) if grid_byte else b"")
                      + (bytes([lead]) if lead_bytes else b""))
            if container.VERSION >= 15:
                header += _side_bytes(side, parted)
            if container.VERSION >= 14:
                header += importance.to_bytes(particles, start, _blocks(images[i], side))
            if directly:
                header += direct.to_bytes(went)
            data = _pack(images[i], codec, m.id, header + coder.to_bytes(), digests[i])
            if out[i] is None or len(data) < len(out[i]):
                out[i] = data
    for i, data in enumerate(out):
        if data is None:
            continue
        dims = images[i].width * images[i].height * len(images[i].getbands())
        for codec in (fallback.JXL, fallback.WEBP):
            box = container.unpack(out[i])
            if fallback.worth_full_effort(box.codec, len(box.payload), fast.get(i, {}).get(codec), codec, dims):
                payload = fallback.encode_verified(images[i], codec, "max")
                if payload is not None and len(payload) < len(box.payload):
                    out[i] = _pack(images[i], codec, "", payload, digests[i])
    return out  # type: ignore[return-value]


def compress(image: Image.Image, model: ModelArg = None, *, codec: str = "bitswap", smallest: bool = True,
             max_pixels: int = DEFAULT_MAX_PIXELS, adapt_blocks: int | None = None,
             coarse_first: bool | None = None, particles: int = 1, block_side: int | None = None,
             phase_split: int | None = None, effort: int = 2) -> bytes:
    """Compress one image to a self-describing container (see container.py); the options as compress_batch's."""
    return compress_batch([image], model, codec=codec, smallest=smallest, max_pixels=max_pixels,
                          adapt_blocks=adapt_blocks, coarse_first=coarse_first, particles=particles,
                          block_side=block_side, phase_split=phase_split, effort=effort)[0]


# images of at least this many 32x32 blocks' pixels split phase (0,0) twice (container v18): below it the
# three more steps' header rows cost more than their pixels save (docs/BENCHMARKS.md, "Phase (0,0) split twice")
SPLIT2_MIN_BLOCKS = 64


def phase_split_for(width: int, height: int) -> int:
    """How deep an image's phase (0,0) is split by default (container v18): 2 for images of at least
    SPLIT2_MIN_BLOCKS 32x32 blocks' worth of pixels (256x256), else 1. Why: the deeper split's pixels save
    in proportion to the image, its header rows cost the same for any size."""
    return 2 if width * height >= SPLIT2_MIN_BLOCKS * BLOCK * BLOCK else 1


def side_for(width: int, height: int, particles: int = 1) -> int:
    """The block side an image is coded with by default (container v15): the largest of blocks.SIDES that
    the image holds MIN_BLOCKS whole blocks of. Why: larger blocks put fewer pixels at a block's edge, where
    the networks see padding, and run faster; but an image's first blocks are coded in 32x32 parts until
    its stack is deep enough (bitsback.split_blocks), and a block's latents over its padding are paid for
    (docs/BENCHMARKS.md, "Block side"). With particles, at most 64x64: each of a block's particles needs its
    latents' bits on the stack before the block gets them (importance.rungs), and 128x128 blocks come too
    few for the stack to get deep enough."""
    best = BLOCK
    for side in SIDES if particles == 1 else (s for s in SIDES if s <= 64):
        if (height // side) * (width // side) >= MIN_BLOCKS:
            best = side
    return best


def _blocks(image, side: int = BLOCK) -> int:
    rows, cols = grid(image.height, image.width, side)
    return rows * cols


def _model_for(c: container.Container, model: ModelArg) -> Model:
    if model is not None:
        m = resolve(model)
        if m.id != c.model_id:
            raise ModelMismatchError(f"payload was coded with model {c.model_id}, not the given model {m.id}")
        return m
    m = resolve(None)
    if m.id == c.model_id:
        return m
    found = find_by_id(c.model_id)
    if found is None:
        raise ModelMismatchError(
            f"payload was coded with model {c.model_id}, which is not the default model ({m.id}) "
            "nor any shipped model; pass model=PATH to the right model file")
    return found


def _first_grid(rest: bytes, has_byte: bool, z_bins: int) -> tuple[int, bytes]:
    """(the first block's latent grid, the ANS bytes) of a learned payload after its adaptation header."""
    if not has_byte:
        return 0, rest
    if not rest:
        raise CorruptPayloadError("learned payload truncated: the first block's latent grid is missing")
    try:
        first_block.check_grid(rest[0], z_bins)
    except ValueError as exc:
        raise CorruptPayloadError(f"learned payload is corrupt: {exc}") from None
    return rest[0], rest[1:]


class LearnedSections(NamedTuple):
    """A learned payload read up to its ANS bytes (learned_sections)."""

    adaptation: adapt.Adaptation
    split: int  # how deep phase (0,0) is split (model/phases.py coding_steps)
    grid: int  # the first block's latent grid (coding/first_block.py; 0: bits-back)
    lead: int  # how many first 32x32 parts are on that grid
    side: int  # the block side
    parts: int  # how many first blocks are coded in 32x32 parts
    particles: int  # posterior samples per block (coding/importance.py)
    starts: list[int]  # the first block of each rung of particles
    directs: np.ndarray | None  # which blocks the context model codes (coding/direct.py), or None: none
    ans: bytes  # the coder's bytes


def learned_sections(box: container.Container, m: Model) -> LearnedSections:
    """The sections of a learned container's payload, in the order its version lays them out (adaptation
    header, grid, lead, block side, particles, direct blocks, then the ANS bytes); raises CorruptPayloadError
    on any that is malformed."""
    cfg = m.cfg
    adaptation, ans = (adapt.from_bytes(box.payload, cfg.pixel_phases, cfg.channels, box.version)
                       if box.scale_adapted else (adapt.NONE, box.payload))
    split = adaptation.split if box.scale_adapted else container.split_for(box.version)
    k, ans = _first_grid(ans, box.first_grid_byte, cfg.z_bins)
    lead, ans = _lead(ans, box.lead_byte, k)
    side, parts, ans = _block_side(ans, box.block_side_byte, box.width, box.height)
    if lead is None:
        lead = 1 if k else 0
    elif lead > (limit := lead_limit(box.height, box.width, side, parts)):
        raise CorruptPayloadError(f"learned payload is corrupt: {lead} parts on the first block's grid, more than "
                                  f"the {limit} it codes in parts")
    n_particles, starts, ans = (importance.from_bytes(ans, _blocks(box, side)) if box.particles_section
                                else (1, [], ans))
    directs, ans = direct.from_bytes(ans, _blocks(box, side)) if box.direct_section else (None, ans)
    return LearnedSections(adaptation, split, k, lead, side, parts, n_particles, starts, directs, ans)


def _lead(rest: bytes, has_byte: bool, k: int) -> tuple[int | None, bytes]:
    """(how many of the first 32x32 parts are on grid k (None: the first alone, before container v20), the
    bytes after) of a learned payload after its grid byte."""
    if not has_byte:
        return None, rest
    if not rest:
        raise CorruptPayloadError("learned payload truncated: the count of parts on the first block's grid is missing")
    if (rest[0] == 0) != (k == 0):
        raise CorruptPayloadError(f"learned payload is corrupt: {rest[0]} parts on first-block grid {k}")
    return rest[0], rest[1:]


def _side_bytes(side: int, parts: int) -> bytes:
    """Container v15's block section: u8 log2(side / 32) and, for a side above 32, a u32 (big-endian): how
    many of the image's first blocks are coded in 32x32 parts (bitsback.split_blocks)."""
    return bytes([SIDES.index(side)]) + (parts.to_bytes(4, "big") if side > BLOCK else b"")


def _block_side(rest: bytes, has_byte: bool, width: int, height: int) -> tuple[int, int, bytes]:
    """(the block side, the blocks coded in parts, the bytes after that section) of a learned payload after
    its grid byte (_side_bytes)."""
    if not has_byte:
        return BLOCK, 0, rest
    if not rest:
        raise CorruptPayloadError("learned payload truncated: the block side is missing")
    if rest[0] >= len(SIDES):
        raise CorruptPayloadError(f"learned payload is corrupt: block side code {rest[0]} is not one of "
                                  f"0..{len(SIDES) - 1} (sides {SIDES})")
    side = SIDES[rest[0]]
    if side == BLOCK:
        return side, 0, rest[1:]
    if len(rest) < 5:
        raise CorruptPayloadError("learned payload truncated: the count of blocks coded in parts is missing")
    parts, rows, cols = int.from_bytes(rest[1:5], "big"), *grid(height, width, side)
    if not 1 <= parts <= rows * cols:
        raise CorruptPayloadError(f"learned payload is corrupt: {parts} blocks coded in parts, not 1 to "
                                  f"{rows * cols}")
    return side, parts, rest[5:]


def decompress_batch(datas: Sequence[bytes], model: ModelArg = None, *,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Image.Image]:
    """Decode several containers; learned payloads of the same model are decoded together."""
    boxes = [container.unpack(d, max_pixels=max_pixels) for d in datas]
    out: list[Image.Image | None] = [None] * len(boxes)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(boxes):
        if c.codec.startswith("fallback:"):
            out[i] = fallback.decode(c.codec, c.payload, c.mode, (c.width, c.height), max_pixels=max_pixels)
        elif c.codec in SCHEMES:
            groups.setdefault((c.model_id, c.codec, c.version), []).append(i)
        else:
            raise UnsupportedFormatError(f"unknown codec {c.codec!r} in container")
    for (_, scheme, _), idx in groups.items():
        m = _model_for(boxes[idx[0]], model)
        for i in idx:
            if boxes[i].mode != _learned_mode(m):
                raise CorruptPayloadError(
                    f"learned payload declares mode {boxes[i].mode}, but the model codes {_learned_mode(m)}")
        first = boxes[idx[0]]
        # (side, split) -> (image, adaptation, grid, particles, starts, parts, lead, directs, ANS bytes)
        parsed: dict[tuple, list] = {}
        for i in idx:
            p = learned_sections(boxes[i], m)
            parsed.setdefault((p.side, p.split), []).append(
                (i, p.adaptation, p.grid, p.particles, p.starts, p.parts, p.lead, p.directs, p.ans))
        for (side, split), rows in parsed.items():
            # phase 0 in sub-phases from container v4 on (as the payload says from v18), the next blocks'
            # pixels from v8 on
            bc = m.block_coder(scheme, split, first.bordered, side)
            coders = [AnsCoder.from_bytes(ans, bc.bed_words, first.dithered_ans) for *_, ans in rows]
            shapes = [(boxes[i].height, boxes[i].width, m.cfg.channels) for i, *_ in rows]
            arrays = decode_images(bc, coders, shapes, *[list(col) for col in list(zip(*rows))[1:8]])
            for (i, *_), arr in zip(rows, arrays):
                out[i] = Image.fromarray(arr if m.cfg.channels == 3 else arr[..., 0], _learned_mode(m))
    for i, c in enumerate(boxes):
        img = out[i]
        if container.pixel_digest(img) != c.pixel_digest:
            raise CorruptPayloadError("decoded pixels do not match the stored checksum: payload corrupt")
        if c.icc_profile:
            img.info["icc_profile"] = c.icc_profile
    return out  # type: ignore[return-value]


def decompress(data: bytes, model: ModelArg = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a container made by compress(); raises a BitswapError subclass on any problem."""
    try:
        return decompress_batch([data], model, max_pixels=max_pixels)[0]
    except BitswapError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:  # defensive: never leak a crash
        raise CorruptPayloadError(f"payload could not be decoded: {exc}") from exc
