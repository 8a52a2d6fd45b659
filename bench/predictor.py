"""How much a model leans on its neighbour predictor, and per-image -ELBO side by side (issues 4 and 7).

    .venv/bin/python bench/predictor.py ../shared/datasets/val --models bitswap_core/zoo/default.safetensors
    .venv/bin/python bench/predictor.py ../shared/datasets/val --models A.pt B.pt --per-image

Each model (a training checkpoint's EMA weights, or a model file turned back into float weights) is
measured with the float model on the training-time validation tiles (1024, seed 0): its -ELBO as is and
with the predictor's weight g (and the colour residual's h) forced to 0 (their output rows' weights and
biases zeroed), and the 10th / 50th / 90th percentile of g and h (of 64) per later phase and colour on 256
of those tiles. --per-image adds
each image's -ELBO over all of its full tiles (one latent sample per tile).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.model.float_model import BitSwapModel  # noqa: E402
from jobs.training import (  # noqa: E402
    evaluate,
    float_model,
    gate_rows,
    list_images,
    load_rgb,
    tile_blocks,
    validation_tiles,
)


@torch.no_grad()
def gate_percentiles(model: BitSwapModel, tiles: torch.Tensor) -> list[np.ndarray]:
    """Per later phase, (3 percentiles, C) of the predictor's weight g on the tiles."""
    captured = []
    pixel_pre = model.pixel_pre

    def keep(z1_in, x):
        pre, gates = pixel_pre(z1_in, x)
        captured.append(gates)
        return pre, gates

    model.pixel_pre = keep
    torch.manual_seed(0)
    model(tiles)
    del model.pixel_pre
    head = model.heads["gate"]  # the colour residual's weights h (rows after g) share its grid
    q = torch.tensor([0.1, 0.5, 0.9])
    return [torch.quantile((head.level(g) - head.levels // 2).transpose(0, 1).flatten(1), q, dim=1).numpy()
            for g in captured[0]]


@torch.no_grad()
def without_predictor(model: BitSwapModel) -> BitSwapModel:
    for p, rows in gate_rows(model):
        if p.ndim == 1:  # g and bias: g = 0 makes the rows' output the bias alone, which is zeroed too
            p[rows] = 0
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="validation images")
    ap.add_argument("--models", nargs="+", required=True, help="checkpoints (.pt) or model files")
    ap.add_argument("--per-image", action="store_true")
    ap.add_argument("--border", action="store_true",
                    help="also the -ELBO of the same tiles with the next tiles' row and column (container v8)")
    args = ap.parse_args()
    tiles = validation_tiles(args.data, 1024, 0)
    bordered = validation_tiles(args.data, 1024, 0, border=True) if args.border else None
    models = {m: float_model(m) for m in args.models}
    for name, model in models.items():
        print(f"{name}: -ELBO {evaluate(model, tiles)['bpd']:.4f} bpd on the 1024 validation tiles")
        if bordered is not None:
            print(f"  bordered: {evaluate(model, bordered[0], known=bordered[1])['bpd']:.4f} bpd")
        if not model.cfg.phase_predictor:
            continue
        names = ("R", "G", "B") + (("h G|R", "h B|R", "h B|G") if model.cfg.colour_residual else ())
        for k, q in enumerate(gate_percentiles(model, tiles[:256]), start=1):
            cols = ", ".join(f"{c} {q[0, i]:.0f}/{q[1, i]:.0f}/{q[2, i]:.0f}" for i, c in enumerate(names))
            print(f"  phase {k}: g (of 64) p10/p50/p90: {cols}")
        zeroed = evaluate(without_predictor(float_model(name)), tiles)["bpd"]
        print(f"  with g{' and h' if model.cfg.colour_residual else ''} forced to 0: {zeroed:.4f} bpd")
    if args.per_image:
        print("per image, -ELBO over all full tiles: " + "  ".join(models))
        total, count = np.zeros(len(models)), 0
        for url in sorted(list_images(args.data)):
            t = tile_blocks([load_rgb(url)])
            r = np.array([evaluate(m, t)["bpd"] for m in models.values()])
            total, count = total + r * len(t), count + len(t)
            print(f"  {Path(url).name:<24} " + " ".join(f"{v:.3f}" for v in r))
        print(f"  {'all tiles':<24} " + " ".join(f"{v:.4f}" for v in total / count))


if __name__ == "__main__":
    main()
