"""With the residual feedback on, does the blend still pay? Every image coded whole three ways: the
encoder's default adaptation (blend, then residual feedback), the same without the blend, and the same
without the residual feedback; bits per subpixel of the ANS bytes plus the adaptation header (the
container's few fixed bytes left out).

    .venv/bin/python bench/blend_with_feedback.py ../shared/datasets/val
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

SETTINGS = {"default": {}, "no blend": {"blend": 0}, "no feedback": {"residuals": 0}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    tot, dims = np.zeros(len(SETTINGS)), 0
    print(f"{'image':26s} " + " ".join(f"{s:>11s}" for s in SETTINGS) + "   (bpd)")
    for p in sorted(args.folder.glob("*.png")):
        im = np.asarray(Image.open(p).convert("RGB"))
        bc = model.block_coder("bitswap", side=api.side_for(im.shape[1], im.shape[0], 1))
        bits = []
        for kw in SETTINGS.values():
            (a,) = adapt.choose(bc, [im], **kw)
            grids = first_block.choose(bc.at_side(BLOCK), [im], [a])
            coder = encode_images(bc, [im], adaptations=[a], first_grids=grids)[0]
            bits.append(8 * (len(coder.to_bytes()) + len(adapt.to_bytes(a))))
        tot, dims = tot + bits, dims + im.size
        print(f"{p.name:26s} " + " ".join(f"{b / im.size:11.4f}" for b in bits), flush=True)
    print(f"{'total':26s} " + " ".join(f"{t / dims:11.4f}" for t in tot))


if __name__ == "__main__":
    main()
