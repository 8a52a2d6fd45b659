"""What widening the latents' distributions saves: the exact model's -ELBO with every latent scale level
(q and p alike) shifted by t, on evenly spread blocks of each image, with each image's adaptation.

    .venv/bin/python bench/latent_shift.py ../shared/datasets/val/waterloo-serrano.png [more images]

The measurement behind the latent shift of container v11 (coding/adapt.py fit_latent): one scale level is
6% of a latent's scale. The same latent draws (sampler seeds) for every t, so the columns are coupled;
in-sample (the encoder's fit sees 16 blocks, this --blocks of them), so the best column is an upper bound.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.blocks import grid, to_blocks, valid_sizes  # noqa: E402
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.rans import random_coder  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--blocks", type=int, default=48, help="evenly spread blocks per image")
    ap.add_argument("--seeds", type=int, default=3, help="latent draws per block, averaged")
    ap.add_argument("--shifts", default="0,1,2,3,4,5,6,8,10")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    cfg, shifts = bc.cfg, [int(t) for t in args.shifts.split(",")]
    print(f"model {resolve(args.model).id}; -ELBO bpd with latent scale levels shifted by t, {args.blocks} blocks, "
          f"{args.seeds} draws")
    print(f"{'image':<26} " + " ".join(f"{'t=' + str(t):>7}" for t in shifts) + "   best")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        (a,) = adapt.choose(bc, [im], latent=0)
        blocks, valid = to_blocks(im), valid_sizes(*im.shape[:2])
        idx = np.unique(np.linspace(0, len(blocks) - 1, args.blocks).round().astype(int))
        x = torch.from_numpy(blocks[idx].astype(np.int64))
        border = bc.borders([(blocks, valid, grid(*im.shape[:2])[1], idx)])
        dims = int((valid[idx][:, 0] * valid[idx][:, 1]).sum()) * im.shape[2]
        row = []
        for t in shifts:
            maps = adapt.coding_maps([replace(a, latent=t)] * len(idx), cfg)
            bits = [bc.sample_elbo_bits(x, valid[idx], [random_coder(np.random.default_rng(s),
                                                                     4 * cfg.nz * cfg.z_dims * len(idx))] * len(idx),
                                        maps, border).sum() for s in range(args.seeds)]
            row.append(np.mean(bits) / dims)
        best = int(np.argmin(row))
        print(f"{path.name:<26} " + " ".join(f"{v:7.4f}" for v in row)
              + f"   t={shifts[best]} ({100 * (row[best] / row[0] - 1):+.2f}%)", flush=True)


if __name__ == "__main__":
    main()
