"""What an image's latents cost block by block, by how many colours the block holds: the net bits-back cost
(-log p(z) + log q(z|x), one posterior sample per 32x32 block, as elbo_bits draws it) of each block's
latents, grouped by the block's distinct colours.

    .venv/bin/python bench/latent_blocks.py ../shared/datasets/val/waterloo-serrano.png [more images]

Why: on a flat graphic the latents are a third of the bits (bench/bit_breakdown.py), and a block of two
colours needs little from them; this shows whether the model's posterior knows that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.blocks import to_blocks  # noqa: E402
from bitswap_core.coding.rans import cost_bits_each, random_coder  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

GROUPS = ((1, 1), (2, 4), (5, 16), (17, 64), (65, 256), (257, 1024))


def latent_bits(bc, blocks: np.ndarray, seed: int = 0) -> np.ndarray:
    """Net latent bits of each 32x32 block (channels-first uint8 blocks)."""
    cfg, rng, out = bc.cfg, np.random.default_rng(seed), np.zeros(len(blocks))
    for s0 in range(0, len(blocks), 64):
        xb, n = blocks[s0 : s0 + 64], len(blocks[s0 : s0 + 64])
        sampler = random_coder(rng, 4 * cfg.nz * cfg.z_dims * n)
        x, z = torch.from_numpy(xb.astype(np.int64)), []
        for i in range(cfg.nz):
            rows, bases = bc._latent_codes(*bc.net.q_latent(i, x if i == 0 else z[i - 1]))
            zi = np.stack([sampler.pop(rows[j], bases[j], bc.tz) for j in range(n)])
            out[s0 : s0 + n] -= cost_bits_each(zi.reshape(-1), rows.reshape(-1), bases.reshape(-1),
                                               bc.tz).reshape(n, -1).sum(1)
            z.append(torch.from_numpy(zi.reshape(n, cfg.z_channels, 16, 16)))
        for i in range(cfg.nz):
            dist = bc.net.p_latent(i, z[i + 1]) if i < cfg.nz - 1 else bc.net.top_prior(n)
            rows, bases = bc._latent_codes(*dist)
            out[s0 : s0 + n] += cost_bits_each(z[i].reshape(-1).numpy(), rows.reshape(-1), bases.reshape(-1),
                                               bc.tz).reshape(n, -1).sum(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        blocks = to_blocks(im)
        bits = latent_bits(bc, blocks)
        colours = np.array([len(np.unique(b.transpose(1, 2, 0).reshape(-1, b.shape[0]), axis=0)) for b in blocks])
        print(f"{path.name}: {len(blocks)} blocks, latents {bits.sum() / im.size:.3f} bpd, "
              f"{bits.mean():.0f} bits a block")
        for lo, hi in GROUPS:
            sel = (colours >= lo) & (colours <= hi)
            if sel.any():
                print(f"  {lo:4d}-{hi:<4d} colours: {sel.sum():4d} blocks, {bits[sel].mean():6.0f} latent bits a block,"
                      f" {bits[sel].sum() / bits.sum():6.1%} of the latents' bits")


if __name__ == "__main__":
    main()
