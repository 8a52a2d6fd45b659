"""The first block's coarse latents (container v10): exact, smaller than bits-back, and checked on decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import noise_image, photo_crop

import bitswap_core
from bitswap_core import container
from bitswap_core.coding import adapt, first_block
from bitswap_core.coding.bitsback import decode_images, encode_images
from bitswap_core.coding.rans import AnsCoder
from bitswap_core.errors import CorruptPayloadError

DATA = Path(__file__).parent / "data"


def _grid_byte(data: bytes, phases: int = 4) -> int:
    box = container.unpack(data)
    _, rest = adapt.from_bytes(box.payload, phases, 3, version=box.version)
    return rest[0]


def _repack(data: bytes, payload: bytes) -> bytes:
    box = container.unpack(data)
    return container.pack(container.Container(box.codec, box.model_id, box.mode, box.width, box.height,
                                              box.icc_profile, box.pixel_digest, payload))


@pytest.mark.parametrize("scheme", ["bitswap", "bbans"])
def test_batches_mixing_first_and_later_blocks_decode_exactly(tiny_model, scheme):
    """Images of 1, 6 and 12 blocks: the decoder meets each image's first block at a different step, next to
    other images' later blocks, and any grid, including a fine one, decodes exactly."""
    bc = tiny_model.block_coder(scheme)
    images = [np.asarray(noise_image(h, w, seed=h)) for h, w in ((20, 31), (64, 96), (96, 128))]
    for grids in ([16, 1, 255], [0, 48, 0], first_block.choose(bc, images)):
        coders = encode_images(bc, images, first_grids=grids)
        back = decode_images(bc, [AnsCoder.from_bytes(c.to_bytes(), bc.bed_words) for c in coders],
                             [im.shape for im in images], first_grids=grids)
        assert all(np.array_equal(a, b) for a, b in zip(back, images)), grids


def test_the_encoder_picks_a_grid_per_image_and_bbans_stays_naive(tiny_model, monkeypatch):
    monkeypatch.setattr(container, "VERSION", 20)  # (v21: the random-weight model's blocks would go direct)
    img = photo_crop()
    for codec, expected in (("bitswap", set(first_block.GRIDS)), ("bbans", {0})):
        data = bitswap_core.compress(img, tiny_model, codec=codec, smallest=False)
        assert _grid_byte(data, 1) in expected
        assert bitswap_core.decompress(data, tiny_model).tobytes() == img.tobytes()
    data = bitswap_core.compress(img, tiny_model, codec="bbans", smallest=False, coarse_first=True)
    assert _grid_byte(data, 1) in first_block.GRIDS
    assert bitswap_core.decompress(data, tiny_model).tobytes() == img.tobytes()


def test_a_one_block_photo_costs_far_less_than_with_a_bits_back_first_block():
    """The default model on a 32x32 photo crop: bits-back pays its latents in full there (about 8.8 bpd
    measured), the coarse grid about 5.2."""
    img = photo_crop("waterloo-monarch.png", box=(200, 200, 232, 232))
    coarse = bitswap_core.compress(img, smallest=False)
    naive = bitswap_core.compress(img, smallest=False, coarse_first=False)
    assert _grid_byte(coarse) > 0 and _grid_byte(naive) == 0
    assert len(coarse) < 0.8 * len(naive)
    for data in (coarse, naive):
        assert bitswap_core.decompress(data).tobytes() == img.tobytes()


def test_v10_payload_with_a_coarse_first_block_decodes_and_the_encoder_still_writes_it():
    """tests/data: the seventh default's container v10 payload of a 3 x 3-block crop of a colour photo
    decodes exactly, and encoding the crop again without v11's latent shift gives the same grid, adaptation
    and coding (the grid choice is deterministic)."""
    from bitswap_core.registry import find_by_id

    stored = (DATA / "default-42aaf5c8-monarch-96x96-v10.bsw").read_bytes()
    box = container.unpack(stored)
    old, rest = adapt.from_bytes(box.payload, 4, 3, version=10)
    assert box.version == 10 and rest[0] in first_block.GRIDS
    crop = photo_crop("waterloo-monarch.png", box=(64, 64, 160, 160))
    assert bitswap_core.decompress(stored).tobytes() == crop.tobytes()
    bc = find_by_id(box.model_id).block_coder("bitswap", container.split_for(box.version))
    arr = np.asarray(crop, dtype=np.uint8)
    (a,) = adapt.choose(bc, [arr], latent=0, values=0, residuals=0)
    assert adapt.to_bytes(a, 10) == box.payload[: len(box.payload) - len(rest)]
    grids = first_block.choose(bc, [arr], [a])
    assert grids == [rest[0]] and encode_images(bc, [arr], adaptations=[a], first_grids=grids)[0].to_bytes() == rest[1:]


