"""The stack rANS coder: exact round trips, sampling, bed handling and corruption detection."""

import numpy as np
import pytest

from bitswap_core.coding.rans import AnsCoder, Table
from bitswap_core.coding.tables import logistic_cdf_table
from bitswap_core.errors import CorruptPayloadError


@pytest.fixture(scope="module")
def table():
    cdf = logistic_cdf_table(np.exp(np.linspace(np.log(0.12), np.log(96), 16)), 4, 256, 24)
    return Table(cdf, 256, 24)


def test_table_is_strictly_increasing_with_fixed_ends(table):
    t = table.cdf.astype(np.int64)
    assert np.all(np.diff(t, axis=1) >= 1)
    assert np.all(t[:, 0] == 0) and np.all(t[:, -1] == 2**24)


def _random_codes(table, n, seed):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, table.cdf.shape[0], n)
    bases = rng.integers(0, table.n, n)
    symbols = rng.integers(0, table.n, n)  # any symbol is codable under any (row, base)
    return symbols, rows, bases


@pytest.mark.parametrize("dithered", [True, False])
@pytest.mark.parametrize("n", [1, 7, 5000])
def test_push_pop_round_trip_through_bytes(table, n, dithered):
    symbols, rows, bases = _random_codes(table, n, n)
    enc = AnsCoder(64, dithered=dithered)
    half = n // 2
    enc.push(symbols[half:], rows[half:], bases[half:], table)
    enc.push(symbols[:half], rows[:half], bases[:half], table)
    dec = AnsCoder.from_bytes(enc.to_bytes(), 64, dithered=dithered)
    out = np.concatenate([dec.pop(rows[:half], bases[:half], table), dec.pop(rows[half:], bases[half:], table)])
    assert np.array_equal(out, symbols)
    dec.check_finished()


@pytest.mark.parametrize("dithered", [True, False])
def test_pop_then_push_restores_the_stack_exactly(table, dithered):
    """Bits-back relies on this: sampling with pop and pushing the sample back is the identity."""
    symbols, rows, bases = _random_codes(table, 3000, 1)
    c = AnsCoder(4096, dithered=dithered)
    c.push(symbols, rows, bases, table)
    before = c.to_bytes()
    sample = c.pop(rows[::-1].copy(), bases[::-1].copy(), table)
    c.push(sample, rows[::-1].copy(), bases[::-1].copy(), table)
    assert c.to_bytes() == before


def test_a_copy_codes_apart_and_become_takes_its_state(table):
    """The encoder tries a block two ways on copies (bitsback._push_led): pushing on a copy leaves the coder
    as it was, and become() makes the coder the copy it keeps."""
    symbols, rows, bases = _random_codes(table, 500, 3)
    c = AnsCoder(100)
    c.push(symbols[:250], rows[:250], bases[:250], table)
    before, other = c.to_bytes(), c.copy()
    other.push(symbols[250:], rows[250:], bases[250:], table)
    assert c.to_bytes() == before != other.to_bytes()
    c.become(other)
    assert c.to_bytes() == other.to_bytes()


def test_same_input_gives_same_bytes(table):
    symbols, rows, bases = _random_codes(table, 1000, 2)
    a, b = AnsCoder(100), AnsCoder(100)
    a.push(symbols, rows, bases, table)
    b.push(symbols, rows, bases, table)
    assert a.to_bytes() == b.to_bytes()


def test_truncated_or_damaged_streams_are_detected(table):
    symbols, rows, bases = _random_codes(table, 2000, 3)
    enc = AnsCoder(64)
    enc.push(symbols, rows, bases, table)
    data = enc.to_bytes()
    with pytest.raises(CorruptPayloadError):
        AnsCoder.from_bytes(data[:-3], 64)
    with pytest.raises(CorruptPayloadError):
        AnsCoder.from_bytes(b"\x00" * 5, 64)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x40
    dec = AnsCoder.from_bytes(bytes(bad), 64)
    with pytest.raises(CorruptPayloadError):
        out = dec.pop(rows, bases, table)
        dec.check_finished()
        assert np.array_equal(out, symbols)  # unreachable when the damage is detected


def test_empty_bed_runs_dry_with_a_clear_error(table):
    c = AnsCoder(0)
    with pytest.raises(CorruptPayloadError, match="ran out of bits"):
        c.pop(np.zeros(100, dtype=np.int64), np.zeros(100, dtype=np.int64), table)


def _pit(table, symbols, rows, bases, rng):
    """Randomised probability integral transform of symbols under their distributions (uniform iff the
    symbols are samples of them)."""
    w = table.width
    lo = table.cdf[rows, symbols - bases + w].astype(np.float64)
    hi = table.cdf[rows, symbols + 1 - bases + w].astype(np.float64)
    return (lo + rng.random(len(lo)) * (hi - lo)) / 2**24


