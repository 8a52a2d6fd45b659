"""Surprise context: a pixel's scale follows how wrong the model was on its decoded neighbours.

Why: the model sees its decoded neighbours' values but never its own errors on them, and its spread is
miscalibrated locally: where the neighbours came out far from their predicted means (texture, noise,
edges the latents did not carry) the next pixel will too, and where they sat on their means the model is
too cautious. Classical lossless coders (CALIC, JPEG-XL's weighted predictor) condition on exactly this.
Measured before building (bench/surprise_context.py, float model, in-sample): per-(step, channel,
class) scale shifts on top of the scale adaptation save 0.6-0.9% of the pixel term on photos.

Integers only, so encoder and decoder agree everywhere: a pixel's error is counted against the coder's own
integer CDF row, |C(x) + C(x + 1) - 2^P| (twice the distance of its CDF midpoint from the median; for a
logistic 2^P tanh(|x - mean| / 2s)), as the number of error_steps() it exceeds; its three channels' counts
add up to the pixel's error. A later step's pixel takes the mean of its decoded in-block neighbours'
errors, in quarter units (phases.neighbour_prediction's floor mean, the neighbour sets of the predictor
and spikes), and its image's edges cut that score into CLASSES classes. The adaptation (coding/adapt.py)
stores the edges and one scale shift per (step, channel, class); the coder adds it to the scale level
after every other correction (coding/feedback.py holds the decoded errors while a block is coded).
"""

from __future__ import annotations

import numpy as np
import torch

from bitswap_core.model import phases

CLASSES = 4
SCORE_FRAC = 4  # the neighbours' mean error in quarter units
MAX_SCORE = 255  # scores are capped to a byte (the edges are u8)
MAX_SHIFT = 12
# 2^24 tanh(c / 2) for c = 0.5, 1, 1.5, 2, 3, 4, 6 scales: |x - mean| / s > c  <=>  |2 CDF(x) - 1| > tanh(c / 2)
_STEPS_24 = np.array([4109053, 7753039, 10656031, 12777430, 15185868, 16173699, 16694249], dtype=np.int64)


def error_steps(precision: int) -> np.ndarray:
    """The error thresholds (0.5 to 6 scales) for CDF tables of this precision (bits)."""
    return _STEPS_24 << (precision - 24) if precision >= 24 else _STEPS_24 >> (24 - precision)


def pixel_errors(values: np.ndarray, rows: np.ndarray, bases: np.ndarray, table) -> np.ndarray:
    """How many error steps each symbol's CDF midpoint is past (int64, same shape as values): values, rows,
    bases as the coder takes them (before spikes and cells), table a rans.Table."""
    v = values.astype(np.int64)
    i = v - bases + table.width
    lo = np.where(v > 0, table.cdf[rows, i].astype(np.int64), 0)
    hi = np.where(v < table.n - 1, table.cdf[rows, i + 1].astype(np.int64), 1 << table.precision)
    d = np.abs(lo + hi - (1 << table.precision))
    return np.searchsorted(error_steps(table.precision), d, side="left")  # how many steps lie below d


def scores(step: tuple[int, int], errors: torch.Tensor, known: torch.Tensor) -> np.ndarray:
    """(B, h, w) int64 score of a coding step's pixels in its grid: SCORE_FRAC times the mean error of its
    decoded in-block neighbours, rounded down and capped at MAX_SCORE; errors (B, 1, s, s) int64 (0 where not
    yet decoded), known (B, 1, s, s) 1 on a block's real pixels. Steps without decoded neighbours score 0."""
    if not phases.has_neighbours(step):
        v = phases.step_view(errors, 4, *step)
        return np.zeros((v.shape[0], v.shape[-2], v.shape[-1]), dtype=np.int64)
    out = phases.neighbour_prediction(*phases.step_grid(step, errors, known), SCORE_FRAC)
    return out[:, 0].clamp_max(MAX_SCORE).numpy()


def classes(score: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class of each score: how many of its block's edges (B, CLASSES - 1) it reaches."""
    return (score[..., None] >= edges[:, None, None, :]).sum(-1)


def shifted_rows(rows: np.ndarray, cls: np.ndarray, shifts: np.ndarray, mean_frac: int, levels: int) -> np.ndarray:
    """rows with each pixel's scale level moved by its class's shift (shifts (B, CLASSES)), clamped to the grid."""
    level = rows // mean_frac + shifts[np.arange(len(cls))[:, None, None], cls]
    return np.clip(level, 0, levels - 1) * mean_frac + rows % mean_frac