def test_v11_payload_decodes_and_the_encoder_still_writes_it():
    """tests/data: the same crop in container v11 with a latent shift of 2 in its header (written before
    small images stopped fitting one) decodes exactly, and coding the crop with that shift gives the same
    bytes; the encoder now keeps a 9-block image's shift at 0."""
    from dataclasses import replace

    from bitswap_core.registry import find_by_id

    stored = (DATA / "default-42aaf5c8-monarch-96x96-v11.bsw").read_bytes()
    box = container.unpack(stored)
    old, rest = adapt.from_bytes(box.payload, 4, 3, version=11)
    assert box.version == 11 and old.latent == 2
    crop = photo_crop("waterloo-monarch.png", box=(64, 64, 160, 160))
    assert bitswap_core.decompress(stored).tobytes() == crop.tobytes()
    bc = find_by_id(box.model_id).block_coder("bitswap", container.split_for(box.version))
    arr = np.asarray(crop, dtype=np.uint8)
    (a,) = adapt.choose(bc, [arr], values=0, residuals=0)
    assert a.latent == 0
    a = replace(a, latent=old.latent)
    assert adapt.to_bytes(a, 11) == box.payload[: len(box.payload) - len(rest)]
    grids = first_block.choose(bc, [arr], [a])
    assert encode_images(bc, [arr], adaptations=[a], first_grids=grids)[0].to_bytes() == rest[1:]


def test_a_missing_or_damaged_grid_byte_is_a_clear_error(tiny_model):
    img = photo_crop()
    data = bitswap_core.compress(img, tiny_model, smallest=False)
    payload = container.unpack(data).payload
    _, rest = adapt.from_bytes(payload, 1, 3)
    head = payload[: len(payload) - len(rest)]
    with pytest.raises(CorruptPayloadError, match="grid is missing"):
        bitswap_core.decompress(_repack(data, head), tiny_model)
    for k in (0, 1, 2, 15, 17, 31, 33, 63, 100, 255):
        if k == rest[0]:
            continue
        try:
            out = bitswap_core.decompress(_repack(data, head + bytes([k]) + rest[1:]), tiny_model)
        except CorruptPayloadError:
            continue
        assert out.tobytes() == img.tobytes(), k  # never a wrong image


def test_grid_bounds():
    first_block.check_grid(0, 512)
    first_block.check_grid(255, 512)
    with pytest.raises(ValueError, match="grid"):
        first_block.check_grid(33, 64)  # one cell would hold every bin
    with pytest.raises(ValueError, match="grid"):
        first_block.check_grid(256, 4096)


def _with_lead(data: bytes, lead: int | None) -> bytes:
    """data (a v20 learned container) with its lead byte replaced (None: cut off after the grid byte)."""
    from dataclasses import replace

    box = container.unpack(data)
    _, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    at = len(box.payload) - len(rest) + 1  # the lead follows the grid byte
    payload = box.payload[:at] if lead is None else box.payload[:at] + bytes([lead]) + box.payload[at + 1 :]
    return container.pack(replace(box, payload=payload))


@pytest.mark.parametrize("box", [(0, 0, 96, 64), (0, 0, 256, 160)])
def test_v20_codes_the_first_parts_on_the_grid_while_the_stack_is_shallow(monkeypatch, box):
    """Container v20: an image codes its next 32x32 blocks (or the 32x32 parts of its first larger blocks)
    both on the first block's grid and by bits-back, and keeps the smaller, until bits-back wins (while the
    stack is shallow, bits-back pops the latents off the stack's bed); the header says how many (after the
    grid byte). A smooth photo crop codes several that way, smaller than v19's first-part-alone, and v19 and
    v20 payloads decode together; a lead that disagrees with the grid or exceeds the image's parts is a
    clear error."""
    img = photo_crop("usc-4.1.07.png", box=box)
    monkeypatch.setattr(container, "VERSION", 20)  # (v21 would code some of its blocks directly)
    new = bitswap_core.compress(img, smallest=False)
    monkeypatch.setattr(container, "VERSION", 19)
    old = bitswap_core.compress(img, smallest=False)
    monkeypatch.undo()
    box_new = container.unpack(new)
    _, rest = adapt.from_bytes(box_new.payload, 4, 3, version=box_new.version)
    assert box_new.version == 20 and rest[0] > 0 and rest[1] > 1
    assert len(new) < len(old)
    assert all(b.tobytes() == img.tobytes() for b in bitswap_core.decompress_batch([new, old, new]))
    for lead, match in ((0, "0 parts on first-block grid"), (255, "more than"), (None, "missing")):
        with pytest.raises(CorruptPayloadError, match=match):
            bitswap_core.decompress(_with_lead(new, lead))


def test_v20_without_a_grid_has_no_lead():
    """With the first block by bits-back (coarse_first=False, naive BB-ANS's default) the lead is 0, and a
    lead on no grid is corrupt."""
    img = photo_crop("usc-4.1.07.png", box=(0, 0, 64, 64))
    data = bitswap_core.compress(img, smallest=False, coarse_first=False)
    box = container.unpack(data)
    _, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert rest[:2] == b"\0\0" and bitswap_core.decompress(data).tobytes() == img.tobytes()
    with pytest.raises(CorruptPayloadError, match="1 parts on first-block grid 0"):
        bitswap_core.decompress(_with_lead(data, 1))
