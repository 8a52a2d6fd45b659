"""Residual feedback: a pixel's mean follows its decoded neighbours' residuals.

Why: the model's mean is off by nearly the same amount on neighbouring pixels (a gradient, a texture,
a colour cast the latents did not carry), and the networks never see their own residuals on the pixels
just decoded. Measured before building (bench/residual_feedback.py, the coded path on top of container
v16's adaptation): 0.5% of the sampled pixel bits over the validation set, 0.7-1.3% on the Waterloo photos.

Integers only, so encoder and decoder agree everywhere: a decoded pixel's residual is its value minus the
mean it was coded with before this correction (1/mean_frac pixel units, after every other correction of
the adaptation, before the surprise shift), per channel; a later step's pixel takes the floor mean of its
decoded in-block neighbours' residuals (phases.neighbour_prediction, the neighbour sets of the predictor,
spikes and surprise context), R, and its mean moves by floor(w R / WEIGHT_ONE), clamped to the pixel
range, with w one of -MAX_WEIGHT..MAX_WEIGHT per (coding step, channel, class of |R|): the image's CLASSES - 1
edges cut |R| into classes, since a small R is mostly noise and a large one a shared error (in-sample on
the validation set the classes took the saving from 0.62% to 0.76% of the sampled pixel bits,
bench/residual_classes.py; the small class chooses weights near 0 and the large one 2-4). The encoder fits
edges and weights (coding/adapt.py) and stores them in the payload's header (container version 17 on).
The residuals do not depend on w (they are taken before it), so the encoder prices every w in one pass.
"""

from __future__ import annotations

import numpy as np
import torch

from bitswap_core.model import phases

WEIGHT_ONE = 8
MAX_WEIGHT = 8
CLASSES = 4
MAX_EDGE = 255  # the edges are u8, in 1/mean_frac pixel


def residuals(values: np.ndarray, rows: np.ndarray, bases: np.ndarray, mean_frac: int) -> np.ndarray:
    """Each decoded value's residual against the mean its (rows, bases) stand for, in 1/mean_frac pixel."""
    return values.astype(np.int64) * mean_frac - (bases * mean_frac + rows % mean_frac)


def neighbour_means(res: torch.Tensor, known: torch.Tensor, step: tuple[int, int]) -> np.ndarray:
    """(B, C, h, w) floor mean of the decoded in-block neighbours' residuals of a coding step's pixels;
    res (B, C, s, s) int64 (0 where not yet decoded), known (B, 1, s, s) 1 on a block's real pixels.
    A step without decoded neighbours (phase (0,0)'s first sub-phase) gets zeros."""
    if not phases.has_neighbours(step):
        v = phases.step_view(res, 4, *step)
        return np.zeros(tuple(v.shape), dtype=np.int64)
    return phases.neighbour_prediction(*phases.step_grid(step, res, known), 1).numpy()


def classes(feedback: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class of each pixel's |R|: how many of its block's edges (B, CLASSES - 1) it reaches; feedback
    (B, ...) of any trailing shape."""
    e = edges.reshape(edges.shape[0], *([1] * (feedback.ndim - 1)), edges.shape[1])
    return (np.abs(feedback)[..., None] >= e).sum(-1)


def corrected(rows: np.ndarray, bases: np.ndarray, feedback: np.ndarray, weight, mean_frac: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, bases) with each mean moved by floor(weight * feedback / WEIGHT_ONE), clamped to 0..255;
    weight a scalar or an array broadcasting against rows (one per pixel or per block)."""
    mean = bases * mean_frac + rows % mean_frac
    moved = np.clip(mean + (weight * feedback) // WEIGHT_ONE, 0, 255 * mean_frac)
    return rows - rows % mean_frac + moved % mean_frac, moved // mean_frac


def moved(rows: np.ndarray, bases: np.ndarray, feedback: np.ndarray, weights: np.ndarray, edges: np.ndarray,
          mean_frac: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, bases) of a batch (B, ...) of one step's channel as the residual feedback codes them: each
    pixel's mean moved by its |R| class's weight; weights (B, classes), edges (B, classes - 1) per block (an
    image of one class has no edges). The coder (feedback.Tracker) and the encoder's fit share it."""
    cls = classes(feedback, edges)
    w = weights[np.arange(len(weights)).reshape(-1, *([1] * (cls.ndim - 1))), cls]
    return corrected(rows, bases, feedback, w, mean_frac)

