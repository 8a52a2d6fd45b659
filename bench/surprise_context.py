"""Would the pixels' scales gain from how surprising their decoded neighbours were?

The encoder's adaptation shifts the model's pixel scales per (coding step, channel, third of the scale
grid). Classical lossless coders (CALIC, JPEG-XL's weighted predictor) also condition the spread on the
errors just made nearby; the model sees the decoded pixels' values but never its own errors on them. This
probe measures what that context would add, in-sample and before building anything: the float model's
per-pixel means and scales on each image's 64x64 bordered tiles (teacher-forced, as the coder sees them),
each pixel's normalised error |x - mean| / scale, and the bits of every pixel when its scale is multiplied
by e^t, t on a grid, with t fitted per group of pixels:

- base: groups (coding step, channel, third of the pixel's log scale), the adaptation's scale shifts;
- +nbr: and a class (quartile) of its decoded neighbours' mean error (the neighbour sets the codec's
  predictor and spikes use; phase (0,0)'s sub-phase 0 has none);
- +chan: and a class of the same pixel's earlier channels' error (R for G, R and G for B);
- +both: both classes;
- +nbr add: the base shifts, then one more shift per (coding step, channel, neighbours' class) added to them,
  fitted given the base (what the coder's header holds: coding/surprise.py).

--steps 0.5,1,1.5,2,3,4,6 counts the multiples of the scale an error exceeds instead of the error itself
(what the integer coder can count); --pit uses |CDF(x) - 1/2| instead.

    .venv/bin/python bench/surprise_context.py ../shared/datasets/val/*.png --tiles 48
    .venv/bin/python bench/surprise_context.py ../shared/datasets/val/*.png --tiles 48 --steps 0.5,1,1.5,2,3,4,6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bitswap_core.model.float_model as fm  # noqa: E402
from bitswap_core.model import phases  # noqa: E402
from jobs.training import float_model, load_rgb, tile_blocks  # noqa: E402

T_GRID = torch.linspace(-1.0, 1.0, 41)
CLASSES = 4


def capture(model, x, known):
    """(mean, scale) of every pixel from one forward pass (the last discretized_logistic_logp call)."""
    seen = {}
    orig = fm.discretized_logistic_logp

    def spy(xx, mu, s):
        seen["mu"], seen["s"] = mu.detach(), s.detach()
        return orig(xx, mu, s)

    fm.discretized_logistic_logp = spy
    try:
        with torch.no_grad():
            model(x, known=known)
    finally:
        fm.discretized_logistic_logp = orig
    return seen["mu"], seen["s"]


def bits_table(x, mu, s):
    """(T, N) bits of each subpixel with its scale times e^t for t in T_GRID."""
    out = []
    for t in T_GRID:
        out.append(-fm.discretized_logistic_logp(x, mu, s * float(np.exp(t))) / np.log(2.0))
    return torch.stack(out)


def step_ids(side: int) -> np.ndarray:
    """(side, side) coding step of each pixel: 0-3 phase (0,0)'s sub-phases, 4-6 phases (1,1), (0,1), (1,0)."""
    y, x = np.mgrid[:side, :side]
    ids = np.zeros((side, side), dtype=np.int64)
    for k, (dy, dx) in enumerate(phases.ORDER_4):
        cell = (y % 2 == dy) & (x % 2 == dx)
        if k:
            ids[cell] = 3 + k
        else:
            for j, (sy, sx) in enumerate(phases.ORDER_4):
                ids[cell & ((y // 2) % 2 == sy) & ((x // 2) % 2 == sx)] = j
    return ids


def neighbour_error(err: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """(B, side, side) mean of the decoded neighbours' channel-mean |error|; NaN where there is none."""
    side = err.shape[-1]
    total = torch.zeros_like(err)
    count = torch.zeros_like(err)
    pad = 4
    e = torch.nn.functional.pad(err, (pad, pad, pad, pad))
    k_ = torch.nn.functional.pad(torch.ones_like(err), (pad, pad, pad, pad))
    for step in range(1, 7):
        rel = phases._relative(step - 3) if step >= 4 else 2 * phases._relative(step)
        mask = torch.from_numpy(ids == step)
        for dy, dx in rel:
            sl = (slice(None), slice(pad + dy, pad + dy + side), slice(pad + dx, pad + dx + side))
            total = torch.where(mask, total + e[sl] * k_[sl], total)
            count = torch.where(mask, count + k_[sl], count)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def quartile_class(v: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Class 0..CLASSES-1 of v by its quantiles within each group; NaN -> class 0."""
    cls = torch.zeros_like(groups)
    for g in groups.unique():
        m = (groups == g) & ~torch.isnan(v)
        if m.sum() < CLASSES * 50:
            continue
        q = torch.quantile(v[m].float()[:100000], torch.linspace(0, 1, CLASSES + 1)[1:-1])
        cls[m] = torch.bucketize(v[m], q)
    return cls


def fitted_bits(table: torch.Tensor, groups: torch.Tensor) -> float:
    """Total bits with one t per group, each group's best (in-sample)."""
    total = 0.0
    for g in groups.unique():
        total += float(table[:, groups == g].sum(1).min())
    return total


def additive_bits(table: torch.Tensor, base: torch.Tensor, extra: torch.Tensor) -> float:
    """Total bits with t = t_base[base group] + t_extra[extra group]: the base fitted first, then the extra
    given it (what a header of base shifts plus per-class shifts codes; grid steps are the t units)."""
    n = len(T_GRID)
    tb = torch.zeros_like(base)
    for g in base.unique():
        tb[base == g] = int(table[:, base == g].sum(1).argmin())
    total = 0.0
    for g in extra.unique():
        m = extra == g
        idx = tb[m]
        best = None
        for d in range(-n // 2, n // 2 + 1):
            k = (idx + d).clamp(0, n - 1)
            v = float(table[:, m].gather(0, k.unsqueeze(0)).sum())
            best = v if best is None or v < best else best
        total += best
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--model", default=str(ROOT / "bitswap_core/zoo/default.safetensors"))
    ap.add_argument("--tiles", type=int, default=48, help="64x64 tiles per image (a seeded sample)")
    ap.add_argument("--pit", action="store_true", help="errors as |CDF(x) - 1/2| instead of |x - mean| / scale")
    ap.add_argument("--steps", default=None, help="comma-separated multiples of the scale: count them")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = float_model(args.model)
    side = 64
    ids = torch.from_numpy(step_ids(side))
    sums = np.zeros(6)
    print(f"{'image':22s} {'as is':>8s} {'base':>8s} {'+nbr':>8s} {'+chan':>8s} {'+both':>8s} {'+nbr add':>8s}"
          "   bpd; change vs base")
    for path in args.images:
        xb, kb = tile_blocks([load_rgb(path)], border=True, side=side)
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(xb), generator=g)[: args.tiles]
        xb, kb = xb[pick], kb[pick]
        mu, s = capture(model, xb, kb)
        x = xb[..., :side, :side]
        err = ((x - mu) / s).abs()  # (B, 3, side, side)
        if args.steps:  # how many of these multiples of the scale the error exceeds (what the coder counts)
            err = sum((err > float(c)).float() for c in args.steps.split(","))
        if args.pit:  # how far the pixel's CDF value sits from the median: uniform in [0, 1/2] if calibrated
            err = (torch.sigmoid((x - mu) / s) - 0.5).abs()
        nbr = neighbour_error(err.mean(1), ids.numpy())  # (B, side, side)
        chan = torch.stack([torch.full_like(err[:, 0], float("nan")), err[:, 0], err[:, :2].mean(1)], 1)
        step = ids.expand_as(err[:, 0]).unsqueeze(1).expand_as(err)
        channel = torch.arange(3).view(1, 3, 1, 1).expand_as(err)
        logs = s.log()
        base = step * 3 + channel
        q = torch.quantile(logs.flatten()[:200000], torch.tensor([1 / 3, 2 / 3]))
        third = torch.bucketize(logs, q)
        base = base * 3 + third
        n_cls = quartile_class(nbr.unsqueeze(1).expand_as(err).contiguous(), base)
        c_cls = quartile_class(chan, base)
        table = bits_table(x, mu, s).flatten(1)
        flat = [v.flatten() for v in (base, n_cls, c_cls)]
        as_is = float(table[len(T_GRID) // 2].sum())
        row = [as_is, fitted_bits(table, flat[0]), fitted_bits(table, flat[0] * CLASSES + flat[1]),
               fitted_bits(table, flat[0] * CLASSES + flat[2]),
               fitted_bits(table, (flat[0] * CLASSES + flat[1]) * CLASSES + flat[2]),
               additive_bits(table, flat[0], (flat[0] // 3) * CLASSES + flat[1])]
        dims = x.numel()
        sums += np.array(row)
        print(f"{Path(path).name:22s} " + " ".join(f"{v / dims:8.4f}" for v in row)
              + "   " + " ".join(f"{v / row[1] - 1:+.2%}" for v in row[2:]), flush=True)
    print(f"{'all (pixel term)':22s} " + " ".join(f"{v / sums[0] * 1:8.4f}" for v in sums)
          + "   (relative to as is); vs base: " + " ".join(f"{v / sums[1] - 1:+.2%}" for v in sums[2:]))


if __name__ == "__main__":
    main()
