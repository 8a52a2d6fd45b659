"""Where an image's bits go under the per-image adaptation: the latents' net cost and each coding step's
pixel cost, from the exact model's -ELBO (one latent sample per block, as elbo_bits samples them).

    .venv/bin/python bench/bit_breakdown.py ../shared/datasets/val/waterloo-serrano.png [more images]

Per image: total and latent bits per dimension, and per coding step (phase, sub-phase) its share of the
pixels, bits per subpixel by channel, and its contribution to the image's bits per dimension.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.blocks import to_blocks, valid_sizes  # noqa: E402
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.rans import cost_bits, random_coder  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def breakdown(bc, im: np.ndarray, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """(latent bits, pixel bits (steps, channels), pixel counts per step) of one image, adapted."""
    cfg = bc.cfg
    maps = adapt.coding_maps(adapt.choose(bc, [im]), cfg)
    blocks, valid = to_blocks(im), valid_sizes(*im.shape[:2])
    rng = np.random.default_rng(seed)
    latent, bits, counts = 0.0, np.zeros((len(bc.steps), cfg.channels)), np.zeros(len(bc.steps))
    for s0 in range(0, len(blocks), 64):
        xb, vb = blocks[s0 : s0 + 64], valid[s0 : s0 + 64]
        n = len(xb)
        sampler = random_coder(rng, 4 * cfg.nz * cfg.z_dims * n)
        x, z = torch.from_numpy(xb.astype(np.int64)), []
        for i in range(cfg.nz):  # -log q(z|x) of the sampled latents, then + -log p(z)
            rows, bases = bc._latent_codes(*bc.net.q_latent(i, x if i == 0 else z[i - 1]))
            zi = np.stack([sampler.pop(rows[j], bases[j], bc.tz) for j in range(n)])
            latent -= cost_bits(zi.reshape(-1), rows.reshape(-1), bases.reshape(-1), bc.tz)
            z.append(torch.from_numpy(zi.reshape(n, cfg.z_channels, 16, 16)))
        for i in range(cfg.nz):
            dist = bc.net.p_latent(i, z[i + 1]) if i < cfg.nz - 1 else bc.net.top_prior(n)
            rows, bases = bc._latent_codes(*dist)
            latent += cost_bits(z[i].reshape(-1).numpy(), rows.reshape(-1), bases.reshape(-1), bc.tz)
        for s in bc.pixel_symbols(x, z[0], vb, None if maps is None else maps.repeat(n)):
            bits[s.step, s.channel] += cost_bits(s.values, s.rows, s.bases, bc.tx, s.spikes)
            counts[s.step] += len(s.values) if s.channel == 0 else 0
    return latent, bits, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        latent, bits, counts = breakdown(bc, im)
        print(f"{path.name}: {(latent + bits.sum()) / im.size:.3f} bpd, latents {latent / im.size:.3f}")
        for k, step in enumerate(bc.steps):
            per = " ".join(f"{b:.3f}" for b in bits[k] / max(counts[k], 1))
            print(f"  step {str(step):8} {counts[k] / counts.sum():5.1%} of pixels, bits/subpixel R G B {per}, "
                  f"{bits[k].sum() / im.size:.3f} bpd")


if __name__ == "__main__":
    main()
