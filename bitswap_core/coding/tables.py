"""Discretized logistic CDF tables indexed by (scale level, mean fraction), shifted by the mean's bin.

A coding distribution over symbols k in [0, N) is given by a table row r and a base bin b (the integer
part of the mean). Its CDF is C(0) = 0, C(N) = 2**P and C(k) = T[r, k - b + W] in between, so the two
edge bins absorb the tails (as the discretized logistic of PixelCNN++/Bit-Swap does) and every symbol has
frequency >= 1. Because T is strictly increasing and W >= N, any (row, base) gives a valid distribution:
the coder never needs per-symbol normalisation and the network never evaluates a transcendental function.
Tables are built once at export in float64 and shipped in the model file, so they are identical everywhere.
"""

from __future__ import annotations

import numpy as np


def logistic_cdf_table(scales: np.ndarray, mean_frac: int, width: int, precision: int) -> np.ndarray:
    """T[j * mean_frac + f, i] = strictly increasing integer CDF of logistic((d - f/F), scales[j]) at d - 0.5.

    scales are in units of one bin; i = d + width for offsets d in [-width, width].
    """
    d = np.arange(-width, width + 1, dtype=np.float64)
    total = float(2**precision - 2 * width)
    if total < 2 * width:
        raise ValueError("precision too low for the table width")
    rows = []
    for s in scales.astype(np.float64):
        for f in range(mean_frac):
            u = (d - 0.5 - f / mean_frac) / s
            cdf = 0.5 * (1.0 + np.tanh(0.5 * u))  # logistic sigmoid, no overflow
            t = np.floor(cdf * total + 0.5) + np.arange(2 * width + 1)
            t[0], t[-1] = 0, 2**precision
            rows.append(t)
    table = np.stack(rows).astype(np.int64)
    assert np.all(np.diff(table, axis=1) >= 1)
    return table.astype(np.uint32) if precision < 32 else table


def z_table(cfg) -> np.ndarray:
    lo, step = cfg.z_log_scale_grid()
    scales = np.exp(lo + step * np.arange(cfg.z_scales)) / cfg.z_delta
    return logistic_cdf_table(scales, cfg.mean_frac, cfg.z_bins, cfg.precision)


def x_table(cfg) -> np.ndarray:
    lo, step = cfg.x_log_scale_grid()
    scales = np.exp(lo + step * np.arange(cfg.x_scales))
    return logistic_cdf_table(scales, cfg.mean_frac, 256, cfg.precision)


def rows_bases(mean_level: np.ndarray, scale_level: np.ndarray, mean_frac: int) -> tuple[np.ndarray, np.ndarray]:
    """Network levels -> (table row, base bin) for the coder."""
    mean_level = mean_level.astype(np.int64, copy=False)
    return scale_level.astype(np.int64) * mean_frac + mean_level % mean_frac, mean_level // mean_frac