@pytest.mark.parametrize("dithered", [True, False])
def test_bits_back_samples_stay_unbiased_after_a_mismatched_push(table, dithered):
    """Data pushed under a model it does not follow leaves skewed slots in the state; without dithering
    the next pops (bits back) read them and sample from a skewed distribution, which costs ~1-2% of the
    code length in the codec. Dithering keeps the popped samples' PIT uniform."""
    n = 20000
    rng = np.random.default_rng(3)
    wide = np.full(n, table.cdf.shape[0] - 4)  # a wide distribution (large scale)...
    bases = np.full(n, 128)
    symbols = np.full(n, 128)  # ...but every symbol sits at its centre
    c = AnsCoder(64, dithered=dithered)
    c.push(symbols, wide, bases, table)
    rows = rng.integers(table.cdf.shape[0] // 2, table.cdf.shape[0], n)
    pop_bases = rng.integers(100, 156, n)
    sample = c.pop(rows, pop_bases, table)
    middle = np.mean(np.abs(_pit(table, sample, rows, pop_bases, rng) - 0.5) < 0.1)  # 0.2 if unbiased
    if dithered:
        assert abs(middle - 0.2) < 0.02
    else:
        assert middle > 0.3  # the effect dithering removes: samples crowd the middle of their distribution


def test_bracketed_search_finds_the_symbol_a_full_search_finds(table):
    """pop's search starts from the coarse inverse CDF's bracket; it must find the symbol whose interval
    holds the target under the forced edges C(0) = 0, C(N) = total, at every base and quantile boundary."""
    from bitswap_core.coding.rans import DITHER_LEVELS, _find

    total, n, w = 1 << table.precision, table.n, table.width
    rng = np.random.default_rng(11)
    step = total // DITHER_LEVELS
    edges = np.concatenate([np.arange(DITHER_LEVELS) * step, np.arange(1, DITHER_LEVELS + 1) * step - 1])
    for r in range(table.cdf.shape[0]):
        for b in (0, 1, 5, 128, 250, 254, 255):
            k = np.arange(n + 1)
            cdf = np.where(k <= 0, 0, np.where(k >= n, total, table.cdf[r, np.clip(k - b + w, 0, 2 * w)]))
            targets = np.concatenate([edges, rng.integers(0, total, 64)])
            want = np.searchsorted(cdf, targets, side="right") - 1
            got = [_find(table.cdf, table.inv, r, b, w, n, np.uint64(total), np.uint64(t), table.precision)
                   for t in targets]
            assert np.array_equal(got, want), (r, b)


def _random_spikes(table, symbols, seed):
    """Spike symbols (half of them the coded symbol, as on a graphic) and levels, including the extremes."""
    rng = np.random.default_rng(seed)
    n = len(symbols)
    value = np.where(rng.random(n) < 0.5, symbols, rng.integers(0, table.n, n))
    level = rng.integers(0, 256, n)
    value[:4], level[:4] = (0, table.n - 1, 0, 7), 255
    return value, level


def _random_two_spikes(table, symbols, seed):
    """As _random_spikes, plus a second spike (a third of them the coded symbol, some absent: -1) whose
    level keeps the sum <= 255."""
    rng = np.random.default_rng(seed + 1)
    value, level = _random_spikes(table, symbols, seed)
    n = len(symbols)
    value2 = np.where(rng.random(n) < 0.33, symbols, rng.integers(-1, table.n, n))
    value2 = np.where(value2 == value, -1, value2)
    level2 = (rng.random(n) * (256 - level)).astype(np.int64).clip(0, 255 - level)
    value2[4:8], level[4:8], level2[4:8] = (1, table.n - 2, 9, 3), 0, 255
    return value, level, value2, level2


@pytest.mark.parametrize("dithered", [True, False])
@pytest.mark.parametrize("two", [False, True])
def test_spiked_distributions_round_trip_and_bits_back_restores_the_stack(table, dithered, two):
    symbols, rows, bases = _random_codes(table, 5000, 4)
    spikes = (_random_two_spikes if two else _random_spikes)(table, symbols, 5)
    enc = AnsCoder(64, dithered=dithered)
    enc.push(symbols, rows, bases, table, spikes)
    dec = AnsCoder.from_bytes(enc.to_bytes(), 64, dithered=dithered)
    assert np.array_equal(dec.pop(rows, bases, table, spikes), symbols)
    dec.check_finished()
    before = enc.to_bytes()  # pop then push with the same spikes is the identity
    flip = tuple(t[::-1].copy() for t in spikes)
    sample = enc.pop(rows[::-1].copy(), bases[::-1].copy(), table, flip)
    enc.push(sample, rows[::-1].copy(), bases[::-1].copy(), table, flip)
    assert enc.to_bytes() == before


def test_a_spike_moves_its_share_of_the_mass_and_keeps_every_symbol_codable(table):
    """P'(k) = (1 - L/256) P(k) + L/256 [k = v] up to integer rounding; every symbol keeps a frequency
    >= 1 (so any pixel value can still be coded), and the probabilities still sum to one."""
    from bitswap_core.coding.rans import cost_bits_each

    k = np.arange(table.n)
    for row, base, v in ((0, 100, 100), (40, 3, 250), (63, 255, 0), (20, 0, 255)):
        r, b = np.full(table.n, row), np.full(table.n, base)
        plain = 2.0 ** -cost_bits_each(k, r, b, table)
        for level in (0, 1, 128, 255):
            p = 2.0 ** -cost_bits_each(k, r, b, table, (np.full(table.n, v), np.full(table.n, level)))
            assert abs(p.sum() - 1) < 1e-9 and p.min() >= 2.0**-table.precision
            want = (1 - level / 256) * plain + np.where(k == v, level / 256, 0)
            assert np.allclose(p, want, rtol=0, atol=table.n * 2.0**-table.precision)


def test_two_spikes_share_the_freed_mass_by_their_levels(table):
    """P'(k) = (1 - (L1 + L2)/256) P(k) + L1/256 [k = v1] + L2/256 [k = v2] up to integer rounding; a
    second spike of level 0, or with no symbol (-1), leaves the one-spike distribution bit for bit."""
    from bitswap_core.coding.rans import cost_bits_each

    k = np.arange(table.n)
    for row, base, v, v2 in ((0, 100, 100, 101), (40, 3, 250, 3), (63, 255, 0, 255)):
        r, b = np.full(table.n, row), np.full(table.n, base)
        plain = 2.0 ** -cost_bits_each(k, r, b, table)
        for l1, l2 in ((0, 200), (128, 127), (1, 1), (200, 30)):
            full = lambda t: np.full(table.n, t)  # noqa: E731
            p = 2.0 ** -cost_bits_each(k, r, b, table, (full(v), full(l1), full(v2), full(l2)))
            assert abs(p.sum() - 1) < 1e-9 and p.min() >= 2.0**-table.precision
            want = (1 - (l1 + l2) / 256) * plain + np.where(k == v, l1 / 256, 0) + np.where(k == v2, l2 / 256, 0)
            assert np.allclose(p, want, rtol=0, atol=table.n * 2.0**-table.precision)
            one = cost_bits_each(k, r, b, table, (full(v), full(l1)))
            assert np.array_equal(cost_bits_each(k, r, b, table, (full(v), full(l1), full(v2), full(0))), one)
            assert np.array_equal(cost_bits_each(k, r, b, table, (full(v), full(l1), full(-1), full(l2))), one)
    with pytest.raises(ValueError, match="add up"):
        cost_bits_each(k, r, b, table, (full(v), full(200), full(v2), full(56)))


def test_spiked_search_finds_the_symbol_a_full_search_finds(table):
    from bitswap_core.coding.rans import _cdf_mixed, _find_mixed, _spike_masses

    total, n, w = np.uint64(1 << table.precision), table.n, table.width
    rng = np.random.default_rng(12)
    for r in range(0, table.cdf.shape[0], 5):
        for b, v, level, v2, level2 in ((0, 0, 255, -1, 0), (128, 128, 200, 127, 55), (250, 3, 1, 250, 200),
                                        (5, 255, 128, 0, 1), (77, 80, 0, -1, 0), (77, 80, 0, 81, 254)):
            a, e1, e2 = _spike_masses(n, total, level, level2)
            cdf = np.array([_cdf_mixed(table.cdf, r, k, b, w, n, total, v, a, e1, v2, e2) for k in range(n + 1)],
                           dtype=np.int64)
            assert cdf[0] == 0 and cdf[-1] == total and np.all(np.diff(cdf) >= 1)
            targets = np.concatenate([cdf[:-1], cdf[1:] - 1, rng.integers(0, int(total), 64)])
            want = np.searchsorted(cdf, targets, side="right") - 1
            got = [_find_mixed(table.cdf, table.inv, r, b, w, n, total, np.uint64(t), table.precision, v, a, e1,
                               v2, e2) for t in targets]
            assert np.array_equal(got, want), (r, b, v, level, v2, level2)


# ---- cells (the first block's coarse latents) ----
@pytest.mark.parametrize("k", [1, 3, 16, 32, 64, 128])
def test_cells_partition_the_alphabet_and_their_values_lie_inside(table, k):
    from bitswap_core.coding.rans import cell_index, cell_value

    s = np.arange(table.n)
    cells = cell_index(s, table.n, k)
    assert cells[0] == 0 and np.all(np.diff(cells) >= 0) and np.all(np.diff(cells) <= 1)
    assert np.bincount(cells).max() <= k  # runs of at most k symbols
    assert cells[table.n // 2] == cells[table.n // 2 - k // 2] != cells[table.n // 2 - k // 2 - 1] or k == 1
    values = cell_value(np.arange(cells[-1] + 1), table.n, k)
    assert np.array_equal(cell_index(values, table.n, k), np.arange(cells[-1] + 1))
    assert values[cells[table.n // 2]] == table.n // 2  # the middle cell stands for the middle symbol


@pytest.mark.parametrize("dithered", [True, False])
@pytest.mark.parametrize("k", [1, 7, 32, 128])
def test_cells_round_trip_with_symbols_around_them_and_cost_what_they_estimate(table, k, dithered):
    from bitswap_core.coding.rans import cell_cost_bits, cell_index

    symbols, rows, bases = _random_codes(table, 3000, k)
    cells = cell_index(symbols, table.n, k)
    enc = AnsCoder(64, dithered=dithered)
    enc.push(symbols[:100], rows[:100], bases[:100], table)
    before = enc.num_bits()
    enc.push_cells(cells, rows, bases, table, k)
    enc.push(symbols[100:200], rows[100:200], bases[100:200], table)
    dec = AnsCoder.from_bytes(enc.to_bytes(), 64, dithered=dithered)
    assert np.array_equal(dec.pop(rows[100:200], bases[100:200], table), symbols[100:200])
    assert np.array_equal(dec.pop_cells(rows, bases, table, k), cells)
    assert np.array_equal(dec.pop(rows[:100], bases[:100], table), symbols[:100])
    dec.check_finished()
    ideal = cell_cost_bits(cells, rows, bases, table, k)
    grown = AnsCoder(64, dithered=dithered)
    grown.push(symbols[:100], rows[:100], bases[:100], table)
    grown.push_cells(cells, rows, bases, table, k)
    assert abs((grown.num_bits() - before) - ideal) < 0.01 * ideal + 64


def test_cells_of_one_symbol_are_the_symbols(table):
    from bitswap_core.coding.rans import cell_index

    symbols, rows, bases = _random_codes(table, 500, 3)
    a, b = AnsCoder(64), AnsCoder(64)
    a.push(symbols, rows, bases, table)
    b.push_cells(cell_index(symbols, table.n, 1), rows, bases, table, 1)
    assert a.to_bytes() == b.to_bytes()


def test_cell_width_must_leave_two_cells(table):
    symbols, rows, bases = _random_codes(table, 4, 4)
    for k in (0, table.n // 2 + 1):
        with pytest.raises(ValueError, match="cell width"):
            AnsCoder(64).push_cells(symbols, rows, bases, table, k)
        with pytest.raises(ValueError, match="cell width"):
            AnsCoder(64).pop_cells(rows, bases, table, k)


def test_popping_cells_from_a_dry_stack_is_corrupt(table):
    _, rows, bases = _random_codes(table, 200, 5)
    with pytest.raises(CorruptPayloadError):
        AnsCoder(0).pop_cells(rows, bases, table, 8)


@pytest.mark.parametrize("dithered", [True, False])
def test_a_certain_symbol_between_others_costs_nothing_and_keeps_the_stack_exact(table, dithered):
    """A value cell holding the whole alphabet (a channel with one value, value_cells) has f = 2**precision,
    which rANS cannot code (f << shift overflows the 64-bit state, and every symbol after it came back
    wrong: container v12 payloads of images with a constant channel did not decode). Such a symbol is
    certain: push and pop skip it."""
    from bitswap_core.coding.rans import cost_bits_each, value_cells

    one = value_cells(np.arange(table.n) == 40)
    symbols, rows, bases = _random_codes(table, 300, 3)
    coder = AnsCoder(16, dithered=dithered)
    coder.push(symbols[:100], rows[:100], bases[:100], table)
    coder.push(np.full(50, 40), rows[:50], bases[:50], table, cells=one)
    coder.push(symbols[100:], rows[100:], bases[100:], table)
    assert (cost_bits_each(np.full(50, 40), rows[:50], bases[:50], table, cells=one) == 0).all()
    dec = AnsCoder.from_bytes(coder.to_bytes(), 16, dithered=dithered)
    assert np.array_equal(dec.pop(rows[100:], bases[100:], table), symbols[100:])
    assert (dec.pop(rows[:50], bases[:50], table, cells=one) == 40).all()
    assert np.array_equal(dec.pop(rows[:100], bases[:100], table), symbols[:100])
    dec.check_finished()
