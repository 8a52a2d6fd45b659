"""The fits' candidate grids (coding/grid_costs.py) equal, to the last bit, the numpy pass per candidate the
fits made before, with spikes, value cells and palette cells; and a fit chooses the same with either."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import photo_crop

from bitswap_core.coding import adapt, grid_costs, residual
from bitswap_core.coding.rans import GroupedCells, Table, value_cells
from bitswap_core.registry import resolve


@pytest.fixture(scope="module")
def model():
    return resolve(None)


@pytest.fixture(scope="module")
def table(model):
    return Table(model.tensors["table_x"], 256, model.cfg.precision)


def _pixels(model, n: int, seed: int):
    """Symbols near their means, with the extremes of value, level and mean among them."""
    rng = np.random.default_rng(seed)
    cfg = model.cfg
    symbols = rng.integers(0, 256, n)
    means = np.clip(symbols * cfg.mean_frac + rng.integers(-40, 41, n) * cfg.mean_frac // 4, 0, 255 * cfg.mean_frac)
    levels = rng.integers(0, cfg.x_scales, n)
    symbols[:4], means[:4], levels[:4] = (0, 255, 0, 255), (255 * cfg.mean_frac, 0, 0, 255 * cfg.mean_frac), \
        (0, cfg.x_scales - 1, cfg.x_scales - 1, 0)
    return symbols, means, levels


def _extras(kind: str, symbols: np.ndarray, seed: int):
    """(spikes, cells) of each kind of pixel the fits price."""
    rng = np.random.default_rng(seed)
    n = len(symbols)
    if kind == "plain":
        return None, None
    if kind == "spikes":
        value = np.where(rng.random(n) < 0.5, symbols, rng.integers(0, 256, n))
        level = rng.integers(0, 200, n)
        value2 = np.where(rng.random(n) < 0.3, symbols, rng.integers(-1, 256, n))
        value2 = np.where(value2 == value, -1, value2)
        return (value, level, value2, (rng.random(n) * (255 - level)).astype(np.int64)), None
    mask = np.zeros(256, bool)
    mask[symbols] = True
    mask[rng.integers(0, 256, 40)] = True
    if kind == "cells":
        return None, value_cells(mask)
    other = mask | (rng.random(256) < 0.5)  # palette cells: a table per pixel, either keeps its symbol
    return None, GroupedCells(np.stack([value_cells(mask), value_cells(other)]), rng.integers(0, 2, n))


@pytest.mark.parametrize("extra", ["plain", "spikes", "cells", "grouped"])
def test_shift_and_residual_grids_equal_the_numpy_pass_per_candidate(model, table, extra):
    cfg = model.cfg
    mf, levels = cfg.mean_frac, cfg.x_scales
    symbols, means, level = _pixels(model, 3000, 1)
    rows, bases = level * mf + means % mf, means // mf
    spikes, cells = _extras(extra, symbols, 2)
    cls = np.random.default_rng(3).integers(0, 5, len(symbols))
    shifts = np.arange(-30, 31, 3)
    got = grid_costs.shift_grid(symbols, rows, bases, cls, 5, shifts, table, mf, levels, spikes, cells)
    want = grid_costs.reference(grid_costs.SHIFT, shifts, symbols, rows, bases, cls, 5, table, mf, levels,
                                spikes=spikes, cells=cells)
    assert got.shape == (len(shifts), 5) and np.array_equal(got, want)
    feedback = np.random.default_rng(4).integers(-300, 301, len(symbols))
    weights = np.arange(-residual.MAX_WEIGHT, residual.MAX_WEIGHT + 1)
    got = grid_costs.residual_grid(symbols, rows, bases, feedback, cls, 5, weights, table, mf, spikes, cells)
    want = grid_costs.reference(grid_costs.RESIDUAL, weights, symbols, rows, bases, cls, 5, table, mf, aux=feedback,
                                one=residual.WEIGHT_ONE, spikes=spikes, cells=cells)
    assert np.array_equal(got, want)
    # a shift of 0 and a weight of 0 price the pixels as they are
    assert np.array_equal(grid_costs.shift_grid(symbols, rows, bases, cls, 5, [0], table, mf, levels, spikes, cells),
                          grid_costs.residual_grid(symbols, rows, bases, feedback, cls, 5, [0], table, mf, spikes,
                                                   cells))


@pytest.mark.parametrize("extra", ["plain", "cells", "grouped"])
def test_blend_grids_equal_the_numpy_pass_and_price_only_the_classes_asked(model, table, extra):
    cfg = model.cfg
    mf, levels = cfg.mean_frac, cfg.x_scales
    symbols, means, level = _pixels(model, 2000, 5)
    _, cells = _extras(extra, symbols, 6)
    rng = np.random.default_rng(7)
    pred = np.clip(means + rng.integers(-200, 201, len(means)), 0, 255 * mf)
    cls = rng.integers(0, 4, len(symbols))
    w_cls, s_cls = np.array([0, -8, 8, 3]), np.array([2, 0, -6, 6])
    for vary, cands in (("weight", np.arange(-8, 9)), ("shift", np.arange(-6, 7))):
        kind = grid_costs.BLEND_WEIGHT if vary == "weight" else grid_costs.BLEND_SHIFT
        for only in (None, np.array([True, False, False, True])):
            got = grid_costs.blend_grid(symbols, means, level, pred, cls, w_cls, s_cls, vary, cands, table, mf,
                                        levels, adapt.BLEND_ONE, cells, only)
            want = grid_costs.reference(kind, cands, symbols, level, means, cls, 4, table, mf, levels, pred=pred,
                                        w_cls=w_cls, s_cls=s_cls, one=adapt.BLEND_ONE, cells=cells, only=only)
            assert np.array_equal(got, want), (vary, only)
            if only is not None:
                assert not got[:, ~only].any() and got[:, only].all()


def test_grids_refuse_classes_out_of_range(model, table):
    symbols, means, level = _pixels(model, 10, 8)
    with pytest.raises(ValueError, match="classes"):
        grid_costs.shift_grid(symbols, level, means, np.full(10, 3), 3, [0, 1], table, model.cfg.mean_frac,
                              model.cfg.x_scales)


def test_the_fit_chooses_the_same_with_the_kernels_as_with_the_numpy_pass(model, monkeypatch):
    """Every fit on one photo and one graphic crop: the same adaptation (hence the same bytes) either way."""
    images = [np.asarray(photo_crop(box=(0, 0, 96, 80))),
              np.asarray(photo_crop("waterloo-clegg.png", box=(40, 60, 136, 124)))]
    bc = model.block_coder("bitswap")
    got = adapt.choose(bc, images)
    monkeypatch.setattr(grid_costs, "_run", grid_costs.reference)
    want = adapt.choose(bc, images)
    assert [adapt.to_bytes(a) for a in got] == [adapt.to_bytes(a) for a in want]
    assert any(a.residual is not None or a.blend is not None for a in got)  # the grids had something to choose
