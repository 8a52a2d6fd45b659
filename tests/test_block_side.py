"""Blocks larger than 32x32 (container v15): the same model over 64x64 and 128x128 blocks, an image's first
blocks in 32x32 parts while its stack is shallow (bitsback.split_blocks), the payload's block section, and
that every side comes back bit-exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import photo_crop

import bitswap_core
from bitswap_core import api, container
from bitswap_core.blocks import bordered, from_blocks, grid, to_blocks, valid_sizes
from bitswap_core.coding import adapt
from bitswap_core.coding.bitsback import split_blocks
from bitswap_core.errors import CorruptPayloadError


@pytest.mark.parametrize("side", [32, 64, 128])
def test_blocks_cut_and_join_at_every_side(side: int) -> None:
    rng = np.random.default_rng(side)
    image = rng.integers(0, 256, (150, 70, 3), dtype=np.uint8)
    blocks = to_blocks(image, side)
    rows, cols = grid(150, 70, side)
    assert blocks.shape == (rows * cols, 3, side, side)
    assert np.array_equal(from_blocks(blocks, 150, 70), image)
    valid = valid_sizes(150, 70, side)
    assert valid[-1].tolist() == [150 - side * (rows - 1), 70 - side * (cols - 1)]
    x, known = bordered(blocks, valid, cols, [0])
    r, c = valid[0]
    assert x.shape == (1, 3, side + 1, side + 1) and known[0, 0, :r, :c].all()
    assert not known[0, 0, r:side].any() and not known[0, 0, :side, c:side].any()
    assert bool(known[0, 0, side, 0]) == (rows > 1) and bool(known[0, 0, 0, side]) == (cols > 1)


def test_split_blocks_names_the_32x32_parts_of_each_block() -> None:
    image = np.zeros((100, 70, 3), dtype=np.uint8)  # 4 x 3 blocks of 32, 2 x 2 of 64
    blocks, valid, per_row, inside = split_blocks(image, 64)
    assert blocks.shape[0] == 12 and per_row == 3
    assert inside == [[0, 1, 3, 4], [2, 5], [6, 7, 9, 10], [8, 11]]
    assert split_blocks(image, 128)[3] == [list(range(12))]


def test_side_for_keeps_16_blocks() -> None:
    assert api.side_for(255, 255) == 32 and api.side_for(256, 256) == 64 and api.side_for(512, 511) == 64
    assert api.side_for(512, 512) == 128 and api.side_for(4000, 3000) == 128 and api.side_for(20, 5000) == 32
    assert api.side_for(2048, 64) == 64 and api.side_for(794, 629) == 128  # 32 x 1 and 6 x 4 whole blocks
    assert api.side_for(512, 512, particles=2) == 64 and api.side_for(256, 256, particles=8) == 64


def _section(data: bytes) -> tuple[int, int, bytes]:
    """(side, blocks in parts, the rest) of a learned payload after its grid byte (and, v20 on, its lead)."""
    box = container.unpack(data)
    _, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    return api._block_side(rest[2:], True, box.width, box.height)


@pytest.mark.parametrize("side,box", [(64, (0, 0, 150, 100)), (128, (0, 0, 200, 136)), (128, (10, 20, 50, 41))])
def test_larger_blocks_come_back_exact(side: int, box) -> None:
    img = photo_crop("usc-4.1.07.png", box)
    data = bitswap_core.compress(img, smallest=False, block_side=side)
    got, parts, _ = _section(data)
    rows, cols = grid(img.height, img.width, side)
    assert got == side and 1 <= parts <= rows * cols
    assert bitswap_core.decompress(data).tobytes() == img.tobytes()


def test_64x64_blocks_code_a_photo_smaller_than_32x32() -> None:
    """256 x 256 (16 blocks of 64): fewer pixels at a block's edge, and the first blocks in parts."""
    img = photo_crop("usc-4.1.07.png", (0, 0, 256, 256))
    small = bitswap_core.compress(img, smallest=False, block_side=32)
    large = bitswap_core.compress(img, smallest=False)  # side_for: 64
    assert _section(small)[:2] == (32, 0) and _section(large)[0] == 64 and 1 <= _section(large)[1] < 8
    assert len(large) < len(small)
    assert bitswap_core.decompress(large).tobytes() == img.tobytes()


def test_a_batch_of_sides_particles_and_bbans_decodes_exactly() -> None:
    imgs = [photo_crop("usc-4.1.07.png", (0, 0, 256, 256)), photo_crop("waterloo-monarch.png", (0, 0, 96, 80)),
            photo_crop("waterloo-monarch.png", (100, 50, 230, 190))]
    datas = bitswap_core.compress_batch(imgs, smallest=False, particles=2)
    assert [_section(d)[0] for d in datas] == [64, 32, 32]
    datas += bitswap_core.compress_batch(imgs[1:], smallest=False, block_side=64, codec="bbans")
    back = bitswap_core.decompress_batch(datas)
    assert [b.tobytes() for b in back] == [i.tobytes() for i in imgs + imgs[1:]]


def _with_section(data: bytes, section: bytes) -> bytes:
    """The container with its block section (the side byte and any parts count) replaced by section."""
    box = container.unpack(data)
    _, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    _, _, after = api._block_side(rest[2:], True, box.width, box.height)
    head = box.payload[: len(box.payload) - len(rest) + 2]  # the adaptation header, the grid byte, the lead
    return container.pack(replace(box, payload=head + section + after))


@pytest.mark.parametrize("section,match", [
    (b"\x03", "block side code 3"), (b"\x01\x00\x00\x00\x00", "0 blocks coded in parts"),
    (b"\x01\x00\x00\x00\x07", "7 blocks coded in parts"),
])
def test_a_malformed_block_section_is_refused(section: bytes, match: str) -> None:
    img = photo_crop("usc-4.1.07.png", (0, 0, 100, 80))  # 2 x 2 blocks of 64
    data = bitswap_core.compress(img, smallest=False, block_side=64)
    assert _section(_with_section(data, b"\x01" + _section(data)[1].to_bytes(4, "big")))[:2] == _section(data)[:2]
    bad = _with_section(data, section)
    with pytest.raises(CorruptPayloadError, match=match):
        bitswap_core.decompress(bad)


def test_an_unknown_side_is_refused() -> None:
    with pytest.raises(ValueError, match="block side 48"):
        bitswap_core.compress(photo_crop(), smallest=False, block_side=48)
