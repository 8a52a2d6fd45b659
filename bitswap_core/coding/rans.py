"""A stack rANS coder (64-bit state, 32-bit words) over shift-invariant CDF tables, compiled with numba.

push() encodes symbols so that a later pop() with the same distributions returns them in array order; pop()
on fresh bits *samples* from the distribution, which is what bits-back coding needs. A distribution can carry
*spikes*: a symbol v with a weight level L (1..255) that moves L/256 of the probability mass onto v, and
optionally a second symbol v2 with its own level (the mixtures of coding/adapt.py), in exact integer
arithmetic, so push and pop agree on every machine. A distribution can also be *celled* (value_cells):
when an image holds only some values, each is coded with the mass of its cell, itself and the left-out
values nearest to it (or, GroupedCells, a table of cells per symbol). The stack starts on a
deterministic pseudo-random bed of "initial bits" so the same image always gives the same bytes; the bed's
untouched bottom is not stored (its length is), and the decoder checks that it gets the bed back exactly.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

import numba
import numpy as np

from bitswap_core.errors import CorruptPayloadError

_WORD = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)
_L = np.uint64(1 << 32)


@numba.njit(cache=True, inline="always")
def _cdf(table, r, k, base, width, n, total):
    if k <= 0:
        return np.uint64(0)
    if k >= n:
        return np.uint64(total)
    return np.uint64(table[r, k - base + width])


SPIKE_BITS = 8  # spike weight levels L in [0, 256): L / 256 of the mass moves onto the spike symbol
_SPIKE_ONE = 1 << SPIKE_BITS


@numba.njit(cache=True, inline="always")
def _spike_masses(n, total, l1, l2):
    """(a, e1, e2) of spike levels l1, l2 (l1 + l2 < 256): the table's mass is scaled by a / 256, a = 256 - l1
    - l2, and the mass that frees (all but what keeps every symbol's frequency >= 1) goes to the two spike
    symbols in proportion l1 : l2. One spike (l2 = 0) gets all of it."""
    a = np.uint64(_SPIKE_ONE - l1 - l2)
    free = total - np.uint64(n) - (((total - np.uint64(n)) * a) >> np.uint64(SPIKE_BITS))
    e2 = free * np.uint64(l2) // np.uint64(l1 + l2) if l2 > 0 else np.uint64(0)
    return a, free - e2, e2


@numba.njit(cache=True, inline="always")
def _cdf_mixed(table, r, k, base, width, n, total, v, a, e1, v2, e2):
    """C'(k) = floor((C(k) - k) * a / 256) + k (+ e1 past the spike symbol v, + e2 past the second, v2).

    Every symbol keeps frequency >= 1 (C(k) - k is non-decreasing because C's steps are >= 1), C'(0) = 0,
    C'(n) = total, and the spike symbols get the freed mass: an exact integer mixture of the table's
    distribution with point masses on v and v2 (_spike_masses). a = 256 is the table's distribution."""
    c = _cdf(table, r, k, base, width, n, total)
    if a == _SPIKE_ONE:
        return c
    kk = np.uint64(k)
    out = (((c - kk) * a) >> np.uint64(SPIKE_BITS)) + kk
    if k > v:
        out += e1
    if k > v2:
        out += e2
    return out


_GOLD = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


DITHER_BITS = 6
DITHER_LEVELS = 1 << DITHER_BITS  # rotation targets per distribution: quantiles j / 64 (also pop's search bracket)


@numba.njit(cache=True, inline="always")
def _rotation_start(i, r, b, inv, n, dithered):
    """The symbol k0 where symbol i's intervals start: 0 without dithering; with it, the symbol holding a
    pseudo-random quantile of its distribution (row r, base b), looked up in the coarse inverse CDF.

    Rotating the intervals makes the slot a symbol leaves in the state uniform whatever the symbol's true
    distribution, so the bits-back pops that read it later sample from their own distribution, not from
    the pushed model's mismatch (without this the latent samples drift and the code grows ~1-2% over the
    -ELBO). The offset depends only on (i, r, b), so push and pop agree.
    """
    if not dithered:
        return 0
    z = np.uint64(i) * _GOLD + np.uint64(r) * _MIX1 + np.uint64(b) * _MIX2
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    k0 = b + inv[r, np.int64(z >> np.uint64(58))]
    return min(max(k0, 0), n - 1)


@numba.njit(cache=True, inline="always")
def _find(table, inv, r, b, width, n, total, target, precision):
    """The symbol k whose interval [C(k), C(k+1)) holds target.

    The coarse inverse CDF brackets the search: target lies between quantiles j / 64 and (j + 1) / 64, so k
    lies between the symbols holding them (clamped to the alphabet, as the forced edges C(0) = 0 and
    C(N) = total demand). A peaked distribution then needs one or two probes instead of log2(N); the
    symbol found is the same, so this changes no bytes."""
    j = np.int64(target >> np.uint64(precision - DITHER_BITS))
    lo_k = min(max(b + inv[r, j], 0), n - 1)
    hi_k = n if j == DITHER_LEVELS - 1 else min(max(b + inv[r, j + 1], 0), n - 1) + 1
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) >> 1
        if _cdf(table, r, mid, b, width, n, total) <= target:
            lo_k = mid
        else:
            hi_k = mid
    return lo_k


@numba.njit(cache=True, inline="always")
def _find_mixed(table, inv, r, b, width, n, total, target, precision, v, a, e1, v2, e2):
    """_find under the spiked CDF C': the spikes' intervals first, then a plain binary search between."""
    if a == _SPIKE_ONE:
        return _find(table, inv, r, b, width, n, total, target, precision)
    lo_k, hi_k = 0, n
    for t in range(2):  # each spike symbol inside the bracket: its interval, or the side target lies on
        k = v if t == 0 else v2
        if not lo_k <= k < hi_k or (t == 1 and e2 == 0):
            continue
        if target < _cdf_mixed(table, r, k, b, width, n, total, v, a, e1, v2, e2):
            hi_k = k
        elif target >= _cdf_mixed(table, r, k + 1, b, width, n, total, v, a, e1, v2, e2):
            lo_k = k + 1
        else:
            return k
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) >> 1
        if _cdf_mixed(table, r, mid, b, width, n, total, v, a, e1, v2, e2) <= target:
            lo_k = mid
        else:
            hi_k = mid
    return lo_k


