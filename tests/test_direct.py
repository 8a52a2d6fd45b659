"""Direct blocks (container v21): the classical context model codes a graphic's blocks, exactly, in the
decoder's order, and the header section that names them refuses what the encoder never writes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import noise_image, photo_crop
from PIL import Image, ImageDraw

import bitswap_core
from bitswap_core import api, container
from bitswap_core.coding import direct
from bitswap_core.coding.rans import AnsCoder
from bitswap_core.errors import CorruptPayloadError


def drawing(w: int = 160, h: int = 96) -> Image.Image:
    """A flat graphic: a few colours in shapes, a hard-edged gradient band and a line of text-like marks."""
    img = Image.new("RGB", (w, h), (250, 248, 240))
    d = ImageDraw.Draw(img)
    d.rectangle((5, 8, 70, 50), fill=(30, 60, 200))
    d.ellipse((60, 20, 140, 90), fill=(220, 40, 40), outline=(0, 0, 0), width=3)
    for i in range(0, w, 8):  # posterised gradient: 8-pixel steps
        d.rectangle((i, h - 12, i + 7, h - 1), fill=(i, 255 - i, 128))
    for i in range(10, 150, 13):
        d.line((i, 60, i + 6, 70), fill=(0, 120, 0), width=2)
    return img


def _round_trip(arr: np.ndarray, side: int, pushed) -> np.ndarray:
    """Push the blocks for which pushed(k) holds directly (the others stand for blocks the latent model
    codes: the decoder feeds them from the image), decode last-first, return the decoder's image."""
    t = direct.trace(arr, side)
    coder = AnsCoder(64)
    for k in range(len(t.bits)):
        if pushed(k):
            direct.push_block(coder, t, k)
    back = AnsCoder.from_bytes(coder.to_bytes(), 64)
    reader = direct.Reader(*arr.shape, side)
    cols = -(-arr.shape[1] // side)
    for k in range(len(t.bits) - 1, -1, -1):
        if pushed(k):
            block = reader.decode(back, k)
        else:
            r, c = divmod(k, cols)
            block = np.zeros((arr.shape[2], side, side), np.uint8)
            part = arr[r * side : (r + 1) * side, c * side : (c + 1) * side].transpose(2, 0, 1)
            block[:, : part.shape[1], : part.shape[2]] = part
            reader.feed(block, k)
    back.check_finished()
    return reader.image


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("which", ["all", "odd", "none"])
def test_the_context_model_decodes_what_it_coded_with_any_blocks_direct(monkeypatch, side, which):
    """Exact on a graphic, noise and a photo crop of odd sizes, whichever blocks go direct: the model the
    decoder feeds with the other blocks stays in step with the encoder's trace."""
    monkeypatch.setattr(direct, "CANDIDATE_BPD", 99.0)  # keep every block's intervals
    pushed = {"all": lambda k: True, "odd": lambda k: k % 2 == 1, "none": lambda k: False}[which]
    for img in (drawing(150, 77), noise_image(45, 70, seed=3), photo_crop(box=(0, 0, 97, 66))):
        arr = np.asarray(img)
        out = _round_trip(arr, side, pushed)
        assert np.array_equal(out, arr)


def test_a_flat_graphic_costs_little_and_noise_is_never_a_candidate():
    """The trace's costs: the drawing's blocks cost well under a bit per dimension, noise's about 8 (never
    worth a try, so no intervals are kept for it)."""
    g = direct.trace(np.asarray(drawing()), 32)
    assert g.bits.sum() / (160 * 96 * 3) < 0.25 and all(g.candidate(k) for k in range(len(g.bits)))
    n = direct.trace(np.asarray(noise_image(64, 64, seed=1)), 32)
    assert n.bits.sum() / (64 * 64 * 3) > 7.5 and not any(n.candidate(k) for k in range(4)) and not len(n.cums)


def test_the_header_section_round_trips_and_refuses_what_the_encoder_never_writes():
    mask = np.zeros(13, bool)
    mask[[2, 5, 12]] = True
    data = direct.to_bytes(mask)
    assert direct.to_bytes(np.zeros(13, bool)) == b"\0" and data[0] == 1 and len(data) == 3
    got, rest = direct.from_bytes(data + b"xy", 13)
    assert np.array_equal(got, mask) and rest == b"xy"
    assert direct.from_bytes(b"\0z", 13) == (None, b"z")
    for bad, why in [(b"", "missing"), (b"\2\0\0", "bad direct"), (data[:2], "bad direct"),
                     (b"\1\0\0", "not one"), (b"\1\0\x20", "not one")]:
        with pytest.raises(CorruptPayloadError, match=why):
            direct.from_bytes(bad, 13)


def test_the_codec_codes_a_drawing_s_blocks_directly_and_decodes_it_with_photos_in_one_batch():
    """With the default model a drawing's blocks all go direct (smaller than the latent model's), a small
    photo crop's first block alone (the latent model codes the rest, the first of them on the first
    block's grid), a larger crop's none; all decode exactly in one batch; a damaged bitmap is refused."""
    imgs = [drawing(), photo_crop("waterloo-monarch.png", (0, 0, 96, 64)),
            photo_crop("waterloo-monarch.png", (100, 100, 228, 228))]
    datas = [bitswap_core.compress(im, smallest=False) for im in imgs]
    m = api.resolve(None)
    sections = [api.learned_sections(container.unpack(d), m) for d in datas]
    assert container.unpack(datas[0]).version == 21
    assert sections[0].directs.all() and sections[0].grid == sections[0].lead == 0
    assert sections[1].directs.tolist() == [True] + [False] * 5 and sections[1].lead >= 1
    assert sections[2].directs is None
    back = bitswap_core.decompress_batch(datas)
    assert [a.tobytes() == b.tobytes() for a, b in zip(back, imgs)] == [True, True, True]
    box = container.unpack(datas[0])
    at = len(box.payload) - len(sections[0].ans) - 2  # the bitmap's 15 blocks: 2 bytes before the ANS bytes
    for flip in (0, 1, 9):
        bad = bytearray(box.payload)
        bad[at + flip // 8] ^= 1 << (flip % 8)
        data = container.pack(container.Container(**{**box.__dict__, "payload": bytes(bad)}))
        with pytest.raises(CorruptPayloadError):
            bitswap_core.decompress(data)


def test_a_drawing_direct_is_smaller_than_without(monkeypatch):
    """The same drawing written as container v20 (no direct blocks) is larger: the direct blocks pay."""
    img = drawing()
    now = len(bitswap_core.compress(img, smallest=False))
    monkeypatch.setattr(container, "VERSION", 20)
    before = len(bitswap_core.compress(img, smallest=False))
    assert now < 0.8 * before


@pytest.mark.parametrize("side", [32, 64])
def test_direct_blocks_among_parts_and_the_lead_decode_exactly(side):
    """A photo with a drawing pasted in its top-left corner: the drawing's blocks go direct, also among the
    first blocks that larger blocks code in 32x32 parts while the stack is shallow, and the lead (the parts
    on the first block's grid) counts the latent model's parts only, none forced onto the grid after a direct
    block (0 with grid 0 where bits-back won the first try); it decodes exactly."""
    arr = np.asarray(photo_crop("waterloo-monarch.png", (0, 0, 192, 128))).copy()
    arr[:96, :96] = np.asarray(drawing(96, 96))
    img = Image.fromarray(arr)
    data = bitswap_core.compress(img, smallest=False, block_side=side)
    p = api.learned_sections(container.unpack(data), api.resolve(None))
    assert p.directs is not None and p.directs[0] and not p.directs.all() and (p.lead == 0) == (p.grid == 0)
    assert side == 32 or p.parts > 1
    assert bitswap_core.decompress(data).tobytes() == img.tobytes()


def test_a_stored_v21_payload_with_direct_blocks_decodes_and_the_encoder_writes_it_again():
    """tests/data: a 128x96 monarch crop with a 64-column strip of the bundled graphic in it, coded in
    container v21 by the fifteenth default: the graphic's blocks direct, the photo's by the latent model (the
    first of them on the first block's grid). It decodes exactly, and encoding the image again gives the same
    bytes (the trace, the tries and the coding are deterministic; a change shows here)."""
    from pathlib import Path

    from bitswap_core.registry import find_by_id

    stored = (Path(__file__).parent / "data" / "default-eeaa8f79-mosaic-128x96-v21.bsw").read_bytes()
    arr = np.asarray(photo_crop("waterloo-monarch.png", (200, 100, 328, 196))).copy()
    arr[:, :64] = np.asarray(photo_crop("waterloo-serrano.png", (300, 300, 364, 396)))
    img = Image.fromarray(arr)
    box = container.unpack(stored)
    p = api.learned_sections(box, find_by_id(box.model_id))
    assert box.version == 21 and p.directs.tolist() == [c == "1" for c in "110111001100"] and p.lead == 1
    assert bitswap_core.decompress(stored).tobytes() == img.tobytes()
    assert bitswap_core.compress(img, find_by_id(box.model_id), smallest=False) == stored


def test_damaged_ans_bytes_of_direct_blocks_are_refused_never_a_wrong_image():
    """Flipped, zeroed or cut ANS bytes of the stored v21 payload (its direct blocks are decoded first, last
    block first) give CorruptPayloadError: the context model's decoder stops on a neighbour it does not hold,
    a colour its cache does not hold or a dry stack, and whatever decodes is checked against the digest."""
    from pathlib import Path

    stored = (Path(__file__).parent / "data" / "default-eeaa8f79-mosaic-128x96-v21.bsw").read_bytes()
    box = container.unpack(stored)
    ans = api.learned_sections(box, api.resolve(None)).ans
    head = len(box.payload) - len(ans)
    rng = np.random.default_rng(0)
    for case in range(24):
        payload = bytearray(box.payload)
        at = head + 12 + int(rng.integers(0, len(ans) - 12))  # past the coder's kept-bed count and state
        if case % 3 == 0:
            payload[at] ^= 1 << int(rng.integers(0, 8))
        elif case % 3 == 1:
            payload[at : at + 8] = bytes(8)
        else:
            payload = payload[: head + 12 + 4 * ((at - head - 12) // 4)]
        data = container.pack(container.Container(**{**box.__dict__, "payload": bytes(payload)}))
        with pytest.raises(CorruptPayloadError):
            bitswap_core.decompress(data)


def test_a_graphic_is_one_the_encoder_codes_without_fitting_an_adaptation(monkeypatch):
    """direct.graphic: every block a candidate and the whole under GRAPHIC_BPD. The drawing is one (and
    api.compress then never calls the fit), a photo crop and noise are not."""
    from bitswap_core.coding import adapt

    for img, expected in ((drawing(), True), (photo_crop("waterloo-monarch.png", (100, 100, 228, 228)), False),
                          (noise_image(64, 64, seed=2), False)):
        arr = np.asarray(img)
        assert direct.graphic(direct.trace(arr, 32), arr.size) == expected
    called = []
    monkeypatch.setattr(adapt, "choose", lambda *a, **k: called.append(1) or [])
    img = drawing()
    assert bitswap_core.decompress(bitswap_core.compress(img, smallest=False)).tobytes() == img.tobytes()
    assert not called


def test_the_colour_cache_ring_keeps_distinct_colours_and_its_bucket_counts_through_evictions():
    """A block-noise image of ~1500 colours, each repeated so the cache both hits and evicts: the ring's
    colours (rank order from its head) are distinct and the bucket counts are theirs exactly (what the
    search's skip relies on; the coded bytes are pinned by the round trips above and the fixture)."""
    rng = np.random.default_rng(5)
    palette = rng.integers(0, 256, (1500, 3))
    arr = palette[rng.integers(0, 1500, (48, 40))].repeat(2, 0).repeat(2, 1).astype(np.uint8)  # 96x80
    reader = direct.Reader(*arr.shape, 32)
    blocks = [np.moveaxis(arr[r : r + 32, c : c + 32], 2, 0) for r in range(0, 96, 32) for c in range(0, 80, 32)]
    for k in range(len(blocks) - 1, -1, -1):  # decoding order
        block = np.zeros((3, 32, 32), np.uint8)
        block[:, : blocks[k].shape[1], : blocks[k].shape[2]] = blocks[k]
        reader.feed(block, k)
    m = reader.model
    n, head = int(m.misc[0]), int(m.misc[2])
    assert n == direct.CACHE
    ring = [tuple(m.cache[(head + j) % direct.CACHE]) for j in range(n)]
    assert len(set(ring)) == n
    buckets = np.zeros_like(m.seen)
    for colour in ring:
        h = 0
        for v in colour:
            h = h * 263 + int(v)
        buckets[(h ^ (h >> 12)) & (len(m.seen) - 1)] += 1
    assert np.array_equal(buckets, m.seen)
