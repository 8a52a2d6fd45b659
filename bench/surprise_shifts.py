"""Which surprise shifts (coding/surprise.py) the encoder's fit chooses when it may try the header's whole
range, -12..12, per image: the smallest and largest shift and the score edges. Why: each candidate shift
prices every sampled pixel once more, so the encoder tries only the range the fits use
(adapt._SURPRISE_SHIFTS).

    .venv/bin/python bench/surprise_shifts.py ../shared/datasets/val/*.png
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
from bitswap_core.coding import adapt, surprise  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    full = range(-surprise.MAX_SHIFT, surprise.MAX_SHIFT + 1)
    adapt._SURPRISE_SHIFTS = np.array(sorted(full, key=lambda v: (abs(v), v)))
    model = resolve(args.model)
    lo = hi = 0
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        side = api.side_for(im.shape[1], im.shape[0], 1)
        a = adapt.choose(model.block_coder("bitswap", side=side), [im], None, latent=0)[0]
        if a.surprise is None:
            print(f"{path.name:26s} none kept", flush=True)
            continue
        lo, hi = min(lo, int(a.surprise.min())), max(hi, int(a.surprise.max()))
        print(f"{path.name:26s} shifts {int(a.surprise.min()):+d} .. {int(a.surprise.max()):+d}, "
              f"score edges {a.surprise_edges.tolist()}", flush=True)
    print(f"all: {lo:+d} .. {hi:+d}")


if __name__ == "__main__":
    main()
