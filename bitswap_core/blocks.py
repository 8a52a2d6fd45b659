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
