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
from jobs.training import (  # noqa: E402
    TrainConfig,
    export_model,
    float_and_exact_bpd,
    load_checkpoint,
    train,
    validation_tiles,
)

# name -> (work folder, config)
VARIANTS = {
    "1 phase, channel-conditional": ("default", PRESETS["small"]),
    "1 phase, no channel-conditional": ("no", replace(PRESETS["small"], channel_conditional=False)),
    "4 pixel phases, nz=3": ("nz3", replace(PRESETS["phases"], nz=3)),
    "4 pixel phases": ("phases", PRESETS["phases"]),
    "4 pixel phases + neighbour predictor": ("predictor", PRESETS["predictor"]),
    "4 pixel phases + neighbour predictor + colour residual": ("residual", PRESETS["default"]),
    "+ one residual block per phase head (default config)": ("deep", PRESETS["deep-phases"]),
}


def codec_speed(model_file: Path, tiles: torch.Tensor) -> tuple[float, float]:
    """(encode, decode) KB/s of raw pixels per core for 64 tiles coded as 8 images of 8 blocks (batched)."""
    from bitswap_core.coding.bitsback import decode_images, encode_images

    m = load_model(model_file)
    coder = m.block_coder("bitswap")
    arrays = [tiles[i * 8 : (i + 1) * 8].to(torch.uint8).permute(0, 2, 3, 1).reshape(-1, 32, 3).numpy()
              for i in range(8)]
    encode_images(coder, arrays[:1])  # warm-up
    kb = sum(a.size for a in arrays) / 1000 / torch.get_num_threads()
    t = time.perf_counter()
    coders = encode_images(coder, arrays)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    back = decode_images(coder, coders, [a.shape for a in arrays])
    dec = time.perf_counter() - t
    assert all((a == b).all() for a, b in zip(arrays, back)), "ablation variant did not round-trip"
    return kb / enc, kb / dec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--only", default=None, help="comma-separated variant indices")
    ap.add_argument("--measure-only", action="store_true", help="reuse the trained checkpoints in --workdir")
    args = ap.parse_args()
    tiles = validation_tiles(args.val, 1024)
    rows = []
    picks = list(VARIANTS.items())
    if args.only:
        picks = [picks[int(i)] for i in args.only.split(",")]
    for name, (folder, cfg) in picks:
        out = args.workdir / folder
        ckpt, minutes = out / "checkpoint.pt", None
        if not args.measure_only:
            tc = TrainConfig(steps=args.steps, warmup=min(500, args.steps // 4), ema=0.99, eval_every=args.steps)
            t = time.perf_counter()
            ckpt = train(args.train, out, cfg, tc, val_data=args.val, log=lambda *_: None)
            minutes = round((time.perf_counter() - t) / 60, 1)
        model_file = out / "model.safetensors"
        export_model(ckpt, model_file)
        r = float_and_exact_bpd(ckpt, model_file, tiles)
        enc, dec = codec_speed(model_file, tiles[:64])
        row = {"variant": name, "steps": int(load_checkpoint(ckpt)["step"]), "train_minutes": minutes,
               "float_bpd": round(r["float_bpd"], 4), "exact_bpd": round(r["exact_bpd"], 4),
               "encode_kb_s_per_core": round(enc, 1), "decode_kb_s_per_core": round(dec, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'variant':<34} {'steps':>5} {'float bpd':>9} {'exact bpd':>9} "
          f"{'enc KB/s/core':>13} {'dec KB/s/core':>13}")
    for r in rows:
        print(f"{r['variant']:<34} {r['steps']:5d} {r['float_bpd']:9.3f} {r['exact_bpd']:9.3f} "
              f"{r['encode_kb_s_per_core']:13.1f} {r['decode_kb_s_per_core']:13.1f}")


if __name__ == "__main__":
    main()
