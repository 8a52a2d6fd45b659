"""Would some blocks code smaller with the first block's coarse latents than with bits-back? (issues 4, 7)

    .venv/bin/python bench/coarse_latents.py ../shared/datasets/val [--grids 16 32 64]

A bits-back block pays its latents' net cost (-log p(z) + log q(z|x) of the sampled z, about their KL); a
first block (container v10, coding/first_block.py) instead sends z1 as the cell of k bins holding its
posterior mean, under p(z1 | z2 at its prior's mode), with z2 at that mode for free; grid 0 sends no latents
at all (z1 at its prior's mode too). On a drawing like
waterloo-serrano the latents are 39% of the bits (bench/bit_breakdown.py), so a per-block choice between the
two might pay. This estimates it per image from ideal code lengths, with the image's own adaptation and
block side (api.side_for), one latent sample per bits-back block (as elbo_bits): the bits-back total, the
coarse total at the image's best grid, and the per-block minimum at the grid (column k) where it is least,
plus one flag bit a block.
Not a codec: nothing here is coded or decoded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core import api  # noqa: E402
from bitswap_core.blocks import grid, to_blocks, valid_sizes  # noqa: E402
from bitswap_core.coding import adapt, first_block  # noqa: E402
from bitswap_core.coding.rans import cell_cost_bits, cost_bits, cost_bits_each, random_coder  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def pixel_bits(bc, x, z1, valid, maps, border, n: int) -> np.ndarray:
    bits = np.zeros(n)
    for s in bc.pixel_symbols(x, z1, valid, maps, border):
        bits[s.image] += cost_bits_each(s.values, s.rows, s.bases, bc.tx, s.spikes, s.cells).sum()
    return bits


def block_costs(bc, im: np.ndarray, grids: list[int], seed: int = 0, batch: int = 16
                ) -> tuple[np.ndarray, np.ndarray]:
    """(bits-back bits per block (n,), coarse bits per grid and block (len(grids), n)) of one image."""
    cfg, side = bc.cfg, bc.side
    maps_all = adapt.coding_maps(adapt.choose(bc, [im]), cfg)
    blocks, valid, gw = to_blocks(im, side), valid_sizes(*im.shape[:2], side), grid(*im.shape[:2], side)[1]
    rng = np.random.default_rng(seed)
    zs = side // 2
    bb, coarse = np.zeros(len(blocks)), np.zeros((len(grids), len(blocks)))
    for s0 in range(0, len(blocks), batch):
        xb, vb = blocks[s0 : s0 + batch], valid[s0 : s0 + batch]
        n = len(xb)
        maps = None if maps_all is None else maps_all.repeat(n)
        border = bc.borders([(blocks, valid, gw, np.arange(s0, s0 + n))])
        x = torch.from_numpy(xb.astype(np.int64))
        shift = adapt.latent_shift(maps)
        # bits-back: the sampled latents' net cost, then the pixels given z1
        sampler = random_coder(rng, 4 * cfg.nz * cfg.z_channels * zs * zs * n)
        z, net = [], np.zeros(n)
        for i in range(cfg.nz):
            rows, bases = bc._latent_codes(*bc.net.q_latent(i, x if i == 0 else z[i - 1]), shift)
            zi = np.stack([sampler.pop(rows[j], bases[j], bc.tz) for j in range(n)])
            net -= [cost_bits(zi[j], rows[j].reshape(-1), bases[j].reshape(-1), bc.tz) for j in range(n)]
            z.append(torch.from_numpy(zi.reshape(n, cfg.z_channels, zs, zs)))
        for i in range(cfg.nz):
            dist = bc.net.p_latent(i, z[i + 1]) if i < cfg.nz - 1 else bc.top_prior(n)
            rows, bases = bc._latent_codes(*dist, shift)
            net += [cost_bits(z[i][j].reshape(-1).numpy(), rows[j].reshape(-1), bases[j].reshape(-1), bc.tz)
                    for j in range(n)]
        bb[s0 : s0 + n] = net + pixel_bits(bc, x, z[0], vb, maps, border, n)
        # coarse: z1's cell under p(z1 | z2 at its mode), the upper layers free
        q_mean = bc.q1(x)[0]
        prior = first_block.prior_above(bc, n)
        rows, bases = bc._latent_codes(*prior, shift)
        for g, k in enumerate(grids):
            if k == 0:  # no latents at all: z1 at its prior's mode, free; the pixels carry everything
                z1 = first_block.mode_bins(prior[0], cfg.mean_frac, cfg.z_bins)
                coarse[g, s0 : s0 + n] = pixel_bits(bc, x, z1, vb, maps, border, n)
                continue
            cells, z1 = first_block.latent_cells(bc, q_mean, [k] * n)
            lat = [cell_cost_bits(cells[j], rows[j], bases[j], bc.tz, k) for j in range(n)]
            coarse[g, s0 : s0 + n] = np.array(lat) + pixel_bits(bc, x, z1, vb, maps, border, n)
    return bb, coarse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("val", type=Path)
    ap.add_argument("--grids", type=int, nargs="+", default=[0, 16, 32, 64],
                    help="cell widths in latent bins; 0: no latents, z1 at its prior's mode")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    paths = sorted(p for p in args.val.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".bmp"))
    tot = np.zeros(4)
    print(f"{'image':28} {'side':>4} {'bits-back':>9} {'coarse':>8} {'k':>3} {'per block':>9} "
          f"{'coarse blocks':>13} change")
    for path in paths:
        im = np.asarray(Image.open(path).convert("RGB"))
        bc = model.block_coder("bitswap", side=api.side_for(im.shape[1], im.shape[0]))
        bb, coarse = block_costs(bc, im, args.grids)
        mixed = np.minimum(coarse, bb[None]).sum(1) + len(bb)  # one flag bit a block
        g = int(mixed.argmin())
        dims = im.size
        row = np.array([bb.sum(), coarse.sum(1).min(), mixed[g], dims])
        tot += row
        print(f"{path.name:28} {bc.side:4} {row[0] / dims:9.4f} {row[1] / dims:8.4f} "
              f"{args.grids[g]:3} {row[2] / dims:9.4f} {int((coarse[g] < bb).sum()):6} of {len(bb):<5} "
              f"{row[2] / row[0] - 1:+.2%}", flush=True)
    print(f"{'all':28} {'':4} {tot[0] / tot[3]:9.4f} {tot[1] / tot[3]:8.4f} {'':3} {tot[2] / tot[3]:9.4f} "
          f"{'':13} {tot[2] / tot[0] - 1:+.2%}")


if __name__ == "__main__":
    main()
