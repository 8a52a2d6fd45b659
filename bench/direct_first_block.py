"""Whether an image's first block should be allowed to go direct (coding/direct.py): the learned path as it
is against the same with the first block kept off the context model, per image and in total, and what the
better of the two per image would save (the encoder could try both).

    .venv/bin/python bench/direct_first_block.py ../shared/datasets/val --crop 64

Why: the encoder decides each block greedily; a first block that goes direct leaves the latent model's first
block to the lead's tries, which once lost up to 10% on small images (docs/BENCHMARKS.md, "Direct blocks").
Prints only the images whose size differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core import api  # noqa: E402
from bitswap_core.coding import direct  # noqa: E402


def _sizes(im: Image.Image) -> tuple[int, int]:
    """(bytes as the encoder codes it, bytes with the first block never direct)."""
    now = len(api.compress(im, smallest=False))
    tries, sure = direct.Choice.tries, direct.Choice.sure
    direct.Choice.tries = lambda self, coders, led, js, t: {} if t == 0 else tries(self, coders, led, js, t)
    direct.Choice.sure = lambda self, j, t: t != 0 and sure(self, j, t)
    try:
        return now, len(api.compress(im, smallest=False))
    finally:
        direct.Choice.tries, direct.Choice.sure = tries, sure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--crop", type=int, default=0, help="top-left crop of each image (0: whole image)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    total = [0, 0, 0]
    for p in sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png"):
        im = Image.open(p).convert("RGB")
        if args.crop:
            im = im.crop((0, 0, args.crop, args.crop))
        now, never = _sizes(im)
        for i, v in enumerate((now, never, min(now, never))):
            total[i] += v
        if now != never:
            print(f"{p.name:<24} {now:9d} B  first never direct {never:9d} B  {100 * (never / now - 1):+7.2f}%",
                  flush=True)
    print(f"total {total[0]} B; first never direct {100 * (total[1] / total[0] - 1):+.3f}%; the better of the two "
          f"per image {100 * (total[2] / total[0] - 1):+.3f}%")


if __name__ == "__main__":
    main()
