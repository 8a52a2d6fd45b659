"""How deep the stack should be before an image stops coding its first 32x32 parts on the first block's grid
(container v20's lead, coding/first_block.py): the coded size (the ANS bytes) of each image with the lead
ending at several depths, in bits per latent of a 32x32 block, and how many parts went on the grid.

    .venv/bin/python bench/lead_depth.py ../shared/datasets/val --bits 0,3,4,5,6 [--crop 64]

0 is the first part alone (containers 10-19). Each image's own adaptation and grid (adapt.choose,
first_block.choose), split and block side (api.phase_split_for, api.side_for); one encode per depth.
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
from bitswap_core.blocks import BLOCK  # noqa: E402
from bitswap_core.coding import adapt, first_block  # noqa: E402
from bitswap_core.coding.bitsback import encode_images  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--bits", default="0,3,4,5,6", help="lead depths in bits per latent of a 32x32 block")
    ap.add_argument("--crop", type=int, default=0, help="top-left crop of each image (0: whole image)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    bits = [float(b) for b in args.bits.split(",")]
    totals = np.zeros(len(bits))
    print(f"model {model.id}; ANS bytes (parts on the grid) with the lead ending at bits per latent {bits}")
    for path in sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png"):
        im = np.asarray(Image.open(path).convert("RGB"))
        im = im[: args.crop or None, : args.crop or None]
        split, side = api.phase_split_for(im.shape[1], im.shape[0]), api.side_for(im.shape[1], im.shape[0])
        bc = model.block_coder("bitswap", split, side=side)
        (a,) = adapt.choose(bc, [im])
        grids = first_block.choose(bc.at_side(BLOCK), [im], [a])
        per_latent = bc.cfg.nz * bc.at_side(BLOCK).z_dims
        row = []
        for b in bits:
            leads: list[int] = []
            coder = encode_images(bc, [im], adaptations=[a], first_grids=grids, leads=leads,
                                  lead_depth=int(b * per_latent))[0]
            row.append((len(coder.to_bytes()), leads[0]))
        totals += [n for n, _ in row]
        print(f"  {path.name:26s}" + "".join(f"{n:10d} ({k})" for n, k in row), flush=True)
    print(f"  {'total':26s}" + "".join(f"{n:14.0f}" for n in totals))
    print(f"  {'vs ' + str(bits[0]):26s}" + "".join(f"{n / totals[0] - 1:+14.3%}" for n in totals))


if __name__ == "__main__":
    main()
