"""Image <-> sequence of 32x32 blocks. Borders are padded by edge replication, never cropped.

Padded pixels are not coded: the decoder rebuilds them from the decoded ones the same way, so the networks
see identical blocks on both sides while only real pixels cost bits.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32


def grid(height: int, width: int) -> tuple[int, int]:
    return -(-height // BLOCK), -(-width // BLOCK)


def to_blocks(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (n, C, 32, 32) uint8 in raster order, edge-padded."""
    h, w, c = pixels.shape
    gh, gw = grid(h, w)
    padded = np.pad(pixels, ((0, gh * BLOCK - h), (0, gw * BLOCK - w), (0, 0)), mode="edge")
    return np.ascontiguousarray(
        padded.reshape(gh, BLOCK, gw, BLOCK, c).transpose(0, 2, 4, 1, 3).reshape(gh * gw, c, BLOCK, BLOCK)
    )


def from_blocks(blocks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of to_blocks (drops the padding)."""
    gh, gw = grid(height, width)
    c = blocks.shape[1]
    full = blocks.reshape(gh, gw, c, BLOCK, BLOCK).transpose(0, 3, 1, 4, 2).reshape(gh * BLOCK, gw * BLOCK, c)
    return np.ascontiguousarray(full[:height, :width])


def valid_sizes(height: int, width: int) -> np.ndarray:
    """(n, 2): rows and columns of real pixels in each block (the rest is padding)."""
    gh, gw = grid(height, width)
    rows = np.minimum(BLOCK, height - BLOCK * np.arange(gh))
    cols = np.minimum(BLOCK, width - BLOCK * np.arange(gw))
    return np.stack(np.broadcast_arrays(rows[:, None], cols[None, :]), -1).reshape(-1, 2)


def pad_block(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Fill a block's padding (beyond rows x cols) by edge replication, in place; returns the block."""
    if rows < BLOCK:
        block[:, rows:, :] = block[:, rows - 1 : rows, :]
    if cols < BLOCK:
        block[:, :, cols:] = block[:, :, cols - 1 : cols]
    return block


SIDE = BLOCK + 1  # a block with its border: the first row of the block below, the first column of the next


def bordered(blocks: np.ndarray, valid: np.ndarray, grid_w: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks idx of one image (blocks (n, C, 32, 32), valid (n, 2), raster order, grid_w blocks a row) with
    their border: ((k, C, 33, 33) pixels, (k, 1, 33, 33) int64 known: 1 on real pixels).

    Row 32 is the first row of the block below (column 32 of it: the first pixel of the block below and to the
    right), column 32 the first column of the block to the right, where those blocks exist; every other
    border pixel is 0 and not known. The decoder pops an image's blocks last-first, so when it decodes a
    block these neighbours are already decoded: their pixels are context both sides have (container v8)."""
    n, c = blocks.shape[:2]
    idx = np.asarray(idx, dtype=np.int64)
    x = np.zeros((len(idx), c, SIDE, SIDE), dtype=blocks.dtype)
    known = np.zeros((len(idx), 1, SIDE, SIDE), dtype=np.int64)
    for o, t in enumerate(idx):
        r, k = valid[t]
        x[o, :, :BLOCK, :BLOCK] = blocks[t]
        known[o, 0, :r, :k] = 1
        right = (t + 1) % grid_w != 0 and t + 1 < n
        if right:
            x[o, :, :BLOCK, BLOCK] = blocks[t + 1, :, :, 0]
            known[o, 0, : valid[t + 1][0], BLOCK] = 1
        if t + grid_w < n:
            x[o, :, BLOCK, :BLOCK] = blocks[t + grid_w, :, 0, :]
            known[o, 0, BLOCK, : valid[t + grid_w][1]] = 1
            if right:
                x[o, :, BLOCK, BLOCK] = blocks[t + grid_w + 1, :, 0, 0]
                known[o, 0, BLOCK, BLOCK] = 1
        x[o, :, BLOCK] *= known[o, 0, BLOCK].astype(x.dtype)  # the next blocks' padding: not their pixels
        x[o, :, :, BLOCK] *= known[o, 0, :, BLOCK].astype(x.dtype)
    return x, known
