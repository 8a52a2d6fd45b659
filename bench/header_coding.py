"""How small each image's adaptation header can be: container v18's raw layout, v19's raw deflate of it, bz2
and LZMA of the same bytes, and a probe of a custom coder (an ideal order-0 adaptive model of the per-step
tables transposed so that one parameter's steps lie together, differenced across steps, plus the palette and
the other sections deflated).

    .venv/bin/python bench/header_coding.py ../shared/datasets/val

Each image's adaptation is the encoder's own (api.phase_split_for, api.side_for, adapt.choose), so v18 and
v19 headers are exactly what those containers store; the coded bodies after the header are the same bytes
in both versions (the fit prices sections in the raw layout, adapt.PRICED).
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core import api  # noqa: E402
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

TABLES = ("shifts", "spikes", "spikes2", "blend", "colour", "surprise", "residual")


def adaptive_bytes(symbols: bytes) -> float:
    """Ideal code length in bytes of symbols under an adaptive order-0 model (counts + 1/2 over 256 values)."""
    counts, bits = Counter(), 0.0
    for n, s in enumerate(symbols):
        bits -= np.log2((counts[s] + 0.5) / (n + 128.0))
        counts[s] += 1
    return bits / 8


def probe_bytes(a: adapt.Adaptation) -> float:
    """The custom coder's probe: the per-step tables step-last and differenced, coded order-0 adaptively;
    everything else (palette, value masks, edges, counts) deflated."""
    tables = b"".join(np.diff(np.moveaxis(np.asarray(getattr(a, n)), 0, -1), axis=-1, prepend=0).astype(np.int8)
                      .tobytes() for n in TABLES if getattr(a, n) is not None)
    rest = replace(a, **{n: None for n in TABLES})
    return adaptive_bytes(tables) + len(adapt.to_bytes(rest))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    names = ("v18 raw", "v19 deflate", "bz2", "LZMA", "probe")
    totals, dims = np.zeros(len(names)), 0
    print(f"model {model.id}; adaptation header bytes per image")
    print(f"  {'image':26s}" + "".join(f"{n:>12s}" for n in names))
    for path in sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png"):
        im = np.asarray(Image.open(path).convert("RGB"))
        split = api.phase_split_for(im.shape[1], im.shape[0])
        bc = model.block_coder("bitswap", split, side=api.side_for(im.shape[1], im.shape[0]))
        (a,) = adapt.choose(bc, [im])
        a = replace(a, split=split)
        raw = adapt.to_bytes(a, 18)
        row = np.array([len(raw), len(adapt.to_bytes(a, 19)), len(bz2.compress(raw, 9)),
                        len(lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2,
                                                                                  "preset": 9}])),
                        probe_bytes(a)])
        totals += row
        dims += im.size
        print(f"  {path.name:26s}" + "".join(f"{b:12.0f}" for b in row), flush=True)
    print(f"  {'total':26s}" + "".join(f"{b:12.0f}" for b in totals))
    print(f"  {'bits per subpixel':26s}" + "".join(f"{8 * b / dims:12.5f}" for b in totals))


if __name__ == "__main__":
    main()
