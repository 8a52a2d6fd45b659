"""Issue 7: every shipped default model added one lever to the one before it; measure them all in one run.

    .venv/bin/python bench/lineage.py ../shared/datasets/val [--models extra.safetensors ...] [--no-zoo]

For each model of the zoo (bitswap_core/zoo: the earlier defaults and the current one), oldest first, and
any extra model file: the exact model's negative ELBO as is (elbo_bits, one latent sample per block), the
bits per subpixel of the learned path with its default per-image adaptation (api.compress, smallest=False,
container included; every image decoded and verified), and the encode and decode KB/s of raw pixels per
core, one image at a time as api.compress runs. Models alternate image by image, so machine noise hits
them alike; compare the speed columns as ratios within one run.

Not a clean ablation: each default was also trained longer (docs/MODEL_CARD.md, stages 1-9), so a row's
gain is its lever plus its stage's training. bench/ablation.py trains variants side by side from scratch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roundtrip import timed_round_trip  # noqa: E402

from bitswap_core import api  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import load_model, zoo_models  # noqa: E402


def describe(cfg) -> str:
    """The levers a config holds, in the order the defaults added them."""
    parts = [f"{cfg.pixel_phases} phase" + ("s" if cfg.pixel_phases > 1 else "")]
    parts += [name for name, on in (("predictor", cfg.phase_predictor), ("colour residual", cfg.colour_residual))
              if on]
    if cfg.phase_blocks:
        parts.append(f"{cfg.phase_blocks} block{'s' if cfg.phase_blocks > 1 else ''} per phase head")
    if cfg.encoder_blocks:
        parts.append(f"{cfg.encoder_blocks} more encoder block{'s' if cfg.encoder_blocks > 1 else ''}")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--models", nargs="*", default=[], type=Path, help="model files after the zoo's")
    ap.add_argument("--no-zoo", action="store_true", help="only the --models files (e.g. two side by side)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    zoo = [] if args.no_zoo else sorted(zoo_models(), key=lambda p: (p.name == "default.safetensors", p.name))
    files = zoo + list(args.models)
    models = [load_model(f) for f in files]
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png")[: args.limit]
    k = len(models)
    elbo, coded, enc, dec = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    dims = 0
    for m in models:  # warm-up (tables, int8 probe)
        api.decompress(api.compress(Image.new("RGB", (40, 40)), m, smallest=False), m)
    for p in paths:
        im = Image.open(p).convert("RGB")
        arr = np.asarray(im)
        dims += arr.size
        row = []
        for j, m in enumerate(models):
            elbo[j] += elbo_bits(m.block_coder("bitswap"), [arr])[0]
            data, e, d = timed_round_trip(im, m, f"{p.name}: {files[j].name}", api.compress, im, m, smallest=False)
            enc[j] += e
            dec[j] += d
            coded[j] += 8 * len(data)
            row.append(8 * len(data) / arr.size)
        print(f"  {p.name:<26} coded " + " ".join(f"{v:.4f}" for v in row), flush=True)
    kb = dims / 1000 / args.threads
    print(f"\n{len(paths)} images, {dims / 3e6:.2f} MP, {args.threads} thread(s)\n")
    print("| model | levers | -ELBO as is | coded, adapted | encode KB/s per core | decode KB/s per core |")
    print("|---|---|---|---|---|---|")
    for j, (f, m) in enumerate(zip(files, models)):
        print(f"| `{f.name}` ({m.id[:8]}) | {describe(m.cfg)} | {elbo[j] / dims:.4f} | {coded[j] / dims:.4f} | "
              f"{kb / enc[j]:.0f} | {kb / dec[j]:.0f} |")


if __name__ == "__main__":
    main()
