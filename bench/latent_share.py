"""The -ELBO of models on the fixed validation tiles a training run evaluates on, split into the pixels'
and the latents' share (bits per dimension, float model): what `bitswap train --val` logs, for models it
did not train (the baseline of a warm-started experiment, e.g. experiment T in docs/MODEL_CARD.md).

    .venv/bin/python bench/latent_share.py ../shared/datasets/val --seed 13 --border --models A.safetensors B.pt

--side 64 (with --tiles 256, the same pixels) gives the tiles of a run trained with --crop-side 64.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.training import evaluate, float_model, validation_tiles  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("val")
    ap.add_argument("--models", nargs="+", required=True, help="model files (.safetensors) or checkpoints")
    ap.add_argument("--seed", type=int, default=0, help="the training run's --seed (it picks the tiles)")
    ap.add_argument("--tiles", type=int, default=1024)
    ap.add_argument("--border", action="store_true", help="bordered tiles, as `train --border` evaluates")
    ap.add_argument("--side", type=int, default=32, help="tile side, as `train --crop-side`")
    args = ap.parse_args()
    val = validation_tiles(args.val, args.tiles, seed=args.seed, border=args.border, side=args.side)
    tiles, known = val if args.border else (val, None)
    for p in args.models:
        r = evaluate(float_model(p), tiles, known=known)
        print(f"{p}: -ELBO {r['bpd']:.4f} bpd = pixels {r['bpd_x']:.4f} + latents {r['bpd_z']:.4f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
