"""Palette cells (container v13): in an image of few colours each channel is coded with the cells of the
values the palette allows after the channels before it; exact, never costlier, checked on decode. And
certain symbols (a cell holding the whole alphabet) cost nothing and keep the stack intact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_crop, random_table
from PIL import Image

import bitswap_core
from bitswap_core import container
from bitswap_core.coding import adapt, palette
from bitswap_core.coding.bitsback import encode_images
from bitswap_core.coding.rans import AnsCoder, GroupedCells, Table, cost_bits_each, value_cells
from bitswap_core.errors import CorruptPayloadError
from bitswap_core.registry import find_by_id, resolve

rng = np.random.default_rng(13)
FIXTURE = Path(__file__).parent / "data" / "default-42aaf5c8-serrano-96x96-v13.bsw"


def _table() -> Table:
    return random_table(rng)


def test_grouped_cells_round_trip_with_spikes_and_certain_symbols() -> None:
    """Each symbol coded with its own table of cells; tables that keep one value make their symbols
    certain (a cell over the whole alphabet), which must cost 0 bits and leave the other symbols intact."""
    table = _table()
    masks = rng.random((6, 256)) < [[0.02], [0.1], [0.5], [0.9], [0.0], [0.0]]
    masks[:, 77] = True  # tables 4 and 5 keep 77 alone
    tables = np.stack([value_cells(m) for m in masks])
    n = 3000
    groups = rng.integers(0, 6, n)
    sym = np.array([rng.choice(np.flatnonzero(masks[g])) for g in groups])
    rows, bases = rng.integers(0, 5, n), np.clip(sym + rng.integers(-5, 6, n), 0, 255)
    spikes = (np.clip(sym + rng.integers(-1, 2, n), 0, 255), rng.integers(0, 200, n))
    cells = GroupedCells(tables, groups)
    each = cost_bits_each(sym, rows, bases, table, spikes, cells)
    assert (each[groups >= 4] == 0).all() and (each[groups < 4] > 0).all()
    assert (each <= cost_bits_each(sym, rows, bases, table, spikes) + 1e-9).all()
    coder = AnsCoder(32)
    coder.push(sym, rows, bases, table, spikes, cells)
    assert abs(coder.num_bits() - each.sum()) < 0.01 * each.sum() + 200
    assert np.array_equal(coder.pop(rows, bases, table, spikes, cells), sym)
    coder.check_finished()


def test_grouped_cells_are_checked() -> None:
    table = _table()
    tables = np.stack([value_cells(np.arange(256) % 2 == 0), value_cells(np.ones(256, bool))])
    sym, rows, bases = np.array([2, 3]), np.zeros(2, np.int64), np.array([2, 3])
    AnsCoder(16).push(sym, rows, bases, table, cells=GroupedCells(tables, np.array([0, 1])))
    with pytest.raises(ValueError, match="not one of the kept values"):
        AnsCoder(16).push(sym, rows, bases, table, cells=GroupedCells(tables, np.array([0, 0])))
    with pytest.raises(ValueError, match="out of range"):
        AnsCoder(16).push(sym, rows, bases, table, cells=GroupedCells(tables, np.array([0, 2])))
    with pytest.raises(ValueError, match="one int64 table index per symbol"):
        AnsCoder(16).push(sym, rows, bases, table, cells=GroupedCells(tables, np.array([0])))


def _drawing(h: int = 64, w: int = 64, colours: int = 12, seed: int = 0) -> np.ndarray:
    """Flat rectangles of a few random colours with a one-pixel dither band: a rendered graphic."""
    r = np.random.default_rng(seed)
    pal = r.integers(0, 256, (colours, 3), dtype=np.uint8)
    idx = np.zeros((h, w), np.int64)
    for _ in range(20):
        y, x = r.integers(0, h, 2), r.integers(0, w, 2)
        idx[min(y):max(y) + 1, min(x):max(x) + 1] = r.integers(0, colours)
    idx[::7] = (idx[::7] + 1) % colours
    return pal[idx]


def test_cells_allow_exactly_the_palette_after_each_prefix() -> None:
    arr = _drawing(colours=40)
    pal = palette.colours(arr)
    assert len(pal) == len(np.unique(arr.reshape(-1, 3), axis=0))
    pc = palette.PaletteCells(pal)
    r, g = pal[:, 0].astype(np.int64), pal[:, 1].astype(np.int64)
    assert np.array_equal(np.unique(pc.cells(0, [])[2]), np.unique(r))
    for c, earlier in ((1, [r]), (2, [r, g])):
        tables, groups = pc.cells(c, earlier)
        for k in range(len(pal)):
            same = np.all(pal[:, :c] == pal[k, :c], axis=1)
            assert np.array_equal(np.unique(tables[groups[k], 2]), np.unique(pal[same, c]))
    absent = next(v for v in range(256) if v not in set(r.tolist()))
    with pytest.raises(ValueError, match="not a prefix"):
        pc.cells(1, [np.array([absent])])
    assert palette.colours(arr, limit=len(pal) - 1) is None


def test_palette_section_round_trips_and_malformed_ones_are_corrupt() -> None:
    pal = palette.colours(_drawing(colours=200, seed=3))
    a = adapt.Adaptation(palette=pal)
    head = adapt.to_bytes(a)
    back, rest = adapt.from_bytes(head + b"tail", 4, 3)
    assert np.array_equal(back.palette, pal) and rest == b"tail"
    assert adapt.from_bytes(adapt.to_bytes(adapt.NONE), 4, 3)[0].palette is None
    with pytest.raises(ValueError, match="cannot hold a palette"):
        adapt.to_bytes(a, 12)
    with pytest.raises(ValueError, match="not both"):
        adapt.to_bytes(replace(a, values=np.ones((3, 256), bool)))
    base = adapt.to_bytes(adapt.NONE, 18)[:-4]  # less the palette's, surprise and residual feedback sections
    section = palette.to_bytes(pal)
    over = (palette.MAX_COLOURS + 1).to_bytes(2, "little")
    for bad, match in ((base + b"\0", "palette section is missing"), (base + section[:-1], "inside the palette"),
                       (base + over, "more than"), (base + b"\1\0" + b"\xff" * 5, "longer than any colour key"),
                       (base + b"\2\0" + b"\xff\xff\xff\x07" + b"\0", "out of range"),
                       (base[:-1] + b"\1" + b"\xff" * 32 + section, "both value masks and a palette")):
        with pytest.raises(CorruptPayloadError, match=match):
            adapt.from_bytes(bad, 4, 3, 18)


def test_a_drawing_gets_a_palette_and_codes_smaller_and_exact(monkeypatch) -> None:
    monkeypatch.setattr(container, "VERSION", 20)  # (v21 codes this crop's blocks directly: coding/direct.py)
    img = photo_crop("waterloo-serrano.png", (200, 150, 296, 246))
    data = bitswap_core.compress(img, smallest=False)
    box = container.unpack(data)
    a, _ = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == container.VERSION and a.palette is not None and a.values is None
    assert np.array_equal(a.palette, palette.colours(np.asarray(img)))
    assert bitswap_core.decompress(data).tobytes() == img.tobytes()
    bc = resolve(None).block_coder("bitswap")
    arr = np.asarray(img)
    (with_palette,), (without,) = adapt.choose(bc, [arr]), adapt.choose(bc, [arr], paletted=0)
    assert without.palette is None
    sizes = [len(encode_images(bc, [arr], adaptations=[x])[0].to_bytes()) + len(adapt.to_bytes(x))
             for x in (with_palette, without)]
    assert sizes[0] < 0.85 * sizes[1]


def test_a_photo_keeps_no_palette_and_a_constant_channel_round_trips() -> None:
    photo = photo_crop("waterloo-monarch.png", (0, 0, 64, 64))
    a, _ = adapt.from_bytes(container.unpack(bitswap_core.compress(photo, smallest=False)).payload, 4, 3)
    assert a.palette is None
    arr = np.asarray(photo).copy()
    arr[..., 2] = 40  # one value: B is certain (v12 wrote undecodable payloads for this)
    for paletted in (0, 1):
        bc = resolve(None).block_coder("bitswap")
        (fit,) = adapt.choose(bc, [arr], paletted=paletted)
        assert (fit.palette is not None) == bool(paletted) or fit.values is not None
    img = Image.fromarray(arr)
    assert bitswap_core.decompress(bitswap_core.compress(img, smallest=False)).tobytes() == img.tobytes()


def test_a_damaged_palette_never_gives_a_wrong_image(monkeypatch) -> None:
    monkeypatch.setattr(container, "VERSION", 20)  # (v21 codes this crop's blocks directly: coding/direct.py)
    img = photo_crop("waterloo-serrano.png", (200, 150, 248, 198))
    data = bitswap_core.compress(img, smallest=False)
    box = container.unpack(data)
    a, rest = adapt.from_bytes(box.payload, 4, 3)
    assert a.palette is not None
    extra = np.array([[1, 2, 3], [int(a.palette[0, 0]), int(a.palette[0, 1]), 255 - int(a.palette[0, 2])]],
                     dtype=np.uint8)
    damaged = [np.delete(a.palette, k, axis=0) for k in (0, len(a.palette) // 2, len(a.palette) - 1)]
    damaged += [np.unique(np.concatenate([a.palette, extra[i : i + 1]]), axis=0) for i in range(2)]
    for pal in damaged:
        payload = adapt.to_bytes(replace(a, palette=pal)) + rest
        try:
            out = bitswap_core.decompress(container.pack(replace(box, payload=payload)))
        except CorruptPayloadError:
            continue
        assert out.tobytes() == img.tobytes()


def test_v13_payload_decodes_and_the_encoder_still_writes_it(monkeypatch) -> None:
    """tests/data: the seventh default's container v13 payload of a 3 x 3-block serrano crop (a palette in
    its header) decodes exactly, and the encoder writes the same bytes again, in version 17's layout (the
    same payload with empty surprise and residual feedback sections at the end of its header, a block side
    byte of 0, 32x32, and a particles byte of 1 after the grid byte)."""
    stored = FIXTURE.read_bytes()
    box = container.unpack(stored)
    a, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == 13 and a.palette is not None
    img = photo_crop("waterloo-serrano.png", (200, 150, 296, 246))
    assert bitswap_core.decompress(stored).tobytes() == img.tobytes()
    monkeypatch.setattr(container, "VERSION", 17)  # (v18 splits phase (0,0) deeper: other bytes)
    new = container.unpack(bitswap_core.compress(img, find_by_id(box.model_id), smallest=False))
    head = box.payload[: len(box.payload) - len(rest)]
    assert new.version == 17 and new.payload == head + b"\0\0" + rest[:1] + b"\x00\x01" + rest[1:]
