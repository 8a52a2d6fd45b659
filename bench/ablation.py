"""Issue 7 ablation: train model variants side by side with the same data, seed and steps, then measure
each on the same validation tiles (float and exact -ELBO) and its codec speed.

    .venv/bin/python bench/ablation.py ../shared/datasets/train ../shared/datasets/val --steps 1000

Short runs rank levers, they do not give final numbers (the default model trained 6000 steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.model.config import PRESETS  # noqa: E402
from bitswap_core.registry import load_model  # noqa: E402
from jobs.training import TrainConfig, export_model, float_and_exact_bpd, train, validation_tiles  # noqa: E402

VARIANTS = {
    "default (channel-conditional)": PRESETS["default"],
    "no channel-conditional p(x|z1)": replace(PRESETS["default"], channel_conditional=False),
    "nz=3": replace(PRESETS["default"], nz=3),
}


def encode_speed(model_file: Path, tiles: torch.Tensor) -> float:
    """KB/s of raw pixels per core to code 64 tiles as 8 images of 8 blocks each (batched)."""
    from bitswap_core.coding.bitsback import encode_images

    m = load_model(model_file)
    arrays = [tiles[i * 8 : (i + 1) * 8].to(torch.uint8).permute(0, 2, 3, 1).reshape(-1, 32, 3).numpy()
              for i in range(8)]
    encode_images(m.block_coder("bitswap"), arrays[:1])  # warm-up
    t = time.perf_counter()
    encode_images(m.block_coder("bitswap"), arrays)
    return sum(a.size for a in arrays) / 1000 / (time.perf_counter() - t) / torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--only", default=None, help="comma-separated variant indices")
    args = ap.parse_args()
    tiles = validation_tiles(args.val, 1024)
    rows = []
    picks = list(VARIANTS.items())
    if args.only:
        picks = [picks[int(i)] for i in args.only.split(",")]
    for name, cfg in picks:
        out = args.workdir / name.split(" ")[0].replace("=", "")
        tc = TrainConfig(steps=args.steps, warmup=min(500, args.steps // 4), ema=0.99, eval_every=args.steps)
        t = time.perf_counter()
        ckpt = train(args.train, out, cfg, tc, val_data=args.val, log=lambda *_: None)
        minutes = (time.perf_counter() - t) / 60
        model_file = out / "model.safetensors"
        export_model(ckpt, model_file)
        r = float_and_exact_bpd(ckpt, model_file, tiles)
        row = {"variant": name, "steps": args.steps, "train_minutes": round(minutes, 1),
               "float_bpd": round(r["float_bpd"], 4), "exact_bpd": round(r["exact_bpd"], 4),
               "encode_kb_s_per_core": round(encode_speed(model_file, tiles[:64]), 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'variant':<34} {'float bpd':>9} {'exact bpd':>9} {'enc KB/s/core':>13} {'train min':>9}")
    for r in rows:
        print(f"{r['variant']:<34} {r['float_bpd']:9.3f} {r['exact_bpd']:9.3f} {r['encode_kb_s_per_core']:13.1f} "
              f"{r['train_minutes']:9.1f}")


if __name__ == "__main__":
    main()
