"""Would a per-image strength of the neighbour predictor (g) or colour residual (h) pay, on top of the
scale adaptation? (Measured 2026-12-02: no, 0.17% at best; not built into the codec.)

    .venv/bin/python bench/mean_adaptation.py ../shared/datasets/val --crop 256

Scales every image's h by 0, 1/2 (k) or g by 3/4, 5/4 (exact floor arithmetic, as a codec would), fits
the scale adaptation for each, and prints the exact model's negative ELBO (bits per subpixel) per image,
in total, and for the per-image best of the variants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

VARIANTS = [("h", 4), ("h", 0), ("h", 2), ("g", 3), ("g", 5)]  # (which, multiplier in quarters)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--crop", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    exact, plain = bc.model, bc.model.p_pixels
    quarters = {"h": 4, "g": 4}

    def scaled(trunk, phase, x=None, known=None):
        r = plain(trunk, phase, x, known)
        if "rcoef" in r:
            r["rcoef"] = torch.div(r["rcoef"] * quarters["h"], 4, rounding_mode="floor")
        if "gate" in r:
            r["gate"] = torch.clamp(torch.div(r["gate"] * quarters["g"], 4, rounding_mode="floor"), -64, 64)
        return r

    exact.p_pixels = scaled
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png")
    ims = [np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB"))[: args.crop, : args.crop]) for p in paths]
    sizes = np.array([im.size for im in ims])
    res = {}
    for which, q in VARIANTS:
        quarters.update(h=4, g=4)
        quarters[which] = q
        bits = elbo_bits(bc, ims, adaptations=adapt.choose(bc, ims))
        res[(which, q)] = np.array(bits) / sizes
        print(f"{which} x {q}/4: " + " ".join(f"{v:.3f}" for v in res[(which, q)]), flush=True)
    for (which, q), r in res.items():
        print(f"{which} x {q}/4 total {(r * sizes).sum() / sizes.sum():.4f}")
    best = np.min(np.stack(list(res.values())), 0)
    print(f"per-image best total {(best * sizes).sum() / sizes.sum():.4f}")


if __name__ == "__main__":
    main()
