"""Value cells (container v12): an image whose channels use only some of the 256 values codes each pixel
with the mass of its value's cell; exact, never costlier per pixel, and checked on decode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_crop, random_table
from PIL import Image

import bitswap_core
from bitswap_core import container
from bitswap_core.coding import adapt
from bitswap_core.coding.bitsback import encode_images
from bitswap_core.coding.rans import AnsCoder, Table, cost_bits, cost_bits_each, value_cells
from bitswap_core.errors import CorruptPayloadError
from bitswap_core.registry import find_by_id, resolve

rng = np.random.default_rng(11)


def _table() -> Table:
    return random_table(rng)


@pytest.mark.parametrize("seed", range(4))
def test_cells_partition_the_alphabet_around_the_kept_values(seed: int) -> None:
    mask = np.random.default_rng(seed).random(256) < [0.02, 0.3, 0.7, 0.99][seed]
    mask[np.random.default_rng(seed).integers(0, 256)] = True
    starts, ends, value = value_cells(mask)
    kept = np.flatnonzero(mask)
    assert np.array_equal(np.unique(value), kept)
    for s in range(256):
        assert starts[s] <= s < ends[s] and starts[s] <= value[s] < ends[s] and mask[value[s]]
        assert abs(value[s] - s) == np.abs(kept - s).min()  # the nearest kept value (the lower on a tie)
    assert starts[0] == 0 and ends[255] == 256
    with pytest.raises(ValueError, match="at least one"):
        value_cells(np.zeros(256, bool))


def test_push_pop_with_cells_and_spikes_round_trip_and_cost_less() -> None:
    table = _table()
    mask = rng.random(256) < 0.4
    mask[[3, 200]] = True
    cells, kept = value_cells(mask), np.flatnonzero(mask)
    n = 4000
    sym = rng.choice(kept, n)
    rows = rng.integers(0, 5, n)
    bases = np.clip(sym + rng.integers(-5, 6, n), 0, table.n - 1)  # a distribution's mean symbol
    spikes = (rng.choice(kept, n), rng.integers(0, 200, n))
    plain, celled = AnsCoder(32), AnsCoder(32)
    plain.push(sym, rows, bases, table, spikes)
    celled.push(sym, rows, bases, table, spikes, cells)
    assert celled.num_bits() < plain.num_bits()
    each = cost_bits_each(sym, rows, bases, table, spikes, cells)
    assert (each <= cost_bits_each(sym, rows, bases, table, spikes) + 1e-9).all()
    assert abs(celled.num_bits() - each.sum()) < 0.01 * each.sum() + 200
    assert np.array_equal(celled.pop(rows, bases, table, spikes, cells), sym)
    celled.check_finished()


def test_a_full_mask_codes_as_no_cells_and_unkept_symbols_are_refused() -> None:
    table = _table()
    sym, rows, bases = rng.integers(0, 256, 500), rng.integers(0, 5, 500), rng.integers(0, 256, 500)
    a, b = AnsCoder(16), AnsCoder(16)
    a.push(sym, rows, bases, table)
    b.push(sym, rows, bases, table, cells=value_cells(np.ones(256, bool)))
    assert a.to_bytes() == b.to_bytes()
    full = value_cells(np.ones(256, bool))
    assert cost_bits(sym, rows, bases, table) == cost_bits(sym, rows, bases, table, cells=full)
    mask = np.ones(256, bool)
    mask[sym[0]] = False
    with pytest.raises(ValueError, match="not one of the kept values"):
        AnsCoder(16).push(sym, rows, bases, table, cells=value_cells(mask))
    with pytest.raises(ValueError, match="cells must be"):
        AnsCoder(16).push(sym, rows, bases, table, cells=value_cells(mask)[:, :128])


def _combed(box=(0, 0, 64, 64)) -> Image.Image:
    """A photo crop whose channels hold even values only, as a LUT-stretched scan does."""
    return Image.fromarray(np.asarray(photo_crop("waterloo-monarch.png", box)) & 0xFE)


def test_a_combed_photo_gets_value_masks_and_codes_smaller_and_exact() -> None:
    img = _combed()
    data = bitswap_core.compress(img, smallest=False)
    box = container.unpack(data)
    a, _ = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == container.VERSION and a.values is not None
    held = [np.unique(np.asarray(img)[..., c]) for c in range(3)]
    for c in range(3):
        assert a.values[c].all() or np.array_equal(np.flatnonzero(a.values[c]), held[c])
    assert bitswap_core.decompress(data).tobytes() == img.tobytes()
    bc = resolve(None).block_coder("bitswap")
    arr = np.asarray(img)
    (masked,), (plain,) = adapt.choose(bc, [arr]), adapt.choose(bc, [arr], values=0)
    assert masked.values is not None and plain.values is None
    sizes = [len(encode_images(bc, [arr], adaptations=[x])[0].to_bytes()) for x in (masked, plain)]
    assert sizes[0] < 0.9 * sizes[1]


def test_a_full_range_photo_keeps_no_mask() -> None:
    noisy = np.asarray(photo_crop("waterloo-monarch.png", (0, 0, 64, 64))).astype(np.int64)
    noisy = (noisy + rng.integers(-2, 3, noisy.shape)) % 256  # every value in every channel, roughly
    arr = noisy.astype(np.uint8)
    arr.reshape(-1, 3)[:256] = np.arange(256)[:, None]  # each channel holds all 256 values
    data = bitswap_core.compress(Image.fromarray(arr), smallest=False)
    a, _ = adapt.from_bytes(container.unpack(data).payload, 4, 3)
    assert a.values is None


def test_value_section_round_trips_and_malformed_ones_are_corrupt() -> None:
    values = np.ones((3, 256), bool)
    values[1, ::3] = False
    a = adapt.Adaptation(values=values)
    head = adapt.to_bytes(a, 18)
    assert head[-37] == 0b010 and len(head) == len(adapt.to_bytes(adapt.NONE, 18)) + 32
    back, rest = adapt.from_bytes(head + b"tail", 4, 3, 18)
    assert np.array_equal(back.values, values) and rest == b"tail"
    assert adapt.from_bytes(adapt.to_bytes(adapt.NONE, 18), 4, 3, 18)[0].values is None
    with pytest.raises(ValueError, match="cannot hold value masks"):
        adapt.to_bytes(a, 11)
    base = head[:-37]
    for bad, match in ((base, "value section is missing"), (base + b"\x08", "name channels"),
                       (base + b"\x02" + bytes(31), "inside a value mask"),
                       (base + b"\x01" + bytes(32), "keeps no value")):
        with pytest.raises(CorruptPayloadError, match=match):
            adapt.from_bytes(bad, 4, 3, 18)


def test_a_damaged_value_mask_never_gives_a_wrong_image() -> None:
    img = _combed((0, 0, 40, 40))
    data = bitswap_core.compress(img, smallest=False)
    box = container.unpack(data)
    a, rest = adapt.from_bytes(box.payload, 4, 3)
    assert a.values is not None
    for c, v in [(0, 1), (0, 255), (1, 128), (2, 2)]:
        values = a.values.copy()
        values[c, v] = not values[c, v]
        if not values[c].any():
            continue
        payload = adapt.to_bytes(replace(a, values=values)) + rest
        damaged = container.pack(replace(box, payload=payload))
        try:
            out = bitswap_core.decompress(damaged)
        except CorruptPayloadError:
            continue
        assert out.tobytes() == img.tobytes()


def test_v12_payload_decodes_and_the_encoder_still_writes_it() -> None:
    """tests/data: the seventh default's container v12 payload of the 3 x 3-block monarch crop with even
    values only (value masks in its header) decodes exactly, and the encoder, without v13's palette, writes
    the same header and ANS bytes again."""
    from bitswap_core.coding import first_block

    stored = (Path(__file__).parent / "data" / "default-42aaf5c8-monarch-combed-96x96-v12.bsw").read_bytes()
    box = container.unpack(stored)
    a, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == 12 and a.values is not None
    img = _combed((64, 64, 160, 160))
    assert bitswap_core.decompress(stored).tobytes() == img.tobytes()
    bc = find_by_id(box.model_id).block_coder("bitswap", container.split_for(box.version))
    arr = np.asarray(img)
    (again,) = adapt.choose(bc, [arr], paletted=0, residuals=0)
    assert adapt.to_bytes(again, 12) == box.payload[: len(box.payload) - len(rest)]
    grids = first_block.choose(bc, [arr], [again])
    assert grids == [rest[0]]
    assert encode_images(bc, [arr], adaptations=[again], first_grids=grids)[0].to_bytes() == rest[1:]
