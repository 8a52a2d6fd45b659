"""Where an image's bits go under the per-image adaptation: the latents' net cost and each coding step's
pixel cost, from the exact model's -ELBO (one latent sample per block, as elbo_bits samples them).

    .venv/bin/python bench/bit_breakdown.py ../shared/datasets/val/waterloo-serrano.png [more images]

Per image: total and latent bits per dimension, and per coding step (phase, sub-phase) its share of the
pixels, bits per subpixel by channel, and its contribution to the image's bits per dimension; the latents'
cost per layer. With --edges, each step's full-block cells on the last row or column of its grid (whose
right or lower neighbours lie in the next block, so the neighbour predictor averages fewer of them) apart
from the others.
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
from bitswap_core.coding.rans import cost_bits, cost_bits_each, random_coder  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def breakdown(bc, im: np.ndarray, seed: int = 0, edges: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(net latent bits per layer (nz,), pixel bits (steps, channels), pixel counts per step) of one image,
    adapted. A layer's net bits are -log p(z_i | z_i+1) + log q(z_i | ...) of its sampled latents: what the
    bits-back chain pays for it (the top layer's prior is the fixed logistic(0, 1))."""
    cfg = bc.cfg
    maps = adapt.coding_maps(adapt.choose(bc, [im]), cfg)
    blocks, valid = to_blocks(im), valid_sizes(*im.shape[:2])
    rng = np.random.default_rng(seed)
    latent, bits, counts = np.zeros(cfg.nz), np.zeros((len(bc.steps), cfg.channels)), np.zeros(len(bc.steps))
    for s0 in range(0, len(blocks), 64):
        xb, vb = blocks[s0 : s0 + 64], valid[s0 : s0 + 64]
        n = len(xb)
        sampler = random_coder(rng, 4 * cfg.nz * cfg.z_dims * n)
        x, z = torch.from_numpy(xb.astype(np.int64)), []
        for i in range(cfg.nz):  # -log q(z|x) of the sampled latents, then + -log p(z)
            rows, bases = bc._latent_codes(*bc.net.q_latent(i, x if i == 0 else z[i - 1]))
            zi = np.stack([sampler.pop(rows[j], bases[j], bc.tz) for j in range(n)])
            latent[i] -= cost_bits(zi.reshape(-1), rows.reshape(-1), bases.reshape(-1), bc.tz)
            z.append(torch.from_numpy(zi.reshape(n, cfg.z_channels, 16, 16)))
        for i in range(cfg.nz):
            dist = bc.net.p_latent(i, z[i + 1]) if i < cfg.nz - 1 else bc.net.top_prior(n)
            rows, bases = bc._latent_codes(*dist)
            latent[i] += cost_bits(z[i].reshape(-1).numpy(), rows.reshape(-1), bases.reshape(-1), bc.tz)
        border = bc.borders([(blocks, valid, grid(*im.shape[:2])[1], np.arange(s0, s0 + n))])
        for s in bc.pixel_symbols(x, z[0], vb, None if maps is None else maps.repeat(n), border):
            each = cost_bits_each(s.values, s.rows, s.bases, bc.tx, s.spikes, s.cells)
            bits[s.step, s.channel] += each.sum()
            counts[s.step] += len(s.values) if s.channel == 0 else 0
            side = 16 if bc.steps[s.step][1] < 0 else 8
            if edges is not None and len(each) == side * side:  # a full block
                last = np.zeros((side, side), bool)
                last[-1], last[:, -1] = True, True
                for k, sel in enumerate((~last.ravel(), last.ravel())):
                    edges[s.step, s.channel, k] += (each[sel].sum(), sel.sum())
    return latent, bits, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--edges", action="store_true",
                    help="split each step's cost into cells on the block's last row or column and the others")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        edges = np.zeros((len(bc.steps), bc.cfg.channels, 2, 2)) if args.edges else None
        latent, bits, counts = breakdown(bc, im, edges=edges)
        layers = ", ".join(f"z{i + 1} {v / im.size:.3f}" for i, v in enumerate(latent))
        print(f"{path.name}: {(latent.sum() + bits.sum()) / im.size:.3f} bpd, latents {latent.sum() / im.size:.3f} "
              f"({layers})")
        for k, step in enumerate(bc.steps):
            per = " ".join(f"{b:.3f}" for b in bits[k] / max(counts[k], 1))
            print(f"  step {str(step):8} {counts[k] / counts.sum():5.1%} of pixels, bits/subpixel R G B {per}, "
                  f"{bits[k].sum() / im.size:.3f} bpd")
            if edges is not None:
                rate = edges[k, :, :, 0] / np.maximum(edges[k, :, :, 1], 1)  # (channels, interior / edge)
                share = edges[k, 0, 1, 1] / max(edges[k, 0, :, 1].sum(), 1)
                print(f"      full blocks: other cells R G B {' '.join(f'{v:.3f}' for v in rate[:, 0])}; "
                      f"last row or column ({share:.1%} of cells) {' '.join(f'{v:.3f}' for v in rate[:, 1])}")


if __name__ == "__main__":
    main()
