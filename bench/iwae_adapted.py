"""What Monte Carlo bits-back coding (BB-IS, Ruan et al. 2021) could take in the coded path: the exact
model's importance-weighted bound with K latent samples per block, -log2 mean_k 2^-(bits_k), against
its single-sample -ELBO (what Bit-Swap codes at), with the per-image adaptation the codec fits, per
image and in total (bits per dimension, the adaptation's header left out of both).

bench/inference_gap.py measured the bound on the float model as is (-1.2% at K = 8 on tiles); a per-image
correction of the encoder that took 1.2% as is took nothing on top of the adaptation
(bench/encoder_correction.py), so this asks the same of the importance-weighted bound.

    .venv/bin/python bench/iwae_adapted.py ../shared/datasets/val/*.png --k 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.blocks import grid, to_blocks, valid_sizes  # noqa: E402
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.rans import random_coder  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def block_bits(bc, im: np.ndarray, adaptation: adapt.Adaptation, seed: int) -> np.ndarray:
    """Each block's -ELBO in bits with one latent sample drawn from a sampler seeded by seed."""
    cfg = bc.cfg
    blocks, valid = to_blocks(im), valid_sizes(im.shape[0], im.shape[1])
    per_row = grid(im.shape[0], im.shape[1])[1]
    rng = np.random.default_rng(seed)
    out = []
    for s in range(0, len(blocks), 64):
        xb, vb = blocks[s : s + 64], valid[s : s + 64]
        n = len(xb)
        sampler = random_coder(rng, 4 * cfg.nz * cfg.z_dims * n)
        maps = adapt.coding_maps([adaptation] * n, cfg)
        border = bc.borders([(blocks, valid, per_row, np.arange(s, s + n))])
        out.append(bc.sample_elbo_bits(torch.from_numpy(xb.astype(np.int64)), vb, [sampler] * n, maps, border))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--k", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    bc = model.block_coder("bitswap")
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= args.k]
    totals, dims = np.zeros((2, len(ks))), 0
    print(f"model {model.id}; K = {ks}; bpd with the per-image adaptation: mean single-sample -ELBO / bound")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        adaptation = adapt.choose(bc, [im], None)[0]
        bits = np.stack([block_bits(bc, im, adaptation, 1000 + k) for k in range(args.k)], 1)  # (blocks, K)
        rows = []
        for j, k in enumerate(ks):
            elbo = bits[:, :k].mean(1).sum()
            low = bits[:, :k].min(1, keepdims=True)  # log-sum-exp in base 2, stable
            bound = (low[:, 0] - np.log2(np.exp2(low - bits[:, :k]).mean(1))).sum()
            totals[:, j] += (elbo, bound)
            rows.append(f"K={k}: {elbo / im.size:.4f} / {bound / im.size:.4f} ({100 * (bound / elbo - 1):+.2f}%)")
        dims += im.size
        print(f"{path.name:<24} " + "  ".join(rows), flush=True)
    print(f"{'total':<24} " + "  ".join(f"K={k}: {e / dims:.4f} / {b / dims:.4f} ({100 * (b / e - 1):+.2f}%)"
                                       for k, e, b in zip(ks, *totals)))


if __name__ == "__main__":
    main()
