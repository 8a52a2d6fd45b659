"""How big a sample the per-image adaptation needs when the image is coded in large blocks: the exact
model's -ELBO (two latent draws, headers left out) of each image in blocks of one side, with the adaptation
fitted on 32x32 blocks by their own rule (16 to 64 of them) or on 4, 8, 16 or 32 blocks of 64x64
(adapt.FIT_SIDE), and the fit's seconds on one thread. The sum over the images is the last line.

    V=../shared/datasets/val
    .venv/bin/python bench/block_side_fit.py 64 $V/usc-4.1.0[1458].png
    .venv/bin/python bench/block_side_fit.py 128 $V/{usc-4.2.01,usc-house,waterloo-peppers3,waterloo-sail}.png
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

FITS = [(32, None), (64, 4), (64, 8), (64, 16), (64, 32)]  # (the side fitted on, blocks; None: the rule)


def main() -> None:
    torch.set_num_threads(1)
    m = resolve(None)
    side = int(sys.argv[1])
    bc = m.block_coder("bitswap", side=side)
    tot: dict = {}
    for name in sys.argv[2:]:
        arr = np.asarray(Image.open(name).convert("RGB"))
        row = []
        for fit, sample in FITS:
            adapt.FIT_SIDE = fit
            t = time.perf_counter()
            ad = adapt.choose(bc, [arr], sample)
            dt = time.perf_counter() - t
            e = np.mean([elbo_bits(bc, [arr], seed=s, adaptations=ad)[0] for s in range(2)]) / arr.size
            tot.setdefault((fit, sample), [0.0, 0.0])
            tot[(fit, sample)][0] += e
            tot[(fit, sample)][1] += dt
            row.append(f"{fit}/{sample}: {e:.4f} ({dt:.1f}s)")
        print(Path(name).name, " ".join(row), flush=True)
    print({k: (round(v[0], 4), round(v[1], 1)) for k, v in tot.items()})


if __name__ == "__main__":
    main()