@numba.njit(cache=True, inline="always")
def _push_one(x, buf, m, f, c, shift, p):
    """Encode one symbol of frequency f at cumulative offset c into state x, spilling a word first if needed."""
    if x >= (f << shift):
        buf[m] = np.uint32(x & _LOW)
        m += 1
        x >>= _WORD
    return ((x // f) << p) + (x % f) + c, m


@numba.njit(cache=True, inline="always")
def _pop_one(x, buf, m, min_m, f, slot, c, p):
    """Remove the symbol of frequency f at offset c whose slot x held, refilling a word if needed; ok is False
    when the stack ran dry. min_m tracks the deepest word read (what the payload must store)."""
    x = f * (x >> p) + slot - c
    if x < _L:
        if m == 0:
            return x, m, min_m, False
        m -= 1
        x = (x << _WORD) | np.uint64(buf[m])
        if m < min_m:
            min_m = m
    return x, m, min_m, True


@numba.njit(cache=True)
def _push(state, buf, m, symbols, rows, bases, table, inv, width, n, precision, dithered, spikes, mixed, cells,
          groups, grouped):
    """spikes (4, N): per symbol its spike symbol, level, second spike symbol, level (_spike_arrays); cells
    (G, 3, n): per cell table and symbol its value cell's start, end and the value that stands for it
    (value_cells); groups (N,): each symbol's table when grouped, else table 0 for all (_cell_arrays)."""
    x = np.uint64(state)
    total = np.uint64(1 << precision)
    shift = np.uint64(64 - precision)
    p = np.uint64(precision)
    v, v2, a, e1, e2 = 0, 0, np.uint64(_SPIKE_ONE), np.uint64(0), np.uint64(0)
    for i in range(symbols.shape[0] - 1, -1, -1):
        k, r, b = symbols[i], rows[i], bases[i]
        if mixed:
            v, v2 = spikes[0, i], spikes[2, i]
            a, e1, e2 = _spike_masses(n, total, spikes[1, i], spikes[3, i])
        cl = cells[groups[i] if grouped else 0]
        lo = _cdf_mixed(table, r, cl[0, k], b, width, n, total, v, a, e1, v2, e2)
        f = _cdf_mixed(table, r, cl[1, k], b, width, n, total, v, a, e1, v2, e2) - lo
        if f == total:  # a cell holding every symbol: the value is certain and costs nothing (nor could
            continue  # rANS code it: f << shift would overflow the 64-bit state)
        k0 = cl[0, _rotation_start(i, r, b, inv, n, dithered)]
        c0 = _cdf_mixed(table, r, k0, b, width, n, total, v, a, e1, v2, e2)
        c = lo - c0 if cl[0, k] >= k0 else lo + total - c0
        x, m = _push_one(x, buf, m, f, c, shift, p)
    return x, m


@numba.njit(cache=True)
def _pop(state, buf, m, min_m, out, rows, bases, table, inv, width, n, precision, dithered, spikes, mixed, cells,
         groups, grouped):
    """Returns (state, m, min_m, ok); ok is False when the stack ran dry (corrupt or exhausted bits)."""
    x = np.uint64(state)
    total = np.uint64(1 << precision)
    mask = total - np.uint64(1)
    p = np.uint64(precision)
    v, v2, a, e1, e2 = 0, 0, np.uint64(_SPIKE_ONE), np.uint64(0), np.uint64(0)
    for i in range(out.shape[0]):
        r, b = rows[i], bases[i]
        if mixed:
            v, v2 = spikes[0, i], spikes[2, i]
            a, e1, e2 = _spike_masses(n, total, spikes[1, i], spikes[3, i])
        slot = x & mask
        cl = cells[groups[i] if grouped else 0]
        k0 = cl[0, _rotation_start(i, r, b, inv, n, dithered)]
        c0 = _cdf_mixed(table, r, k0, b, width, n, total, v, a, e1, v2, e2)
        # the symbol holding the target names its cell; the cell's value is what was pushed
        k = cl[2, _find_mixed(table, inv, r, b, width, n, total, (slot + c0) & mask, precision, v, a, e1, v2, e2)]
        lo = _cdf_mixed(table, r, cl[0, k], b, width, n, total, v, a, e1, v2, e2)
        f = _cdf_mixed(table, r, cl[1, k], b, width, n, total, v, a, e1, v2, e2) - lo
        out[i] = k
        if f == total:  # certain: pushed as nothing (see _push)
            continue
        c = lo - c0 if cl[0, k] >= k0 else lo + total - c0
        x, m, min_m, ok = _pop_one(x, buf, m, min_m, f, slot, c, p)
        if not ok:
            return x, m, min_m, False
    return x, m, min_m, True


# ---- grid cells: a coarse alphabet of runs of k symbols (the first block's latents, coding/first_block.py) ----
def cell_index(symbols: np.ndarray, n: int, k: int) -> np.ndarray:
    """The cell (runs of k symbols, edges at n/2 - k/2 + k m) holding each symbol in [0, n)."""
    first = (n // 2 - k // 2) % k or k
    s = np.asarray(symbols, dtype=np.int64)
    return np.where(s < first, 0, (s - first) // k + 1)


def cell_value(cells: np.ndarray, n: int, k: int) -> np.ndarray:
    """The symbol that stands for each cell: n/2 + k (j - middle cell), clamped to [0, n) (inside the cell)."""
    mid = int(cell_index(np.array([n // 2]), n, k)[0])
    return np.clip(n // 2 + k * (np.asarray(cells, dtype=np.int64) - mid), 0, n - 1)


@functools.lru_cache(maxsize=64)
def grid_cells(n: int, k: int) -> np.ndarray:
    """The grid of runs of k symbols as the coder's (3, n) cells (see value_cells): per symbol its cell's
    start, end and the symbol that stands for the cell (cell_value). Read-only: it is shared."""
    j = cell_index(np.arange(n), n, k)
    first = (n // 2 - k // 2) % k or k
    starts = np.where(j == 0, 0, np.minimum(first + (j - 1) * k, n))
    ends = np.minimum(first + j * k, n)
    out = np.stack([starts, ends, cell_value(j, n, k)]).astype(np.int64)
    out.flags.writeable = False
    return out


def cell_cost_bits(cells: np.ndarray, rows: np.ndarray, bases: np.ndarray, table: Table, k: int) -> float:
    """-sum log2 of each cell's mass under its distribution: what push_cells stores, ideally."""
    return cost_bits(cell_value(cells, table.n, k), rows, bases, table, cells=grid_cells(table.n, k))


_NO_SPIKE = np.zeros((4, 1), dtype=np.int64)


def _spike_arrays(spikes, count: int) -> tuple[np.ndarray, bool]:
    """((4, count) int64 rows: spike symbol, level, second spike symbol, level; mixed?) for the kernels,
    from spikes = None, (symbols, levels) or (symbols, levels, second symbols, second levels). A second
    spike whose symbol is negative (none) gets level 0; levels must be >= 0 and add up to at most 255."""
    if spikes is None:
        return _NO_SPIKE, False
    if len(spikes) not in (2, 4):
        raise ValueError("spikes must be (symbols, levels) or (symbols, levels, symbols2, levels2)")
    out = np.zeros((4, count), dtype=np.int64)
    out[2] = -1
    for row, t in enumerate(spikes):
        t = np.asarray(t, dtype=np.int64)
        if t.shape != (count,):
            raise ValueError("spike symbols and levels must have one entry per symbol")
        out[row] = t
    out[3] = np.where(out[2] >= 0, out[3], 0)
    if out[1].min() < 0 or out[3].min() < 0 or (out[1] + out[3]).max() >= _SPIKE_ONE:
        raise ValueError(f"spike levels must be >= 0 and add up to less than {_SPIKE_ONE}")
    return out, True


# ---- value cells: an image's channel uses only some of the 256 values (scanner LUTs, bit-depth expansion) ----
def value_cells(mask: np.ndarray) -> np.ndarray:
    """(3, n) int64 for a non-empty bool mask over n symbols: per symbol the start and end of its cell and the
    kept value in it. Each kept value's cell runs from just past the midpoint to the kept value before it
    up to the midpoint to the next one, so the values the mask leaves out give their mass to the nearest
    kept value (the lower one on a tie) and every cell holds exactly one kept value."""
    mask = np.asarray(mask, dtype=bool)
    kept = np.flatnonzero(mask)
    if not len(kept):
        raise ValueError("a value mask must keep at least one value")
    n = len(mask)
    starts = np.concatenate([[0], (kept[:-1] + kept[1:]) // 2 + 1])
    ends = np.concatenate([starts[1:], [n]])
    owner = np.searchsorted(starts, np.arange(n), side="right") - 1
    return np.stack([starts[owner], ends[owner], kept[owner]]).astype(np.int64)


class GroupedCells(NamedTuple):
    """Cells that differ from symbol to symbol: tables (G, 3, n), each like value_cells' (3, n), and per
    symbol the table it is coded with. Why: in a palette image the values a channel may take depend on the
    channels coded before it at the same pixel (coding/palette.py)."""

    tables: np.ndarray
    groups: np.ndarray


_IDENTITY: dict[int, np.ndarray] = {}
_NO_GROUPS = np.zeros(1, dtype=np.int64)


def _cell_arrays(cells: np.ndarray | GroupedCells | None, n: int, symbols: np.ndarray | None = None,
                 count: int | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """The kernels' (cell tables (G, 3, n), groups, grouped): each symbol its own cell when cells is None,
    one table for all for a (3, n) array, a table per symbol for GroupedCells (count symbols); checks that
    the symbols to push are kept values of their tables."""
    if cells is None:
        if n not in _IDENTITY:
            k = np.arange(n, dtype=np.int64)
            _IDENTITY[n] = np.stack([k, k + 1, k])[None]
        return _IDENTITY[n], _NO_GROUPS, False
    if isinstance(cells, GroupedCells):
        tables, groups = cells
        count = len(symbols) if symbols is not None else count
        if tables.ndim != 3 or tables.shape[1:] != (3, n) or tables.dtype != np.int64 or not len(tables):
            raise ValueError(f"grouped cell tables must be a (G, 3, {n}) int64 array of value_cells")
        if groups.shape != (count,) or groups.dtype != np.int64:
            raise ValueError(f"grouped cells need one int64 table index per symbol ({count})")
        if count and (groups.min() < 0 or groups.max() >= len(tables)):
            raise ValueError("a symbol's cell table index is out of range")
        if symbols is not None and count and not np.array_equal(tables[groups, 2, symbols], symbols):
            raise ValueError("a symbol to code with value cells is not one of the kept values")
        return np.ascontiguousarray(tables), np.ascontiguousarray(groups), True
    if cells.shape != (3, n) or cells.dtype != np.int64:
        raise ValueError(f"cells must be a (3, {n}) int64 array from value_cells")
    if symbols is not None and len(symbols) and not np.array_equal(cells[2, symbols], symbols):
        raise ValueError("a symbol to code with value cells is not one of the kept values")
    return cells[None], _NO_GROUPS, False


def _grid_width(k: int, n: int) -> int:
    if not 1 <= k <= n // 2:  # two cells at least, so no cell holds the whole mass
        raise ValueError(f"cell width {k} is outside 1..{n // 2}")
    return k


def _splitmix_words(n: int, seed: int = 0x5EED_B175_A4C0_DE00) -> np.ndarray:
    """Deterministic pseudo-random 32-bit words (splitmix64), the same on every platform."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z & np.uint64(0xFFFFFFFF)).astype(np.uint32)


INITIAL_STATE = np.uint64((1 << 63) | 0x2545F4914F6CDD1D)


class Table:
    """A CDF table with its symbol alphabet size N and offset width W (see tables.py)."""

    def __init__(self, cdf: np.ndarray, n: int, precision: int):
        self.cdf = np.ascontiguousarray(cdf)
        self.n = n
        self.width = (cdf.shape[1] - 1) // 2
        self.precision = precision
        if self.width < n:
            raise ValueError("table width must be >= alphabet size")
        # inv[r, j]: offset from the base of the symbol holding quantile j / DITHER_LEVELS of row r
        # (integer searches on the integer table: identical on every machine)
        targets = np.arange(DITHER_LEVELS, dtype=np.int64) * ((1 << precision) // DITHER_LEVELS)
        self.inv = np.stack([np.searchsorted(row.astype(np.int64), targets, side="right") - 1 - self.width
                             for row in self.cdf]).astype(np.int64)


class AnsCoder:
    """One image's stack of bits. push/pop take flat int64 arrays (symbols, rows, bases)."""

    def __init__(self, bed_words: int, words: np.ndarray | None = None, state: int | None = None,
                 bed_kept: int | None = None, dithered: bool = True):
        self.bed_words = bed_words
        self.dithered = dithered  # False only to decode payloads of container version 1
        bed = _splitmix_words(bed_words)
        if words is None:  # fresh encoder: the full bed
            self.buf = np.empty(max(1024, 2 * bed_words), dtype=np.uint32)
            self.buf[:bed_words] = bed
            self.m, self.min_m, self.state = bed_words, bed_words, INITIAL_STATE
        else:  # decoder: the kept bottom of the bed + the stored words
            assert bed_kept is not None and state is not None
            total = bed_kept + len(words)
            self.buf = np.empty(max(1024, 2 * total, 2 * bed_words), dtype=np.uint32)
            self.buf[:bed_kept] = bed[:bed_kept]
            self.buf[bed_kept:total] = words
            self.m, self.min_m, self.state = total, total, np.uint64(state)

    def _reserve(self, extra: int) -> None:
        if self.m + extra + 1 > len(self.buf):
            new = np.empty(max(2 * len(self.buf), self.m + extra + 1), dtype=np.uint32)
            new[: self.m] = self.buf[: self.m]
            self.buf = new

    def push(self, symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, table: Table, spikes=None,
             cells: np.ndarray | GroupedCells | None = None) -> None:
        """spikes: None, or per symbol (spike symbols, weight levels 0..255) or (spike symbols, levels, second
        spike symbols (-1: none), their levels), levels adding up to at most 255: the spiked distributions.
        cells: None, or value_cells(mask): every symbol must be a value of the mask, and is coded with the
        mass of its whole cell (the values the mask leaves out give their mass to the nearest it keeps); or
        GroupedCells: each symbol with its own table of such cells."""
        if len(symbols) == 0:
            return
        self._reserve(len(symbols))
        sp, mixed = _spike_arrays(spikes, len(symbols))
        state, self.m = _push(self.state, self.buf, self.m, symbols, rows, bases, table.cdf, table.inv,
                              table.width, table.n, table.precision, self.dithered, sp, mixed,
                              *_cell_arrays(cells, table.n, symbols))
        self.state = np.uint64(state)  # keep uint64: a Python int would retype numba's arithmetic

    def pop(self, rows: np.ndarray, bases: np.ndarray, table: Table, spikes=None,
            cells: np.ndarray | GroupedCells | None = None) -> np.ndarray:
        out = np.empty(len(rows), dtype=np.int64)
        if len(rows) == 0:
            return out
        sp, mixed = _spike_arrays(spikes, len(rows))
        state, self.m, self.min_m, ok = _pop(self.state, self.buf, self.m, self.min_m, out, rows, bases,
                                             table.cdf, table.inv, table.width, table.n, table.precision,
                                             self.dithered, sp, mixed,
                                             *_cell_arrays(cells, table.n, count=len(rows)))
        self.state = np.uint64(state)
        if not ok:
            raise CorruptPayloadError("ANS stack ran out of bits: payload truncated or corrupt")
        return out

    def push_cells(self, cells: np.ndarray, rows: np.ndarray, bases: np.ndarray, table: Table, k: int) -> None:
        """Push cell indices (cell_index): each distribution's mass over runs of k symbols, so a value
        known only to within k symbols costs about log2(k) bits less than the symbol itself. The grid is
        the coder's cells (grid_cells), its cells' standing symbols what is pushed."""
        if len(cells) == 0:
            return
        self.push(cell_value(cells, table.n, _grid_width(k, table.n)), rows, bases, table,
                  cells=grid_cells(table.n, k))

    def pop_cells(self, rows: np.ndarray, bases: np.ndarray, table: Table, k: int) -> np.ndarray:
        return cell_index(self.pop(rows, bases, table, cells=grid_cells(table.n, _grid_width(k, table.n))),
                          table.n, k)

    def push_categorical(self, symbol: int, freqs: np.ndarray) -> None:
        """Push one symbol in [0, K) under integer frequencies (K,) that are >= 1 and add up to
        2**CATEGORICAL_PRECISION (no dithering: used for the importance sampler's particle index)."""
        cum = _cumulative(freqs)
        if not 0 <= symbol < len(freqs):
            raise ValueError(f"symbol {symbol} is outside 0..{len(freqs) - 1}")
        self._reserve(1)
        state, self.m = _push_categorical(self.state, self.buf, self.m, cum[symbol + 1] - cum[symbol],
                                          cum[symbol], CATEGORICAL_PRECISION)
        self.state = np.uint64(state)

    def pop_categorical(self, freqs: np.ndarray) -> int:
        k, state, self.m, self.min_m, ok = _pop_categorical(self.state, self.buf, self.m, self.min_m,
                                                            _cumulative(freqs), CATEGORICAL_PRECISION)
        self.state = np.uint64(state)
        if not ok:
            raise CorruptPayloadError("ANS stack ran out of bits: payload truncated or corrupt")
        return int(k)

    def copy(self) -> AnsCoder:
        """An independent coder in the same state (the encoder tries two codings of a block on copies)."""
        out = object.__new__(AnsCoder)
        out.__dict__.update(self.__dict__)
        out.buf = self.buf.copy()
        return out

    def become(self, other: AnsCoder) -> None:
        """Take other's state (the try the encoder keeps; other shares its buffer and is dropped after)."""
        self.__dict__.update(other.__dict__)

    # ---- serialization: [u32 kept bed words][u64 state][u32 words...] ----
    def to_bytes(self) -> bytes:
        kept = self.min_m
        return struct.pack("<IQ", kept, int(self.state)) + self.buf[kept : self.m].astype("<u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, bed_words: int, dithered: bool = True) -> AnsCoder:
        if len(data) < 12 or (len(data) - 12) % 4:
            raise CorruptPayloadError("ANS payload has an invalid length")
        kept, state = struct.unpack_from("<IQ", data)
        if kept > bed_words or state < (1 << 32):
            raise CorruptPayloadError("ANS payload header is invalid")
        words = np.frombuffer(data, dtype="<u4", offset=12).astype(np.uint32)
        return cls(bed_words, words=words, state=state, bed_kept=kept, dithered=dithered)

    def check_finished(self) -> None:
        """After decoding everything, the stack must be exactly the initial bed again."""
        if (self.state != INITIAL_STATE or self.m != self.bed_words
                or not np.array_equal(self.buf[: self.m], _splitmix_words(self.bed_words))):
            raise CorruptPayloadError("ANS stack did not return to its initial state: payload corrupt")

    def num_bits(self) -> int:
        """Bits this coder would store now (for per-block cost accounting)."""
        return 8 * (12 + 4 * (self.m - self.min_m))


def random_coder(rng: np.random.Generator, words: int) -> AnsCoder:
    """A coder on `words` random words and a random state: popping from it draws samples (bits-back cost
    accounting without a real message). Same rng, same draws."""
    return AnsCoder(0, words=rng.integers(0, 2**32, words, dtype=np.uint32), state=int(rng.integers(2**32, 2**63)),
                    bed_kept=0)


@numba.njit(cache=True, inline="always")
def _symbol_freq(table, r, b, width, n, precision, v, l1, v2, l2, lo_k, hi_k):
    """The frequency of the cell [lo_k, hi_k) under its (spiked) distribution: what push codes it with."""
    total = np.uint64(1 << precision)
    a, e1, e2 = _spike_masses(n, total, l1, l2)
    return (_cdf_mixed(table, r, hi_k, b, width, n, total, v, a, e1, v2, e2)
            - _cdf_mixed(table, r, lo_k, b, width, n, total, v, a, e1, v2, e2))


@numba.njit(cache=True, inline="always")
def _symbol_bits(table, r, k, b, width, n, precision, v, l1, v2, l2, lo_k, hi_k):
    f = _symbol_freq(table, r, b, width, n, precision, v, l1, v2, l2, lo_k, hi_k)
    return precision - np.log2(np.float64(f))


@numba.njit(cache=True)
def _cost_bits_each(symbols, rows, bases, table, width, n, precision, spikes, mixed, cells, groups, grouped, out):
    v, l1, v2, l2 = 0, 0, -1, 0
    for i in range(symbols.shape[0]):
        if mixed:
            v, l1, v2, l2 = spikes[0, i], spikes[1, i], spikes[2, i], spikes[3, i]
        k = symbols[i]
        cl = cells[groups[i] if grouped else 0]
        out[i] = _symbol_bits(table, rows[i], k, bases[i], width, n, precision, v, l1, v2, l2, cl[0, k], cl[1, k])


def cost_bits_each(symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, table: Table, spikes=None,
                   cells: np.ndarray | GroupedCells | None = None) -> np.ndarray:
    """-log2 P(symbol) of each symbol under its table distribution, spiked and celled as in push (float64)."""
    out = np.empty(len(symbols), dtype=np.float64)
    if len(symbols):
        sp, mixed = _spike_arrays(spikes, len(symbols))
        _cost_bits_each(symbols, rows, bases, table.cdf, table.width, table.n, table.precision, sp, mixed,
                        *_cell_arrays(cells, table.n, symbols), out)
    return out


def cost_bits(symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, table: Table, spikes=None,
              cells: np.ndarray | GroupedCells | None = None) -> float:
    """Ideal code length, -sum log2 P(symbol), of symbols under their (spiked, celled) table distributions."""
    return float(cost_bits_each(symbols, rows, bases, table, spikes, cells).sum())


# ---- exact code lengths: integers, the same on every machine (importance weights, coding/importance.py) ----
COST_FRAC = 24  # fixed-point code lengths count units of 2**-24 bits
_MANTISSA_BITS = 16


def _log2_table() -> np.ndarray:
    """log2(1 + i / 2**16) for i in [0, 2**16], in units of 2**-COST_FRAC, by repeated squaring of a Q30
    integer: exact integer arithmetic, so every machine builds the same table (numpy's float log2 may
    differ in its last bit between CPUs, and the decoder must reproduce the encoder's weights exactly)."""
    one = np.int64(1 << 30)
    m = one + (np.arange(2**_MANTISSA_BITS + 1, dtype=np.int64) << (30 - _MANTISSA_BITS))
    out = np.zeros_like(m)
    for b in range(1, COST_FRAC + 1):
        m = (m * m) >> 30
        big = m >= 2 * one
        out += big.astype(np.int64) << (COST_FRAC - b)
        m = np.where(big, m >> 1, m)
    return out


_LOG2 = _log2_table()


@numba.njit(cache=True, inline="always")
def _log2_fixed(f, log2t):
    """log2(f) of an integer f >= 1 in units of 2**-COST_FRAC (the mantissa rounded to 16 bits)."""
    f = np.int64(f)
    e = 0
    while (f >> (e + 1)) > 0:
        e += 1
    if e >= _MANTISSA_BITS:
        idx = (((f << 1) >> (e - _MANTISSA_BITS)) + 1) >> 1
    else:
        idx = f << (_MANTISSA_BITS - e)
    return (np.int64(e) << COST_FRAC) + log2t[idx - (1 << _MANTISSA_BITS)]


@numba.njit(cache=True)
def _cost_fixed_each(symbols, rows, bases, table, width, n, precision, spikes, mixed, cells, groups, grouped,
                     log2t, out):
    v, l1, v2, l2 = 0, 0, -1, 0
    full = np.int64(precision) << COST_FRAC
    for i in range(symbols.shape[0]):
        if mixed:
            v, l1, v2, l2 = spikes[0, i], spikes[1, i], spikes[2, i], spikes[3, i]
        k = symbols[i]
        cl = cells[groups[i] if grouped else 0]
        f = _symbol_freq(table, rows[i], bases[i], width, n, precision, v, l1, v2, l2, cl[0, k], cl[1, k])
        out[i] = full - _log2_fixed(f, log2t)


def cost_fixed(symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, table: Table, spikes=None,
               cells: np.ndarray | GroupedCells | None = None) -> int:
    """cost_bits in units of 2**-COST_FRAC bits as an exact integer (within 2**-16 of the true -log2 P per
    symbol): the same number on every machine, so both ends of a code can branch on it."""
    if not len(symbols):
        return 0
    out = np.empty(len(symbols), dtype=np.int64)
    sp, mixed = _spike_arrays(spikes, len(symbols))
    _cost_fixed_each(symbols, rows, bases, table.cdf, table.width, table.n, table.precision, sp, mixed,
                     *_cell_arrays(cells, table.n, symbols), _LOG2, out)
    return int(out.sum())


# ---- one symbol under explicit integer frequencies (the importance sampler's particle index) ----
CATEGORICAL_PRECISION = 24


@numba.njit(cache=True)
def _push_categorical(state, buf, m, f, c, precision):
    return _push_one(np.uint64(state), buf, m, np.uint64(f), np.uint64(c), np.uint64(64 - precision),
                     np.uint64(precision))


@numba.njit(cache=True)
def _pop_categorical(state, buf, m, min_m, cum, precision):
    """cum: the cumulative frequencies (K + 1,), cum[0] = 0, cum[K] = 2**precision."""
    x = np.uint64(state)
    slot = x & np.uint64((1 << precision) - 1)
    k = 0
    while np.uint64(cum[k + 1]) <= slot:
        k += 1
    x, m, min_m, ok = _pop_one(x, buf, m, min_m, np.uint64(cum[k + 1] - cum[k]), slot, np.uint64(cum[k]),
                               np.uint64(precision))
    return k, x, m, min_m, ok


def _cumulative(freqs: np.ndarray) -> np.ndarray:
    freqs = np.asarray(freqs, dtype=np.int64)
    if freqs.ndim != 1 or not len(freqs) or freqs.min() < 1 or freqs.sum() != 1 << CATEGORICAL_PRECISION:
        raise ValueError(f"frequencies must be >= 1 and add up to 2**{CATEGORICAL_PRECISION}")
    return np.concatenate([[0], np.cumsum(freqs)]).astype(np.int64)
