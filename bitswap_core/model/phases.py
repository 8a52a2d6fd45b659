"""Spatial phases of p(x|z1): which pixels of a 2x2 cell are coded in which step, and what each step sees.

In the 16x16 squeezed grid (pixel_unshuffle by 2) squeezed channel c*4 + dy*2 + dx holds colour c of the
pixel at offset (dy, dx) of each 2x2 cell. With 4 phases the cells' pixels are coded in the order
(0,0), (1,1), (0,1), (1,0): every later phase has decoded neighbours on several sides (diagonals for
(1,1); left/right and above/below for the last two), all inside a 3x3 window of the squeezed grid.
"""

from __future__ import annotations

import numba
import numpy as np

ORDER_4 = ((0, 0), (1, 1), (0, 1), (1, 0))
SPLIT = 2  # how deep phase (0,0) is split into sub-phases in new containers (coding_steps; container v18 on)


def offsets(pixel_phases: int) -> tuple[tuple[int, int], ...]:
    """(dy, dx) of each phase, in coding order; one phase means every pixel at once."""
    return ORDER_4 if pixel_phases == 4 else ((0, 0),)


def coding_steps(pixel_phases: int, split: int = 1) -> tuple[tuple[int, int], ...]:
    """(phase, sub-phase) of each coding step, in order; sub-phase -1 is the whole phase.

    split 1 (4 phases, container v4 on): phase (0,0)'s 16x16 grid is itself coded in the same four-phase
    order: the network sees no pixel of it either way (its distributions depend on z1 alone), so the order
    is free, and coding it in sub-phases lets three quarters of its pixels take spikes from already decoded
    ones two pixels away (coding/adapt.py). split 2 (container v18 on): that first sub-phase's 8x8 grid is
    split the same way once more (sub-phases 4-7 are sub-phase 0's sub-phases 0-3, sub_path), so only one
    pixel in 64 has no decoded neighbour, and three in 64 have them four pixels away. split 0 (or False):
    phase (0,0) in one step, as containers before v4 coded it."""
    if pixel_phases == 1:
        return ((0, -1),)
    split = int(split)
    if split == 0:
        return ((0, -1),) + tuple((k, -1) for k in range(1, 4))
    first = tuple((0, 4 * (split - 1) + s) for s in range(4))  # the innermost grid, in four sub-phases
    for depth in range(split - 2, -1, -1):  # then each enclosing grid's other three sub-phases
        first += tuple((0, 4 * depth + s) for s in range(1, 4))
    return first + tuple((k, -1) for k in range(1, 4))


def split_of(steps: int) -> int:
    """The split (coding_steps) of a 4-phase model coded in this many steps: 4, 7, 10, ..."""
    if steps < 4 or (steps - 4) % 3:
        raise ValueError(f"a 4-phase model is not coded in {steps} steps")
    return (steps - 4) // 3


