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
    """The pixels of one phase of (..., 32, 32) blocks: a strided view (..., 16, 16), or x itself."""
    if pixel_phases == 1:
        return x
    dy, dx = ORDER_4[phase]
    return x[..., dy::2, dx::2]
