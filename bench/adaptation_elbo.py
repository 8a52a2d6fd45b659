"""The per-image adaptation compared by -ELBO rather than coded size: the same latent samples for every
setting (elbo_bits' seeded sampler), so small differences between settings are not hidden by the spread
of the coded size from its one latent sample per block (which on a 256x256 image is a few thousandths
of a bit per dimension).

    .venv/bin/python bench/adaptation_elbo.py ../shared/datasets/val/usc-4.1.0*.png --settings 16o 16n

Settings as in bench/adaptation.py (bench/adapt_setting.py). Per image and in total: the exact model's
-ELBO with the adaptation each setting fits, plus its header, in bits per dimension.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from adapt_setting import parse
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--settings", nargs="+", default=["16o", "16n", "16b", "16k", "16"])
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    totals, dims = np.zeros(len(args.settings)), 0
    print(f"{'image':<26} " + " ".join(f"{s:>8}" for s in args.settings) + "   (-ELBO + header, bpd)")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        row = []
        for setting in args.settings:
            blocks, spikes, blend, colour, latent, values, paletted, shock, residuals = parse(setting)
            a = (adapt.choose(bc, [im], blocks, spikes=spikes, blend=blend, colour=colour, latent=latent,
                              values=values, paletted=paletted, shock=shock, residuals=residuals)
                 if blocks is None or blocks else [adapt.NONE])
            header = adapt.to_bytes(a[0], 17 if residuals else 16 if shock else 13 if paletted else 12 if values
                                    else 11 if latent else 9 if colour else 8)
            row.append(elbo_bits(bc, [im], adaptations=a)[0] + 8 * len(header))
        totals += row
        dims += im.size
        print(f"{path.name:<26} " + " ".join(f"{b / im.size:8.4f}" for b in row), flush=True)
    print(f"{'total':<26} " + " ".join(f"{t / dims:8.4f}" for t in totals))


if __name__ == "__main__":
    main()
