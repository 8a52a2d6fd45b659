"""Image <-> sequence of square blocks (32x32, or 64x64 / 128x128 from container v15). Borders are padded by
edge replication, never cropped.

Padded pixels are not coded: the decoder rebuilds them from the decoded ones the same way, so the networks
see identical blocks on both sides while only real pixels cost bits. The networks are convolutional, so the
model trained on 32x32 crops codes larger blocks as they are; larger blocks put fewer pixels at a block's
edge, where the networks see zero padding instead of neighbours (docs/BENCHMARKS.md, "Block side").
"""

from __future__ import annotations

import numpy as np

BLOCK = 32  # the blocks the model is trained on, and every payload's before container v15
SIDES = (32, 64, 128)  # the block sides a payload may use (container v15: a byte, log2(side / 32))


def check_side(side: int) -> int:
    if side not in SIDES:
        raise ValueError(f"block side {side} is not one of {SIDES}")
    return side


def grid(height: int, width: int, side: int = BLOCK) -> tuple[int, int]:
    return -(-height // side), -(-width // side)


def to_blocks(pixels: np.ndarray, side: int = BLOCK) -> np.ndarray:
    """(H, W, C) uint8 -> (n, C, side, side) uint8 in raster order, edge-padded."""
    h, w, c = pixels.shape
    gh, gw = grid(h, w, side)
    padded = np.pad(pixels, ((0, gh * side - h), (0, gw * side - w), (0, 0)), mode="edge")
    return np.ascontiguousarray(
        padded.reshape(gh, side, gw, side, c).transpose(0, 2, 4, 1, 3).reshape(gh * gw, c, side, side)
    )


def from_blocks(blocks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of to_blocks (drops the padding)."""
    side = blocks.shape[-1]
    gh, gw = grid(height, width, side)
    c = blocks.shape[1]
    full = blocks.reshape(gh, gw, c, side, side).transpose(0, 3, 1, 4, 2).reshape(gh * side, gw * side, c)
    return np.ascontiguousarray(full[:height, :width])


def valid_sizes(height: int, width: int, side: int = BLOCK) -> np.ndarray:
    """(n, 2): rows and columns of real pixels in each block (the rest is padding)."""
    gh, gw = grid(height, width, side)
    rows = np.minimum(side, height - side * np.arange(gh))
    cols = np.minimum(side, width - side * np.arange(gw))
    return np.stack(np.broadcast_arrays(rows[:, None], cols[None, :]), -1).reshape(-1, 2)


def pad_block(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Fill a block's padding (beyond rows x cols) by edge replication, in place; returns the block."""
    if rows < block.shape[-2]:
        block[:, rows:, :] = block[:, rows - 1 : rows, :]
    if cols < block.shape[-1]:
        block[:, :, cols:] = block[:, :, cols - 1 : cols]
    return block


def block_side(x) -> int:
    """The side of (..., s, s) blocks or of (..., s + 1, s + 1) bordered ones (sides are even)."""
    return x.shape[-1] - x.shape[-1] % 2


def bordered(blocks: np.ndarray, valid: np.ndarray, grid_w: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks idx of one image (blocks (n, C, s, s), valid (n, 2), raster order, grid_w blocks a row) with
    their border: ((k, C, s + 1, s + 1) pixels, (k, 1, s + 1, s + 1) int64 known: 1 on real pixels).

    Row s is the first row of the block below (column s of it: the first pixel of the block below and to the
    right), column s the first column of the block to the right, where those blocks exist; every other
    border pixel is 0 and not known. The decoder pops an image's blocks last-first, so when it decodes a
    block these neighbours are already decoded: their pixels are context both sides have (container v8)."""
    n, c, s = blocks.shape[:3]
    idx = np.asarray(idx, dtype=np.int64)
    x = np.zeros((len(idx), c, s + 1, s + 1), dtype=blocks.dtype)
    known = np.zeros((len(idx), 1, s + 1, s + 1), dtype=np.int64)
    for o, t in enumerate(idx):
        r, k = valid[t]
        x[o, :, :s, :s] = blocks[t]
        known[o, 0, :r, :k] = 1
        right = (t + 1) % grid_w != 0 and t + 1 < n
        if right:
            x[o, :, :s, s] = blocks[t + 1, :, :, 0]
            known[o, 0, : valid[t + 1][0], s] = 1
        if t + grid_w < n:
            x[o, :, s, :s] = blocks[t + grid_w, :, 0, :]
            known[o, 0, s, : valid[t + grid_w][1]] = 1
            if right:
                x[o, :, s, s] = blocks[t + grid_w + 1, :, 0, 0]
                known[o, 0, s, s] = 1
        x[o, :, s] *= known[o, 0, s].astype(x.dtype)  # the next blocks' padding: not their pixels
        x[o, :, :, s] *= known[o, 0, :, s].astype(x.dtype)
    return x, known
