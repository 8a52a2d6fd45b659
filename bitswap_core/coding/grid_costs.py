"""Candidate grids for the encoder's fits: the bits of the same sampled pixels under every candidate of one
correction (a scale shift, a residual weight, a blend weight or its shift), summed per class, in one
compiled pass.

Why: the adaptation's fits (coding/adapt.py) price each candidate by coding the sample once more, and did so
one numpy pass per candidate and block: two thirds of a batched encode of 256x256 photos went to the fit,
much of it to per-call overhead (docs/BENCHMARKS.md, "Speed": the fit x0.55 with these grids). Each grid
here adds every pixel's bits into its class in pixel order, as np.bincount does, so a fit chooses exactly
what it chose before and the bytes do not change. The corrections' arithmetic repeats the coder's formulas
(adapt._blend_each, residual.corrected) in integers; `reference` is the numpy pass per candidate the fits
made before, which tests/test_grid_costs.py and bench/fit_speed.py hold the kernel to.
"""

from __future__ import annotations

import numba
import numpy as np

from bitswap_core.coding import residual
from bitswap_core.coding.rans import GroupedCells, Table, _cell_arrays, _spike_arrays, _symbol_bits, cost_bits_each

# what the grid's candidates change: a pixel's scale level, its mean by a residual weight, or the blend
SHIFT, RESIDUAL, BLEND_WEIGHT, BLEND_SHIFT = 0, 1, 2, 3


