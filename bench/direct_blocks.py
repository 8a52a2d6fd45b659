"""Direct blocks (coding/direct.py, container v21) per image: what the context model's trace costs and
codes, and what the encoder's shortcuts save in time, and whether they change the bytes: direct.Choice.sure
(no latent try once the last tries went direct by 2x) and direct.graphic (no adaptation fit on an image
whose every block is a cheap candidate).

    .venv/bin/python bench/direct_blocks.py ../shared/datasets/val [--only serrano monarch]
    .venv/bin/python bench/direct_blocks.py --gradients

--gradients: two synthetic 256x256 gradients instead, clean and with Gaussian noise of sigma 0.6, each coded
with and without the adaptation's fit (what direct.GRAPHIC_BPD decides between).

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


def gradients(model) -> None:
    y, x = np.mgrid[0:256, 0:256]
    clean = np.stack([x, y, (x + y) // 2], -1).astype(float)
    noisy = clean + np.random.default_rng(0).normal(0, 0.6, clean.shape)
    keep = direct.GRAPHIC_BPD
    print(f"{'gradient':<10} {'trace bpd':>9} {'graphic':>7} {'with the fit':>20} {'without':>20}")
    for name, arr in (("clean", clean), ("noisy 0.6", noisy)):
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        tr = direct.trace(arr, api.side_for(256, 256))
        out = []
        direct.GRAPHIC_BPD = -1.0  # never a graphic: the fit runs unless adapt_blocks is 0
        try:
            for blocks in (None, 0):
                data = api.compress(im, model, smallest=False, adapt_blocks=blocks)
                d = api.learned_sections(container.unpack(data), model).directs
                out.append(f"{len(data):8d} B {0 if d is None else int(d.sum()):3d} direct")
        finally:
            direct.GRAPHIC_BPD = keep
        print(f"{name:<10} {tr.bits.sum() / arr.size:9.3f} {'yes' if direct.graphic(tr, arr.size) else 'no':>7} "
              f"{out[0]:>20} {out[1]:>20}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, nargs="?")
    ap.add_argument("--gradients", action="store_true", help="the two synthetic gradients instead of a folder")
    ap.add_argument("--model", default=None)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of the file names to run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    if args.gradients:
        return gradients(model)
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
