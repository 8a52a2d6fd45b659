"""What the per-image adaptation (bitswap_core/coding/adapt.py) saves, and what it costs encoder and decoder.

    .venv/bin/python bench/adaptation.py ../shared/datasets/val --blocks 0 16s 16o 16n 16b 16k 16c 16l 16v 16p 16

For each setting of adapt_blocks (0 = the model as is, "all" = fit on every block of the image; a trailing
"s" = scale shifts only, "o" = and one spike per pixel, "n" = and both spikes but no blend, "b" = the
blend of phase (0,0)'s sub-phases only, "k" = everything but the colour blend (container v8's), "c" = and
the colour blend (v9), "l" = and the coarse first block (v10), "v" = and the latent shift (v11), "p" = and
the value masks (v12), none = and the palette in their place where it pays (v13): see
bench/adapt_setting.py) this compresses every image with the learned path (smallest=False), decodes and
verifies it, and prints bits per subpixel per image and in total, and the encode and decode times relative
to the first setting and in KB/s of raw pixels per core, all in one run (the settings alternate image by
image, so machine noise hits them alike).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapt_setting import parse, parts_of  # noqa: E402
from roundtrip import timed_round_trip  # noqa: E402

from bitswap_core import api  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def _compress(im, model, setting: str) -> bytes:
    """api.compress with the setting's adapt_blocks and parts (bench/adapt_setting.py)."""
    with parts_of(setting):
        return api.compress(im, model, smallest=False, adapt_blocks=parse(setting)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--blocks", nargs="+", default=["0", "16s", "16o", "16n", "16b", "16k", "16"])
    ap.add_argument("--crop", type=int, default=0, help="top-left crop of each image (0: whole image)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = resolve(args.model)
    settings = args.blocks
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png")
    bits = np.zeros(len(settings))
    secs = np.zeros(len(settings))
    dsecs = np.zeros(len(settings))
    dims = 0
    api.compress(Image.new("RGB", (40, 40)), model, smallest=False)  # warm-up (JIT, tables)
    print(f"model {model.id}; bits per subpixel with adapt_blocks = {args.blocks}")
    for p in paths:
        im = Image.open(p).convert("RGB")
        im = im.crop((0, 0, min(args.crop, im.width), min(args.crop, im.height))) if args.crop else im
        n = im.width * im.height * 3
        dims += n
        row = []
        for j, b in enumerate(settings):
            data, e, d = timed_round_trip(im, model, f"{p.name}: adapt_blocks={b}", _compress, im, model, b)
            secs[j] += e
            dsecs[j] += d
            bits[j] += 8 * len(data)
            row.append(8 * len(data) / n)
        print(f"  {p.name:<26} " + " ".join(f"{v:7.4f}" for v in row), flush=True)
    print(f"total ({dims / 3e6:.2f} MP)".ljust(29) + " ".join(f"{v:7.4f}" for v in bits / dims))
    print(f"encode time vs {settings[0]}".ljust(29) + " ".join(f"{v:7.3f}" for v in secs / secs[0]))
    print(f"decode time vs {settings[0]}".ljust(29) + " ".join(f"{v:7.3f}" for v in dsecs / dsecs[0]))
    print(f"saving vs {settings[0]}".ljust(29) + " ".join(f"{100 * (1 - v):6.2f}%" for v in bits / bits[0]))
    # raw pixel bytes (one per subpixel) per second per thread: the codec's throughput unit
    print("encode KB/s per core".ljust(29) + " ".join(f"{v:7.1f}" for v in dims / secs / args.threads / 1e3))
    print("decode KB/s per core".ljust(29) + " ".join(f"{v:7.1f}" for v in dims / dsecs / args.threads / 1e3))


if __name__ == "__main__":
    main()
