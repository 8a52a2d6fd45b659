"""What a hand-made interpolator gets on the later pixel phases: a yardstick for the phase heads (issue 7).

    .venv/bin/python bench/interpolation_bound.py ../shared/datasets/val --crop 256
    .venv/bin/python bench/interpolation_bound.py ../shared/datasets/val --crop 0 --grid 2

--grid 2 measures phase (0,0)'s own 16x16 grid (every second pixel of every second row), which the codec
codes in four sub-phases (phases.coding_steps): its sub-phases 1-3 see decoded pixels two apart, so this
is the yardstick for them (a learned head per sub-phase would aim at it).

A 4-phase model codes the pixels of phase (1,1) knowing their four diagonal neighbours and those of
phase (0,1) knowing all four direct neighbours. This prints, per phase, the empirical entropy (bits per
subpixel) of four simple interpolators' residuals, each with one histogram per image (and per context):

  mean      x - floor mean of the neighbours, one histogram
  +activity the same, one histogram per local-activity class (sum of |neighbour differences|)
  +edge     interpolate along the flatter direction (two of the four neighbours), activity classes
  +colour   as +activity, but G and B code their residual minus the previous channel's residual

Per-image histograms are free here (no side information is counted), so the figures are optimistic for a
classical coder; a learned model pays nothing for its "histograms" and should get below them. Compare the
model's own per-phase cost from bench/block_edges.py on the same crops.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

EDGES = [2, 4, 8, 12, 18, 26, 36, 50, 70, 100, 150]  # activity class boundaries (sum over channels)


def entropy(r: np.ndarray) -> float:
    _, counts = np.unique(r, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def context_entropy(r: np.ndarray, ctx: np.ndarray) -> float:
    return sum(float((ctx == k).mean()) * entropy(r[ctx == k]) for k in np.unique(ctx))


def neighbours(x: np.ndarray, phase: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """(pixels of the phase, their four neighbours as two opposite pairs), cropped to a common interior."""
    h, w = (x.shape[0] - 2) // 2, (x.shape[1] - 2) // 2
    if phase == "11":  # diagonals, all from phase (0,0)
        at = lambda dy, dx: x[1 + dy : 1 + dy + 2 * h : 2, 1 + dx : 1 + dx + 2 * w : 2]  # noqa: E731
        return at(0, 0), ((at(-1, -1), at(1, 1)), (at(-1, 1), at(1, -1)))
    at = lambda dy, dx: x[2 + dy : 2 + dy + 2 * h : 2, 1 + dx : 1 + dx + 2 * w : 2]  # noqa: E731  (phase 01)
    return at(0, 0), ((at(0, -1), at(0, 1)), (at(-1, 0), at(1, 0)))


def phase_entropies(x: np.ndarray, phase: str) -> list[float]:
    px, ((a, b), (c, d)) = neighbours(x, phase)
    g1, g2 = np.abs(a - b), np.abs(c - d)
    ctx = np.digitize((g1 + g2).sum(-1), EDGES)
    mean = px - (a + b + c + d) // 4
    edge = px - np.where(g1 < g2, (a + b) // 2, (c + d) // 2)
    colour = np.stack([mean[..., 0], mean[..., 1] - mean[..., 0], mean[..., 2] - mean[..., 1]], -1)
    chans = range(x.shape[2])
    return [float(np.mean([entropy(mean[..., ch]) for ch in chans])),
            *(float(np.mean([context_entropy(r[..., ch], ctx) for ch in chans])) for r in (mean, edge, colour))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--crop", type=int, default=256, help="top-left crop of each image (0: whole image)")
    ap.add_argument("--grid", type=int, default=1, choices=(1, 2),
                    help="2: phase (0,0)'s grid (x[::2, ::2]), whose sub-phases see pixels two apart")
    args = ap.parse_args()
    names = ("mean", "+activity", "+edge", "+colour")
    totals: dict[str, list[list[float]]] = {"11": [], "01": []}
    print(f"bits per subpixel of interpolation residuals, per-image histograms ({', '.join(names)})")
    for p in sorted(q for q in args.data.iterdir() if q.suffix.lower() == ".png"):
        x = np.asarray(Image.open(p).convert("RGB")).astype(np.int64)
        x = x[: args.crop, : args.crop] if args.crop else x
        x = x[:: args.grid, :: args.grid]
        row = []
        for phase in totals:
            e = phase_entropies(x, phase)
            totals[phase].append(e)
            row.append(f"({phase[0]},{phase[1]}) " + " ".join(f"{v:.2f}" for v in e))
        print(f"  {p.name[:24]:<24} " + "   ".join(row))
    for phase, rows in totals.items():
        m = np.mean(rows, axis=0)
        print(f"  mean over images, phase ({phase[0]},{phase[1]}): "
              + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, m)))


if __name__ == "__main__":
    main()
