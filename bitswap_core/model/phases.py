"""Spatial phases of p(x|z1): which pixels of a 2x2 cell are coded in which step, and what each step sees.

In the 16x16 squeezed grid (pixel_unshuffle by 2) squeezed channel c*4 + dy*2 + dx holds colour c of the
pixel at offset (dy, dx) of each 2x2 cell. With 4 phases the cells' pixels are coded in the order
(0,0), (1,1), (0,1), (1,0): every later phase has decoded neighbours on several sides (diagonals for
(1,1); left/right and above/below for the last two), all inside a 3x3 window of the squeezed grid.
"""

from __future__ import annotations

ORDER_4 = ((0, 0), (1, 1), (0, 1), (1, 0))


def offsets(pixel_phases: int) -> tuple[tuple[int, int], ...]:
    """(dy, dx) of each phase, in coding order; one phase means every pixel at once."""
    return ORDER_4 if pixel_phases == 4 else ((0, 0),)


def coding_steps(pixel_phases: int, split_first: bool) -> tuple[tuple[int, int], ...]:
    """(phase, sub-phase) of each coding step, in order; sub-phase -1 is the whole phase.

    With split_first (4 phases, container v4 on), phase (0,0)'s 16x16 grid is itself coded in the same
    four-phase order: the network sees no pixel of it either way (its distributions depend on z1 alone),
    so the order is free, and coding it in sub-phases lets three quarters of its pixels take spikes from
    already decoded ones two pixels away (coding/adapt.py)."""
    if pixel_phases == 1:
        return ((0, -1),)
    first = tuple((0, s) for s in range(4)) if split_first else ((0, -1),)
    return first + tuple((k, -1) for k in range(1, 4))


def step_view(x, pixel_phases: int, phase: int, sub: int):
    """The pixels of one coding step of (..., 32, 32) blocks: the phase's view, or its sub-phase's."""
    v = view(x, pixel_phases, phase)
    return v if sub < 0 else view(v, 4, sub)


def squeezed(channels: int, phase: int) -> list[int]:
    """Squeezed channel indices of the colours of one phase (4-phase models)."""
    dy, dx = ORDER_4[phase]
    return [c * 4 + dy * 2 + dx for c in range(channels)]


def context(channels: int, phase: int) -> list[int]:
    """Squeezed channel indices of the pixels coded before this phase (its context input)."""
    return [i for k in range(phase) for i in squeezed(channels, k)]


def valid_extent(rows: int, cols: int, dy: int, dx: int) -> tuple[int, int]:
    """How many squeezed rows/cols of a phase lie inside a block's valid rows x cols pixels."""
    return (rows - dy + 1) // 2, (cols - dx + 1) // 2


def view(x, pixel_phases: int, phase: int):
    """The pixels of one phase of (..., 32, 32) blocks: a strided view (..., 16, 16), or x itself (on a
    (..., 16, 16) phase grid, the same split gives its (..., 8, 8) sub-phases)."""
    if pixel_phases == 1:
        return x
    dy, dx = ORDER_4[phase]
    return x[..., dy::2, dx::2]


# ---- the neighbour predictor of a later phase: the mean of its already coded 4- or diagonal neighbours ----
# Each entry is (source phase, cell row shift, cell column shift): phase k's pixel in cell (i, j) has the
# neighbour held by the source phase's pixel in cell (i + di, j + dj). Only earlier phases are named.
NEIGHBOURS_4 = {
    1: ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)),  # (1,1): its four diagonal (0,0) pixels
    2: ((0, 0, 0), (0, 0, 1), (1, -1, 0), (1, 0, 0)),  # (0,1): left, right (phase 0), up, down (phase 1)
    3: ((0, 0, 0), (0, 1, 0), (1, 0, -1), (1, 0, 0)),  # (1,0): up, down (phase 0), left, right (phase 1)
}


def _shift(t, di: int, dj: int):
    """t[..., i + di, j + dj] at (i, j), zero where that falls outside the 16x16 grid."""
    import torch.nn.functional as F

    h, w = t.shape[-2:]
    p = F.pad(t, (1, 1, 1, 1))
    return p[..., 1 + di : 1 + di + h, 1 + dj : 1 + dj + w]


def neighbour_prediction(x, known, phase: int, mean_frac: int):
    """Mean of the real, already coded neighbours of phase `phase`'s pixels, in 1/mean_frac pixel units,
    rounded down (integer arithmetic, so the float and exact models agree): (B, C, 16, 16).

    x (B, C, 32, 32) pixels and known (B, 1, 32, 32) 1 on real pixels, 0 on padding (int64 or float
    tensors holding integers). Every real pixel of a later phase has at least one real neighbour (the
    (0, 0) pixel of its own cell), so the count is never zero there; elsewhere the result is unused.
    """
    import torch

    total = count = 0
    for src, di, dj in NEIGHBOURS_4[phase]:
        k = view(known, 4, src)
        total = total + _shift(view(x, 4, src) * k, di, dj)
        count = count + _shift(k, di, dj)
    return torch.div(total * mean_frac, count.clamp_min(1), rounding_mode="floor")


# ---- the spike of a later phase: the value most of its already coded neighbours agree on ----
SPIKE_CLASSES = 3  # class = how many real neighbours disagree with the agreed value (0, 1 or 2)


def neighbour_spikes(x, known, phase: int):
    """(value, class) of phase `phase`'s pixels, both (B, C, 16, 16) int64 (x and known (..., 32, 32); on
    a phase-0 grid (..., 16, 16), its sub-phases' (..., 8, 8)): value is the neighbour value
    (NEIGHBOURS_4) that most real neighbours share (the first such neighbour on a tie), class the number of
    real neighbours that differ from it, or -1 where fewer than two agree (no spike).

    Graphics, screenshots and saturated areas repeat exact values; a smooth logistic cannot say "exactly the
    neighbours' value", a spike can (coding/adapt.py). Integer comparisons only, so encoder and decoder agree.
    """
    import torch

    vals, knowns = [], []
    for src, di, dj in NEIGHBOURS_4[phase]:
        vals.append(_shift(view(x, 4, src), di, dj))
        knowns.append(_shift(view(known, 4, src), di, dj).expand_as(vals[-1]) > 0)
    v, k = torch.stack(vals), torch.stack(knowns)  # (4, B, C, 16, 16)
    agree = torch.stack([((v == v[j]) & k).sum(0) * k[j] for j in range(len(vals))])
    count = agree.max(0).values
    order = torch.arange(len(vals)).view(-1, 1, 1, 1, 1)
    best = torch.where(agree == count, order, len(vals)).min(0).values  # the first, on every device
    value = torch.gather(v, 0, best[None])[0].to(torch.int64)
    cls = k.sum(0) - count
    return value, torch.where(count >= 2, cls, torch.full_like(cls, -1)).to(torch.int64)


def spike_steps(steps) -> list[int]:
    """Indices of the coding steps whose pixels have decoded neighbours to take a spike from."""
    return [s for s, (phase, sub) in enumerate(steps) if phase > 0 or sub > 0]


def step_spikes(step: tuple[int, int], x, known):
    """neighbour_spikes of one coding step (phase, sub-phase) of (B, C, 32, 32) blocks, in its grid."""
    phase, sub = step
    if phase > 0:
        return neighbour_spikes(x, known, phase)
    if sub > 0:
        return neighbour_spikes(view(x, 4, 0), view(known, 4, 0), sub)
    raise ValueError(f"coding step {step} has no decoded neighbours")
