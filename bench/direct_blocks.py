"""Direct blocks (coding/direct.py, container v21) per image: what the context model's trace costs and
codes, and what the encoder's shortcuts save in time, and whether they change the bytes: direct.Choice.sure
(no latent try once the last tries went direct by 2x) and direct.graphic (no adaptation fit on an image
whose every block is a cheap candidate).

    .venv/bin/python bench/direct_blocks.py ../shared/datasets/val [--only serrano monarch]

Per image: its block side, the trace's seconds and bits per dimension (the context model alone, every block),
how many blocks are candidates (at most direct.CANDIDATE_BPD) and whether it counts as a graphic, then
api.compress (learned path) with both shortcuts off and on, in one run: seconds, bytes and blocks direct.
Both payloads are decoded and verified.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core import api, container  # noqa: E402
from bitswap_core.coding import direct  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def _coded(im: Image.Image, model, shortcuts: bool) -> tuple[float, bytes]:
    keep = direct.Choice.SURE_AFTER, direct.GRAPHIC_BPD
    if not shortcuts:
        direct.Choice.SURE_AFTER, direct.GRAPHIC_BPD = 10**9, -1.0
    try:
        t = time.perf_counter()
        data = api.compress(im, model, smallest=False)
        return time.perf_counter() - t, data
    finally:
        direct.Choice.SURE_AFTER, direct.GRAPHIC_BPD = keep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of the file names to run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png")
    if args.only:
        paths = [p for p in paths if any(s in p.name for s in args.only)]
    direct.trace(np.zeros((8, 8, 3), np.uint8), 32)  # compile
    api.compress(Image.new("RGB", (40, 40)), model, smallest=False)  # warm-up
    print(f"{'image':<24} {'side':>4} {'trace s':>7} {'bpd':>6} {'cand':>7} {'graphic':>7}   {'no shortcuts':>22}   "
          f"{'shortcuts':>22}")
    for p in paths:
        im = Image.open(p).convert("RGB")
        arr = np.asarray(im)
        side = api.side_for(im.width, im.height)
        t = time.perf_counter()
        tr = direct.trace(arr, side)
        secs = time.perf_counter() - t
        cand = sum(tr.candidate(k) for k in range(len(tr.bits)))
        runs = []
        for shortcuts in (False, True):
            s, data = _coded(im, model, shortcuts)
            assert api.decompress(data, model).tobytes() == im.tobytes()
            d = api.learned_sections(container.unpack(data), model).directs
            runs.append(f"{s:6.1f} s {len(data):8d} B {0 if d is None else int(d.sum()):3d}")
        print(f"{p.name:<24} {side:4d} {secs:7.2f} {tr.bits.sum() / arr.size:6.3f} {cand:3d}/{len(tr.bits):<3d} "
              f"{'yes' if direct.graphic(tr, arr.size) else 'no':>7}   {runs[0]}   {runs[1]}", flush=True)


if __name__ == "__main__":
    main()
