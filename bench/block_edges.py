"""Where in a 32x32 block the pixel bits go: does the tiling cost edges? (issue 7: cross-block context)

    .venv/bin/python bench/block_edges.py ../shared/datasets/val --crop 256

Blocks are coded independently given their latents, so a block's border pixels have no decoded neighbours
on one side. This prints the exact model's mean cost of p(x|z1) per subpixel (bits, one latent sample
per block) by row and column position within the block, the border against the interior, and the share
of the total that the outermost rows and columns cost beyond the interior rate: an upper bound on what
context from already decoded neighbouring blocks could save in the pixel term (left/top context reaches
only half of the border).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.blocks import BLOCK, grid, to_blocks, valid_sizes  # noqa: E402
from bitswap_core.coding.rans import cost_bits_each, random_coder  # noqa: E402
from bitswap_core.model import phases  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def position_costs(bc, im: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int]:
    """Sum over full blocks of each channel's and position's pixel cost (bits, (C, 32, 32)), and the block
    count."""
    cfg, m = bc.cfg, bc.net
    blocks, valid = to_blocks(im), valid_sizes(*im.shape[:2])
    full = [i for i, (r, c) in enumerate(valid) if r == BLOCK and c == BLOCK]
    border = bc.borders([(blocks, valid, grid(*im.shape[:2])[1], full)])
    blocks, valid = blocks[full], valid[full]
    n = len(blocks)
    rng = np.random.default_rng(seed)
    sampler = random_coder(rng, 4 * cfg.z_dims * n)
    x = torch.from_numpy(blocks.astype(np.int64))
    rows, bases = bc._latent_codes(*m.q_latent(0, x))
    z1 = np.stack([sampler.pop(rows[j], bases[j], bc.tz) for j in range(n)])
    z1 = torch.from_numpy(z1.reshape(n, cfg.z_channels, BLOCK // 2, BLOCK // 2))
    cost = np.zeros((cfg.channels, BLOCK, BLOCK))
    # step by step, channel by channel, block by block (all full)
    for s in bc.pixel_symbols(x, z1, valid, border=border):
        at = bc.step_view(cost, s.step)[s.channel]
        at += cost_bits_each(s.values, s.rows, s.bases, bc.tx).reshape(at.shape)
    return cost, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--crop", type=int, default=256, help="top-left crop of each image (0: whole image)")
    args = ap.parse_args()
    model = resolve(args.model)
    bc = model.block_coder("bitswap")
    total, count = np.zeros((bc.cfg.channels, BLOCK, BLOCK)), 0
    for p in sorted(q for q in args.data.iterdir() if q.suffix.lower() == ".png"):
        im = np.asarray(Image.open(p).convert("RGB"))
        im = im[: args.crop, : args.crop] if args.crop else im
        cost, n = position_costs(bc, np.ascontiguousarray(im))
        total, count = total + cost, count + n
    c = total.sum(0) / (count * bc.cfg.channels)  # bits per subpixel at each position
    inner = c[2:-2, 2:-2].mean()
    print(f"model {model.id}, {count} full blocks; p(x|z1) bits per subpixel by position in the block")
    for name, v in (("row 0", c[0]), ("row 1", c[1]), ("rows 2-29", c[2:-2]), ("row 30", c[-2]), ("row 31", c[-1]),
                    ("col 0", c[:, 0]), ("col 1", c[:, 1]), ("col 31", c[:, -1])):
        print(f"  {name:<10} {v.mean():.3f}")
    border = np.ones((BLOCK, BLOCK), bool)
    border[2:-2, 2:-2] = False
    excess = ((c - inner) * border).sum() / c.sum()
    print(f"  interior (2..29)^2 {inner:.3f}; all {c.mean():.3f}")
    print(f"  the two outermost rows/cols cost {100 * excess:.1f}% of the pixel bits beyond the interior rate")
    if bc.cfg.pixel_phases == 4:  # which pixels carry the cost: phase 0 has no decoded neighbours
        per = total / count
        print("  by pixel phase (row, col offset in each 2x2 cell), bits per subpixel: R G B, mean, share")
        for dy, dx in phases.offsets(4):
            ch = per[:, dy::2, dx::2].mean(axis=(1, 2))
            share = per[:, dy::2, dx::2].sum() / per.sum()
            colours = " ".join(f"{v:.3f}" for v in ch)
            print(f"  phase ({dy},{dx})  {colours}  {ch.mean():.3f}  {100 * share:.0f}%")


if __name__ == "__main__":
    main()
