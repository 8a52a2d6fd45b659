"""What would the decoded neighbours' residuals add to the coded means, on top of the whole adaptation?

The probe that motivated the residual feedback (coding/residual.py, container v17, built the session after
this was measured); it measures on top of container v16's adaptation (residuals=0).

A float probe (the model as is) put a mean correction by the neighbours' mean residual, mean' = mean + w R
with R the mean of (x - coded mean) over a pixel's decoded neighbours, at -2% of the pixel term, but most
of it on phase (0,0)'s sub-phases, where the adaptation's blend already moves the mean toward the
neighbours. This measures it where it counts, in the coded path: each image's adaptation as the encoder
fits it (container v16, surprise context included), its sampled 64x64 blocks coded with it (one latent
sample per block, as the fit draws them), and for every step with decoded neighbours the integer
correction mean' = clamp(mean + floor(w R / 8)), R in 1/8 pixel (floor mean over the in-block neighbour
sets of phases.neighbour_prediction), w in -8..8 fitted per (step, channel) in-sample, priced with the
coder's own spikes and cells. Prints, per image, the sampled pixels' bits saved per step group and in
bits per subpixel of the sample.

    .venv/bin/python bench/residual_feedback.py ../shared/datasets/val/*.png
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
from bitswap_core.coding.rans import cost_bits_each  # noqa: E402
from bitswap_core.model import phases  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

WEIGHTS = np.arange(-8, 9)


def residual_means(res: torch.Tensor, known: torch.Tensor, step: tuple[int, int]) -> np.ndarray:
    """(B, C, h, w) floor mean of the decoded in-block neighbours' residuals of a step's pixels."""
    phase, sub = step
    out = []
    for c in range(res.shape[1]):
        r = res[:, c : c + 1]
        if phase > 0:
            m = phases.neighbour_prediction(r, known, phase, 1)
        else:
            m = phases.neighbour_prediction(phases.view(r, 4, 0), phases.view(known, 4, 0), sub, 1)
        out.append(m[:, 0])
    return torch.stack(out, 1).numpy()


def probe(bc, im: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float, int]:
    """(bits saved per step, bits of the sampled pixels, their subpixels) for one image."""
    (a,) = adapt.choose(bc, [im], None, latent=0, residuals=0)  # v16's adaptation: what the probe adds to
    (total, picked, valid, parts), = adapt._sample([im], None, bc.side)
    x = torch.from_numpy(picked.astype(np.int64))
    z1 = adapt.draw_z1(bc, x, [len(x)], seed)  # the latent sample the fit drew
    maps = adapt.coding_maps([a] * len(x), bc.cfg)
    mf, s = bc.cfg.mean_frac, bc.side
    res = torch.zeros((len(x), bc.cfg.channels, s, s), dtype=torch.int64)
    known = bc._known(valid)
    index = np.arange(s * s).reshape(s, s)
    saved, base_bits, cur, R = np.zeros(len(bc.steps)), 0.0, None, None
    cost = {}
    for sym in bc.pixel_symbols(x, z1, valid, maps, bc.borders([parts])):
        step = bc.steps[sym.step]
        if sym.step != cur:
            cur = sym.step
            has = step[0] > 0 or step[1] > 0
            R = residual_means(res, known, step) if has else None
        r, c = bc._extents(sym.step, valid[sym.image : sym.image + 1])[0]
        mean = sym.bases * mf + sym.rows % mf
        level = sym.rows // mf
        bits0 = cost_bits_each(sym.values, sym.rows, sym.bases, bc.tx, sym.spikes, sym.cells)
        base_bits += bits0.sum()
        if R is not None:
            rr = R[sym.image, sym.channel, :r, :c].reshape(-1)
            for w in WEIGHTS:
                m = np.clip(mean + (w * rr) // 8, 0, 255 * mf)
                cost.setdefault((sym.step, sym.channel), np.zeros(len(WEIGHTS)))[w + 8] += cost_bits_each(
                    sym.values, level * mf + m % mf, m // mf, bc.tx, sym.spikes, sym.cells).sum()
        pos = phases.step_view(index, 4, *step)[:r, :c].reshape(-1)
        res[sym.image, sym.channel].view(-1)[torch.from_numpy(pos)] = torch.from_numpy(sym.values * mf - mean)
    for (st, _), v in cost.items():
        saved[st] += v[8] - v.min()
    return saved, base_bits, int(sum(r * c for r, c in valid) * bc.cfg.channels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    tot_saved, tot_bits, tot_dims = np.zeros(7), 0.0, 0
    print(f"{'image':26s} {'pixels bpd':>10s} {'saved: sub-phases 1-3':>22s} {'later phases':>13s} {'all':>8s}")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        side = min(api.side_for(im.shape[1], im.shape[0], 1), adapt.FIT_SIDE)
        saved, bits, dims = probe(model.block_coder("bitswap", 1, side=side), im)  # v17's seven steps
        tot_saved, tot_bits, tot_dims = tot_saved + saved, tot_bits + bits, tot_dims + dims
        print(f"{path.name:26s} {bits / dims:10.4f} {saved[1:4].sum() / bits:22.2%} {saved[4:].sum() / bits:13.2%}"
              f" {saved.sum() / bits:8.2%}", flush=True)
    print(f"{'all sampled pixels':26s} {tot_bits / tot_dims:10.4f} {tot_saved[1:4].sum() / tot_bits:22.2%}"
          f" {tot_saved[4:].sum() / tot_bits:13.2%} {tot_saved.sum() / tot_bits:8.2%}  (of the pixel bits)")


if __name__ == "__main__":
    main()
