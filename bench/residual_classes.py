"""Residual feedback weights per (step, channel) against per (step, channel, class), in-sample: what the
classes of container v17's section could save, measured before they were built.

For each image, its adaptation without the residual feedback, the surprise context and the latent shift,
its sampled blocks coded once (one latent draw, as the fit draws it) with the neighbours' residuals
tracked, and every weight -8..8 priced per (step, channel) alone, per (step, channel, quartile class of the
surprise score) and per (step, channel, quartile class of |R|); prints, per image and in total, the best
in-sample change of the sampled pixels' bits (headers left out).

    .venv/bin/python bench/residual_classes.py ../shared/datasets/val
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core import api  # noqa: E402
from bitswap_core.coding import adapt, residual  # noqa: E402
from bitswap_core.coding.rans import cost_bits_each  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

WEIGHTS = np.arange(-residual.MAX_WEIGHT, residual.MAX_WEIGHT + 1)


def costs(bc, im: np.ndarray) -> dict:
    """{(group, step, channel[, class]): bits of the sampled pixels for each weight}; group "a": no classes,
    "s": surprise score quartiles, "r": |R| quartiles."""
    (a,) = adapt.choose(bc, [im], residuals=0, shock=0, latent=0)
    (_, picked, valid, parts), = adapt._sample([im], None, bc.side)
    x = torch.from_numpy(picked.astype(np.int64))
    z1 = adapt.draw_z1(bc, x, [len(x)], 0)
    track = replace(a, surprise_edges=np.zeros(3, np.int64),
                    residual=np.zeros((len(bc.steps), bc.cfg.channels, residual.CLASSES), np.int64))
    maps = adapt.coding_maps([track] * len(x), bc.cfg)
    syms = [s for s in bc.pixel_symbols(x, z1, valid, maps, bc.borders([parts])) if s.step > 0]
    edges = np.quantile(np.concatenate([s.score for s in syms if s.channel == 0]), [0.25, 0.5, 0.75])
    redges = np.quantile(np.concatenate([np.abs(s.feedback) for s in syms]), [0.25, 0.5, 0.75])
    out: dict = {}
    for s in syms:
        cls = {"s": np.searchsorted(edges, s.score, side="right"),
               "r": np.searchsorted(redges, np.abs(s.feedback), side="right")}
        for t, w in enumerate(WEIGHTS):
            rows, bases = residual.corrected(s.rows, s.bases, s.feedback, w, bc.cfg.mean_frac)
            bits = cost_bits_each(s.values, rows, bases, bc.tx, s.spikes, s.cells)
            out.setdefault(("a", s.step, s.channel), np.zeros(len(WEIGHTS)))[t] += bits.sum()
            for g, c in cls.items():
                for k in range(4):
                    out.setdefault((g, s.step, s.channel, k), np.zeros(len(WEIGHTS)))[t] += bits[c == k].sum()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    tot = np.zeros(4)
    print(f"{'image':26s} {'per step':>9s} {'surprise':>9s} {'|R|':>9s}   (change of the sampled pixel bits)")
    for p in sorted(args.folder.glob("*.png")):
        im = np.asarray(Image.open(p).convert("RGB"))
        side = min(api.side_for(im.shape[1], im.shape[0], 1), adapt.FIT_SIDE)
        cost = costs(model.block_coder("bitswap", side=side), im)
        zero = int(np.flatnonzero(WEIGHTS == 0)[0])
        base = sum(v[zero] for k, v in cost.items() if k[0] == "a")
        row = np.array([base] + [sum(v.min() for k, v in cost.items() if k[0] == g) for g in "asr"])
        tot += row
        print(f"{p.name:26s} " + " ".join(f"{(o - base) / base:+9.3%}" for o in row[1:]), flush=True)
    print(f"{'total':26s} " + " ".join(f"{(o - tot[0]) / tot[0]:+9.3%}" for o in tot[1:]))


if __name__ == "__main__":
    main()
