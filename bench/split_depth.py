"""How deep to split phase (0,0): the ideal code length of each image at split 1 (container v17), 2 (v18)
and 3 (no container: probed only), with the image's own adaptation fitted at that split, header included.

    .venv/bin/python bench/split_depth.py ../shared/datasets/val

Each split codes the first sub-phase's grid in four sub-phases once more (model/phases.py coding_steps):
split 3 leaves one pixel in 256 of the block without a decoded neighbour, and adds three steps whose
neighbours are eight pixels away, and three more rows to every per-step section of the header. No
container holds split 3, so this probe prices every header in container v18's raw layout (adapt.to_bytes
with v18's split rule extended to 3; v19 only deflates that layout); the -ELBO is elbo_bits' one latent
sample per block, as the encoder's fits.
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
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

VERSIONS = {1: 17, 2: 18, 3: 18}  # split 3: v18's layout, with one more split allowed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--splits", default="1,2,3")
    args = ap.parse_args()
    torch.set_num_threads(1)
    split_for = adapt.split_for
    adapt.split_for = lambda v: 3 if v == 18 else split_for(v)
    model = resolve(args.model)
    splits = [int(s) for s in args.splits.split(",")]
    totals, dims = np.zeros(len(splits)), 0
    print(f"model {model.id}; -ELBO with the adaptation and its header, bits per subpixel, splits {splits}")
    for path in sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png"):
        im = np.asarray(Image.open(path).convert("RGB"))
        side = api.side_for(im.shape[1], im.shape[0], 1)
        row = []
        for split in splits:
            bc = model.block_coder("bitswap", split, side=side)
            (a,) = adapt.choose(bc, [im])
            row.append(elbo_bits(bc, [im], adaptations=[a])[0] + 8 * len(adapt.to_bytes(a, VERSIONS[split])))
        totals += row
        dims += im.size
        print(f"  {path.name:26s}" + "".join(f"{b / im.size:9.4f}" for b in row), flush=True)
    print(f"{'total':28s}" + "".join(f"{b / dims:9.4f}" for b in totals))
    print(f"{'vs split ' + str(splits[0]):28s}" + "".join(f"{b / totals[0] - 1:+9.2%}" for b in totals))


if __name__ == "__main__":
    main()