@numba.njit(cache=True)
def _grid(kind, cands, symbols, rows, bases, aux, pred, cls, keep, one, levels, mf, w_cls, s_cls, table, width, n,
          precision, spikes, mixed, cells, groups, grouped, out):
    """Pixel by pixel, every candidate: each out[t, class] still takes its pixels in pixel order, as one
    pass per candidate adds them, so the sums are the same to the bit. A pixel's last two (row, base) and
    their bits are kept: candidates sorted by size alternate sides, and on each side a correction moves
    monotonically, so a clamp or a small residual repeats the (row, base) one or two candidates back."""
    v, l1, v2, l2 = 0, 0, -1, 0
    top = np.int64(255 * mf)
    for i in range(symbols.shape[0]):
        c = cls[i]
        if not keep[c]:
            continue
        if mixed:
            v, l1, v2, l2 = spikes[0, i], spikes[1, i], spikes[2, i], spikes[3, i]
        k = symbols[i]
        cl = cells[groups[i] if grouped else 0]
        lo_k, hi_k = cl[0, k], cl[1, k]
        r0, b0 = rows[i], bases[i]
        frac, level, mean = r0 % mf, r0 // mf, b0 * mf + r0 % mf  # (the shift and residual kinds' rows, bases)
        r1, b1, bits1, r2, b2, bits2 = -1, -1, 0.0, -1, -1, 0.0
        for t in range(cands.shape[0]):
            d = cands[t]
            if kind == SHIFT:  # rows = level * mf + mean fraction
                r, b = min(max(level + d, 0), levels - 1) * mf + frac, b0
            elif kind == RESIDUAL:  # aux: the neighbours' mean residual
                m = min(max(mean + (d * aux[i]) // one, 0), top)
                r, b = r0 - frac + m % mf, m // mf
            else:  # rows: scale levels, bases: means in 1/mf pixel, pred: the blend's prediction
                w, s = (d, s_cls[c]) if kind == BLEND_WEIGHT else (w_cls[c], d)
                m = min(max((w * pred[i] + (one - w) * b0) // one, 0), top)
                r, b = min(max(r0 + s, 0), levels - 1) * mf + m % mf, m // mf
            if r == r1 and b == b1:
                bits = bits1
            elif r == r2 and b == b2:
                bits = bits2
            else:
                bits = _symbol_bits(table, r, k, b, width, n, precision, v, l1, v2, l2, lo_k, hi_k)
                r2, b2, bits2, r1, b1, bits1 = r1, b1, bits1, r, b, bits
            out[t, c] += bits


def _ints(a: np.ndarray | None) -> np.ndarray:
    return np.zeros(1, np.int64) if a is None else np.ascontiguousarray(a, dtype=np.int64)


def _run(kind: int, cands: np.ndarray, symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, cls: np.ndarray,
         classes: int, table: Table, mean_frac: int, levels: int = 1, aux: np.ndarray | None = None,
         pred: np.ndarray | None = None, w_cls: np.ndarray | None = None, s_cls: np.ndarray | None = None,
         one: int = 1, spikes=None, cells: np.ndarray | GroupedCells | None = None,
         only: np.ndarray | None = None) -> np.ndarray:
    """The grid of one kind of candidate (the public functions below say what each prices)."""
    out = np.zeros((len(cands), classes), dtype=np.float64)
    if not len(symbols):
        return out
    sp, mixed = _spike_arrays(spikes, len(symbols))
    symbols, rows, bases, cls = _ints(symbols), _ints(rows), _ints(bases), _ints(cls)
    if cls.min() < 0 or cls.max() >= classes:
        raise ValueError(f"classes must be in 0..{classes - 1}")
    keep = np.ones(classes, np.int64) if only is None else _ints(only)
    _grid(kind, _ints(cands), symbols, rows, bases, _ints(aux), _ints(pred), cls, keep, one, levels, mean_frac,
          _ints(w_cls), _ints(s_cls), table.cdf, table.width, table.n, table.precision, sp, mixed,
          *_cell_arrays(cells, table.n, symbols), out)
    return out


def shift_grid(symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, cls: np.ndarray, classes: int,
               shifts: np.ndarray, table: Table, mean_frac: int, levels: int, spikes=None,
               cells: np.ndarray | GroupedCells | None = None) -> np.ndarray:
    """(shifts, classes) bits of the symbols coded at rows (level * mean_frac + fraction) with each scale level
    moved by each shift, clamped to 0..levels - 1, summed per class cls (0..classes - 1)."""
    return _run(SHIFT, shifts, symbols, rows, bases, cls, classes, table, mean_frac, levels, spikes=spikes,
                cells=cells)


def residual_grid(symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, feedback: np.ndarray, cls: np.ndarray,
                  classes: int, weights: np.ndarray, table: Table, mean_frac: int, spikes=None,
                  cells: np.ndarray | GroupedCells | None = None) -> np.ndarray:
    """(weights, classes) bits of the symbols with each mean moved by floor(w * feedback / 8) for each weight
    w, as residual.corrected moves it (residual.WEIGHT_ONE), summed per class."""
    return _run(RESIDUAL, weights, symbols, rows, bases, cls, classes, table, mean_frac, aux=feedback,
                one=residual.WEIGHT_ONE, spikes=spikes, cells=cells)


def blend_grid(symbols: np.ndarray, mean: np.ndarray, level: np.ndarray, pred: np.ndarray, cls: np.ndarray,
               weights: np.ndarray, shifts: np.ndarray, vary: str, cands: np.ndarray, table: Table, mean_frac: int,
               levels: int, one: int, cells: np.ndarray | GroupedCells | None = None,
               only: np.ndarray | None = None) -> np.ndarray:
    """(cands, classes) bits of the symbols blended as adapt._blend_each blends them (means in 1/mean_frac
    pixel, scale levels, the prediction, range classes cls): every class takes each candidate for the part
    that varies ("weight" or "shift") and its own entry of weights / shifts (classes,) for the other; weights
    count in 1/one (adapt.BLEND_ONE). only: (classes,) bool, the classes to price (the others' columns are 0),
    or None for all."""
    kind = {"weight": BLEND_WEIGHT, "shift": BLEND_SHIFT}[vary]
    return _run(kind, cands, symbols, level, mean, cls, len(weights), table, mean_frac, levels, pred=pred,
                w_cls=np.asarray(weights, np.int64), s_cls=np.asarray(shifts, np.int64), one=one, cells=cells,
                only=only)


def reference(kind: int, cands: np.ndarray, symbols: np.ndarray, rows: np.ndarray, bases: np.ndarray, cls: np.ndarray,
              classes: int, table: Table, mean_frac: int, levels: int = 1, aux: np.ndarray | None = None,
              pred: np.ndarray | None = None, w_cls: np.ndarray | None = None, s_cls: np.ndarray | None = None,
              one: int = 1, spikes=None, cells: np.ndarray | GroupedCells | None = None,
              only: np.ndarray | None = None) -> np.ndarray:
    """_run's grid the slow way, a numpy pass per candidate with the formulas' own code (cost_bits_each,
    np.bincount, residual.corrected, adapt._blend_each): what the kernel must equal to the last bit."""
    from bitswap_core.coding.adapt import BLEND_ONE, _blend_each

    if kind in (BLEND_WEIGHT, BLEND_SHIFT) and one != BLEND_ONE or kind == RESIDUAL and one != residual.WEIGHT_ONE:
        raise ValueError("the reference knows the coder's own weight units only")
    mf, out = mean_frac, np.zeros((len(cands), classes))
    keep = np.ones(len(symbols), bool) if only is None else np.asarray(only, bool)[cls]
    for t, d in enumerate(cands):
        if kind == SHIFT:
            r, b = np.clip(rows // mf + d, 0, levels - 1) * mf + rows % mf, bases
        elif kind == RESIDUAL:
            r, b = residual.corrected(rows, bases, aux, d, mf)
        else:
            w = np.full(len(symbols), d) if kind == BLEND_WEIGHT else w_cls[cls]
            s = np.full(len(symbols), d) if kind == BLEND_SHIFT else s_cls[cls]
            m, lv = _blend_each(bases, rows, pred, w, s, levels, 255 * mf)
            r, b = lv * mf + m % mf, m // mf
        bits = np.where(keep, cost_bits_each(symbols, r, b, table, spikes, cells), 0.0)
        out[t] = np.bincount(cls, weights=bits, minlength=classes)
    return out
