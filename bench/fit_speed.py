"""The encoder's adaptation fit, before and after its compiled candidate grids (coding/grid_costs.py) and the
reuse of the networks' outputs between its two passes over the sample, side by side in one run (the same
bytes both ways):

    .venv/bin/python bench/fit_speed.py                                   # 8 256x256 crops, one batch
    .venv/bin/python bench/fit_speed.py ../shared/datasets/val/*.png      # and these one at a time

"before" prices each candidate with a numpy pass (grid_costs.reference: cost_bits_each and np.bincount per
candidate, the fits' code up to commit b2da426) and runs the networks again for the feedback fit; "after"
is the code as it is. Alternates the two image by image (the crops as one batch, the pipeline's path), one
thread, the learned path; prints encode seconds, the fit's seconds (adapt.choose) and KB/s of raw pixels,
per version and as ratios, and checks the payloads are identical and decode exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from codec_speed import crops
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bitswap_core  # noqa: E402
from bitswap_core.coding import adapt, grid_costs  # noqa: E402
from bitswap_core.coding.bitsback import BlockCoder  # noqa: E402

_RUN, _SYMBOLS, _CHOOSE = grid_costs._run, BlockCoder.pixel_symbols, adapt.choose
FIT = [0.0]


def _timed_choose(*a, **k):
    t0 = time.perf_counter()
    try:
        return _CHOOSE(*a, **k)
    finally:
        FIT[0] += time.perf_counter() - t0


def _without_nets(self, x, z1, valid, maps=None, border=None, nets=None):
    """pixel_symbols as before the reuse: the networks run on every pass, whatever nets the caller holds."""
    return _SYMBOLS(self, x, z1, valid, maps, border)


@contextmanager
def version(name: str):
    """The fit as it was ("before") or as it is ("after")."""
    if name == "before":
        grid_costs._run = grid_costs.reference
        BlockCoder.pixel_symbols = _without_nets
    try:
        yield
    finally:
        grid_costs._run, BlockCoder.pixel_symbols = _RUN, _SYMBOLS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--crops", type=int, default=8, help="256x256 crops coded as one batch (0: none)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    adapt.choose = _timed_choose
    work = ([("crops", crops(args.crops, 256))] if args.crops else []) + \
        [(p.name, [Image.open(p).convert("RGB")]) for p in args.images]
    bitswap_core.compress(work[0][1][0].crop((0, 0, 96, 96)), smallest=False)  # build, compile
    names = ("before", "after")
    t = {n: np.zeros(2) for n in names}  # encode, fit seconds
    raw, same = 0, True
    for _ in range(args.rounds):
        for label, images in work:
            out, row = {}, {}
            for name in names:
                with version(name):
                    FIT[0] = 0.0
                    t0 = time.perf_counter()
                    data = bitswap_core.compress_batch(images, smallest=False)
                    row[name] = (time.perf_counter() - t0, FIT[0])
                    t[name] += row[name]
                out[name] = data
            same &= out["before"] == out["after"]
            same &= all(bitswap_core.decompress(d).tobytes() == im.tobytes() for d, im in zip(out["after"], images))
            raw += sum(im.width * im.height * 3 for im in images)
            (eb, fb), (ea, fa) = row["before"], row["after"]
            ratio = f"x{fa / fb:.3f}" if fb else "none fitted"  # (a graphic whose blocks all go direct)
            print(f"{label:24} encode {eb:6.2f} -> {ea:6.2f} s (x{ea / eb:.3f})  fit {fb:6.2f} -> {fa:6.2f} s "
                  f"({ratio})", flush=True)
    for name in names:
        enc, fit = t[name]
        print(f"{name:7} encode {enc:7.2f} s ({raw / 1e3 / enc:6.1f} KB/s)  fit {fit:7.2f} s ({fit / enc:.0%} of it)")
    (eb, fb), (ea, fa) = t["before"], t["after"]
    print(f"after / before: encode x{ea / eb:.3f}, fit x{fa / fb:.3f}; payloads identical and decoded exactly: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