def sub_path(sub: int) -> tuple[int, ...]:
    """The four-phase views that lead from phase (0,0)'s grid to a sub-phase's pixels: () for the whole
    phase (-1); (s,) for sub-phase s of 0..3; (0, s) for 4 + s, sub-phase 0's own sub-phases; (0, 0, s) for
    8 + s, and so on (sub-phase 4 * d + s is sub-phase s of the grid d splits deep)."""
    return () if sub < 0 else (0,) * (sub // 4) + (sub % 4,)


def has_neighbours(step: tuple[int, int]) -> bool:
    """Whether a coding step's pixels have decoded neighbours in their block (all but the first step)."""
    phase, sub = step
    path = sub_path(sub)
    return phase > 0 or (bool(path) and path[-1] > 0)


def step_view(x, pixel_phases: int, phase: int, sub: int):
    """The pixels of one coding step of (..., s, s) blocks: the phase's view, or its sub-phase's."""
    return sub_view(view(x, pixel_phases, phase), sub)


def sub_view(v, sub: int):
    """A sub-phase's pixels of a phase's grid v (..., s/2, s/2); v itself for the whole phase (-1)."""
    for k in sub_path(sub):
        v = view(v, 4, k)
    return v


def step_grid(step: tuple[int, int], x, known):
    """(x', known', k) such that a coding step's pixels are phase k of the grid x' (with known'), whose
    other phases' pixels are its neighbours (neighbour_prediction, neighbour_spikes, neighbour_context):
    the block itself for a later phase, phase (0,0)'s grid for its sub-phases 1-3, sub-phase 0's grid for
    sub-phases 5-7. Only for steps with decoded neighbours (has_neighbours)."""
    phase, sub = step
    if not has_neighbours(step):
        raise ValueError(f"coding step {step} has no decoded neighbours")
    if phase > 0:
        return x, known, phase
    *head, k = (0, *sub_path(sub))
    for h in head:
        x, known = view(x, 4, h), view(known, 4, h)
    return x, known, k


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


def _shift(t, di: int, dj: int, h: int = 16, w: int = 16):
    """t[..., i + di, j + dj] at (i, j) of an h x w grid, zero where that falls outside t (a phase's 16x16
    grid, or phase (0,0)'s 17x17 of a bordered block, whose row and column 16 are the next blocks')."""
    import torch.nn.functional as F

    p = F.pad(t, (1, 1, 1, 1))
    return p[..., 1 + di : 1 + di + h, 1 + dj : 1 + dj + w]


def neighbour_prediction(x, known, phase: int, mean_frac: int):
    """Mean of the real, already coded neighbours of phase `phase`'s pixels, in 1/mean_frac pixel units,
    rounded down (integer arithmetic, so the float and exact models agree): (B, C, 16, 16).

    x (B, C, 32, 32) pixels and known (B, 1, 32, 32) 1 on real pixels, 0 on padding (int64 or float
    tensors holding integers); or both (..., 33, 33), blocks with their border (blocks.bordered), where the
    next blocks' pixels count as neighbours too. Every real pixel of a later phase has at least one real
    neighbour (the (0, 0) pixel of its own cell), so the count is never zero there; elsewhere the result
    is unused.
    """
    import torch

    total = count = 0
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    for src, di, dj in NEIGHBOURS_4[phase]:
        k = view(known, 4, src)
        total = total + _shift(view(x, 4, src) * k, di, dj, h, w)
        count = count + _shift(k, di, dj, h, w)
    return torch.div(total * mean_frac, count.clamp_min(1), rounding_mode="floor")


# ---- the spike of a later phase: the value most of its already coded neighbours agree on ----
SPIKE_CLASSES = 3  # class = how many real neighbours disagree with the agreed value (0, 1 or 2)


def _relative(phase: int) -> np.ndarray:
    """(4, 2) offsets (rows, cols) from a phase's pixel to its NEIGHBOURS_4, in the pixel grid."""
    dy, dx = ORDER_4[phase]
    return np.array([(2 * di + ORDER_4[src][0] - dy, 2 * dj + ORDER_4[src][1] - dx)
                     for src, di, dj in NEIGHBOURS_4[phase]], dtype=np.int64)


@numba.njit(cache=True)
def _spikes_kernel(x, known, dy, dx, rel, value, cls, value2):
    """neighbour_spikes over (B, C, H, W) pixels x and (B, H, W) known, for the phase at offset (dy, dx)
    whose neighbours are at offsets rel; fills (B, C, H/2, W/2) value, cls, value2."""
    nb, nc, hh, ww = x.shape
    n = rel.shape[0]
    v = np.zeros(n, np.int64)
    k = np.zeros(n, np.bool_)
    agree = np.zeros(n, np.int64)
    for b in range(nb):
        for i in range(value.shape[2]):
            for j in range(value.shape[3]):
                r0, c0 = 2 * i + dy, 2 * j + dx
                for ch in range(nc):
                    real = 0
                    for m in range(n):
                        r, c = r0 + rel[m, 0], c0 + rel[m, 1]
                        inside = 0 <= r < hh and 0 <= c < ww
                        k[m] = inside and known[b, r, c] != 0
                        v[m] = x[b, ch, r, c] if inside else 0
                        real += k[m]
                    count, best = 0, 0
                    for m in range(n):
                        agree[m] = 0
                        if k[m]:
                            for q in range(n):
                                if k[q] and v[q] == v[m]:
                                    agree[m] += 1
                        if agree[m] > count:
                            count, best = agree[m], m
                    count2, best2 = 0, 0
                    for m in range(n):
                        if v[m] != v[best] and agree[m] > count2:
                            count2, best2 = agree[m], m
                    value[b, ch, i, j] = v[best]
                    cls[b, ch, i, j] = real - count if count >= 2 else -1
                    value2[b, ch, i, j] = v[best2] if count >= 2 and count2 > 0 else -1


def neighbour_spikes(x, known, phase: int):
    """(value, class, runner-up) of phase `phase`'s pixels, each (B, C, 16, 16) int64 tensors (x and known
    (..., 32, 32) tensors, or (..., 33, 33) bordered blocks whose border pixels count as neighbours; on a
    phase-0 grid (..., 16, 16) or (..., 17, 17), its sub-phases' (..., 8, 8)): value is the
    neighbour value (NEIGHBOURS_4) that most real neighbours share (the first such neighbour on a tie),
    class the number of real neighbours that differ from it, or -1 where fewer than two agree (no spike);
    runner-up is the value most of those differing neighbours share (the first on a tie), or -1 where
    there is none (class 0 or no spike).

    Graphics, screenshots and saturated areas repeat exact values; a smooth logistic cannot say "exactly the
    neighbours' value", a spike can (coding/adapt.py). On an edge between two flat areas the pixel takes
    one side's value or the other's: the runner-up is the other side. Integer comparisons only (a numba
    loop: a handful of torch ops per block cost more than the whole loop), so encoder and decoder agree.
    """
    import torch

    xs, ks = x.numpy(), known.numpy()
    b, c, h, w = xs.shape
    out = [np.empty((b, c, h // 2, w // 2), np.int64) for _ in range(3)]
    dy, dx = ORDER_4[phase]
    _spikes_kernel(xs, ks[:, 0], dy, dx, _relative(phase), *out)
    return tuple(torch.from_numpy(t) for t in out)


# ---- the blend of phase (0,0)'s sub-phases: its decoded neighbours two pixels away, by local range ----
BLEND_CLASSES = 4  # classes of the neighbours' value range: 0-1, 2-5, 6-15, 16 and more
_RANGE_EDGES = (2, 6, 16)


@numba.njit(cache=True)
def _context_kernel(x, known, dy, dx, rel, mean_frac, edges, pred, cls):
    """neighbour_context over (B, C, H, W) pixels x and (B, H, W) known; fills (B, C, H/2, W/2) pred, cls."""
    nb, nc, hh, ww = x.shape
    for b in range(nb):
        for i in range(pred.shape[2]):
            for j in range(pred.shape[3]):
                r0, c0 = 2 * i + dy, 2 * j + dx
                for ch in range(nc):
                    total, count, lo, hi = 0, 0, 1 << 30, -(1 << 30)  # any values: pixels or differences
                    for m in range(rel.shape[0]):
                        r, c = r0 + rel[m, 0], c0 + rel[m, 1]
                        if 0 <= r < hh and 0 <= c < ww and known[b, r, c] != 0:
                            v = x[b, ch, r, c]
                            total += v
                            count += 1
                            lo, hi = min(lo, v), max(hi, v)
                    pred[b, ch, i, j] = (total * mean_frac) // max(count, 1)
                    k = 0
                    if count:
                        while k < edges.shape[0] and hi - lo >= edges[k]:
                            k += 1
                    cls[b, ch, i, j] = k


def neighbour_context(x, known, phase: int, mean_frac: int, edges: tuple[int, ...] = _RANGE_EDGES):
    """(prediction, class) numpy arrays (B, C, h, w) of phase `phase`'s pixels (x, known as for
    neighbour_spikes): the floored mean of the real neighbours in 1/mean_frac units (neighbour_prediction's
    formula) and the class of their value range (the number of edges it reaches: BLEND_CLASSES with the
    default edges; 0 without real neighbours). x may hold any integers (colour_context passes differences).

    Phase (0,0)'s distributions come from z1 alone; its sub-phases 1-3 have decoded pixels two apart, which
    the encoder may blend into the model's mean per range class, and so, for the later phases, into the
    model's own interpolation (coding/adapt.py)."""
    xs, ks = x.numpy(), known.numpy()
    b, c, h, w = xs.shape
    pred, cls = np.empty((b, c, h // 2, w // 2), np.int64), np.empty((b, c, h // 2, w // 2), np.int64)
    dy, dx = ORDER_4[phase]
    _context_kernel(xs, ks[:, 0], dy, dx, _relative(phase), mean_frac, np.array(edges, np.int64), pred, cls)
    return pred, cls


# ---- the colour blend: a later channel's difference from the one before it, from the decoded neighbours ----
COLOUR_CLASSES = 6  # classes of the neighbours' range of x_c - x_(c-1): 0-1, 2-3, 4-7, 8-15, 16-31, 32 and more
_COLOUR_EDGES = (2, 4, 8, 16, 32)


def colour_context(step: tuple[int, int], x, known, mean_frac: int):
    """(prediction, class) numpy arrays (B, C - 1, h, w) of a coding step with decoded neighbours (as
    step_context): for channel c >= 1 (index c - 1) the floored mean, in 1/mean_frac units, of x_c - x_(c-1)
    over the real neighbours, and the class of that difference's range among them (COLOUR_CLASSES).

    Why: in colour photos the channels' fine detail moves together, so a pixel's G is its own R plus the
    G - R its neighbours show, closer than any mean of G alone; the encoder may blend that into the coded
    mean, per range class (coding/adapt.py, container version 9)."""
    x = x.long()
    return step_context(step, x[:, 1:] - x[:, :-1], known, mean_frac, _COLOUR_EDGES)


def blend_steps(steps, later: bool = True) -> list[int]:
    """Indices of the coding steps a blend applies to: phase (0,0)'s sub-phases with decoded neighbours and,
    with later (container v7 on), phases 1-3: every step with decoded neighbours."""
    return [s for s, step in enumerate(steps) if has_neighbours(step) and (later or step[0] == 0)]


def step_context(step: tuple[int, int], x, known, mean_frac: int, edges: tuple[int, ...] = _RANGE_EDGES):
    """neighbour_context of a coding step with decoded neighbours, of (B, C, s, s) blocks, in the step's
    grid (step_grid)."""
    return neighbour_context(*step_grid(step, x, known), mean_frac, edges)


def spike_steps(steps) -> list[int]:
    """Indices of the coding steps whose pixels have decoded neighbours to take a spike from."""
    return [s for s, step in enumerate(steps) if has_neighbours(step)]


def step_spikes(step: tuple[int, int], x, known):
    """neighbour_spikes of one coding step (phase, sub-phase) of (B, C, s, s) blocks, in its grid."""
    return neighbour_spikes(*step_grid(step, x, known))
