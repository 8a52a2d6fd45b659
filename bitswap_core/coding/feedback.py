"""What a block's decoded pixels tell the coding steps after them: their errors (the surprise context,
coding/surprise.py) and their residuals (residual feedback, coding/residual.py).

Encoder and decoder keep the same state while a batch of blocks is coded step by step: after a channel of
a step is coded, `add` records its values against the (rows, bases) the adaptation gave them before either
feedback; before a step, `start` reads what the earlier steps left; `codes` turns a channel's (rows, bases)
into the ones it is coded with. Both feedbacks are measured against the codes before them, so neither
depends on its own weights or shifts, which lets the encoder price every candidate in one pass.
"""

from __future__ import annotations

import numpy as np
import torch

from bitswap_core.coding import residual, surprise
from bitswap_core.model import phases


class Tracker:
    """The decoded pixels' errors and residuals of a batch of blocks while they are coded."""

    def __init__(self, steps, known: torch.Tensor, mean_frac: int, levels: int, shifts: torch.Tensor | None = None,
                 edges: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                 weight_edges: torch.Tensor | None = None, channels: int = 3):
        """known: (B, 1, s, s) 1 on the blocks' real pixels (BlockCoder._known); shifts (B, steps, channels,
        surprise.CLASSES) and edges (B, CLASSES - 1), or None for no surprise context; weights (B, steps,
        channels, residual.CLASSES) and weight_edges (B, residual.CLASSES - 1), or None for no residual
        feedback (adapt.CodingMaps)."""
        self.steps, self.mean_frac, self.levels, self.known = steps, mean_frac, levels, known
        self.edges = None if edges is None else edges.numpy()
        self.shifts = None if edges is None else shifts.numpy()
        self.weights = None if weights is None else weights.numpy()
        self.weight_edges = None if weights is None else weight_edges.numpy()
        self.errors = torch.zeros_like(known) if edges is not None else None
        shape = (known.shape[0], channels, *known.shape[2:])
        self.residuals = torch.zeros(shape, dtype=torch.int64) if weights is not None else None
        self.score = self.cls = self.feedback = None

    def start(self, step: int) -> None:
        """Score the step's pixels and take their neighbours' residuals from what is decoded so far."""
        if self.errors is not None:
            self.score = surprise.scores(self.steps[step], self.errors, self.known)
            self.cls = surprise.classes(self.score, self.edges)
        if self.residuals is not None:
            self.feedback = residual.neighbour_means(self.residuals, self.known, self.steps[step])

    def codes(self, rows: np.ndarray, bases: np.ndarray, step: int, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """The step's (rows, bases) (B, h, w) for one channel as coded: the residual feedback's mean, then
        the surprise class's scale shift."""
        if self.weights is not None and self.weights[:, step, channel].any():
            rows, bases = residual.moved(rows, bases, self.feedback[:, channel], self.weights[:, step, channel],
                                         self.weight_edges, self.mean_frac)
        if self.errors is not None and self.shifts[:, step, channel].any():
            rows = surprise.shifted_rows(rows, self.cls, self.shifts[:, step, channel], self.mean_frac, self.levels)
        return rows, bases

    def add(self, step: int, channel: int, values: np.ndarray, rows: np.ndarray, bases: np.ndarray, table) -> None:
        """Record one channel's decoded values (B, h, w) against the rows and bases the adaptation gave them
        (before codes())."""
        if self.errors is not None:
            view = phases.step_view(self.errors.numpy(), 4, *self.steps[step])
            view[:, 0] += surprise.pixel_errors(values, rows, bases, table)
        if self.residuals is not None:
            view = phases.step_view(self.residuals.numpy(), 4, *self.steps[step])
            view[:, channel] = residual.residuals(values, rows, bases, self.mean_frac)
