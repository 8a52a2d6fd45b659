"""What larger blocks give the model before any coding: the float model's -ELBO (one latent sample, the
same seed for every side) of every validation image cut into 32x32, 64x64 and 128x128 blocks, on the same
pixels (each image cropped to a multiple of 128), without the next blocks' border or any adaptation. The
networks are convolutional, so the model trained on 32x32 crops runs on larger blocks unchanged; what
changes is how many pixels sit at a block's edge, where the networks see zero padding.

    .venv/bin/python bench/block_side_elbo.py ../shared/datasets/val
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.training import float_model  # noqa: E402

SIDES = (32, 64, 128)


def elbo(model, x: torch.Tensor, side: int) -> tuple[float, float]:
    """(-ELBO, its latents' share) in bits per dimension of (C, H, W) pixels cut into side x side blocks."""
    cfg = copy.copy(model.cfg)  # ModelConfig checks block == 32 for the models it builds; forward only crops
    object.__setattr__(cfg, "block", side)
    model.cfg = cfg
    t = x.unfold(1, side, side).unfold(2, side, side).permute(1, 2, 0, 3, 4).reshape(-1, x.shape[0], side, side)
    batch = max(1, 64 * 32 * 32 // side**2)
    total = latents = 0.0
    torch.manual_seed(1)
    with torch.no_grad():
        for i in range(0, len(t), batch):
            out = model(t[i : i + batch])
            total += float(out["bpd"]) * len(t[i : i + batch])
            latents += float(out["bpd_z"]) * len(t[i : i + batch])
    return total / len(t), latents / len(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("val", type=Path)
    ap.add_argument("--model", default=str(ROOT / "bitswap_core/zoo/default.safetensors"))
    args = ap.parse_args()
    model = float_model(args.model)
    model.eval()
    sums, n_all = np.zeros(len(SIDES)), 0
    print(f"{'image':24s} " + " ".join(f"{s:>15d}" for s in SIDES) + "   (-ELBO bpd (latents))")
    for path in sorted(args.val.glob("*.png")):
        a = np.asarray(Image.open(path).convert("RGB"))
        h, w = a.shape[0] // 128 * 128, a.shape[1] // 128 * 128
        x = torch.tensor(a[:h, :w], dtype=torch.float32).permute(2, 0, 1)
        row = [elbo(model, x, s) for s in SIDES]
        sums += np.array([r[0] for r in row]) * h * w
        n_all += h * w
        print(f"{path.name:24s} " + " ".join(f"{b:8.4f} ({z:.3f})" for b, z in row) + "  "
              + " ".join(f"{s}: {row[k][0] / row[0][0] - 1:+.2%}" for k, s in enumerate(SIDES) if k), flush=True)
    print("\nall pixels: " + ", ".join(f"{s}: {v / n_all:.4f}" for s, v in zip(SIDES, sums))
          + " bpd; " + ", ".join(f"{s} vs 32: {sums[k] / sums[0] - 1:+.2%}" for k, s in enumerate(SIDES) if k))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
