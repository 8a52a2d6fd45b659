"""Would a per-image correction of the encoder pay? For each validation image: one affine correction of
q(z1|x) per latent channel (mean (1 + a) mu + b, scale e^c s: 24 numbers a payload header could carry),
fitted on some of the image's bordered tiles and judged on others of the same image (held out), against
the amortised encoder as shipped (float model, bits per dimension, the same latent draws for both).

bench/inference_gap.py measured the per-tile optimum (-4.3%) and one correction shared by tiles of all
images (-0.4%); this asks whether the encoder's error is mostly per image, which the codec could take
exactly (the decoder would apply the stored correction, as it does the latent shift).

    .venv/bin/python bench/image_q.py ../shared/datasets/val --fit 32 --judge 32 --steps 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inference_gap import affine_q, amortised_q, fit_affine, tile_bpd  # noqa: E402
from jobs.training import float_model, list_images, load_rgb, tile_blocks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("val")
    ap.add_argument("--model", default="bitswap_core/zoo/default.safetensors")
    ap.add_argument("--fit", type=int, default=32, help="tiles per image the correction is fitted on")
    ap.add_argument("--judge", type=int, default=32, help="other tiles per image it is judged on")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    model = float_model(args.model).eval()
    tot0 = tot1 = 0.0
    n = 0
    for url in list_images(args.val):
        tiles, known = tile_blocks([load_rgb(url)], border=True)
        pick = torch.randperm(len(tiles), generator=torch.Generator().manual_seed(5))
        fit, judge = pick[: args.fit], pick[args.fit : args.fit + args.judge]
        abc = fit_affine(model, tiles[fit], known[fit], args.steps, args.lr, samples=2)
        with torch.no_grad():
            mu, s = amortised_q(model, tiles[judge])
            before = float(tile_bpd(model, tiles[judge], known[judge]).mean())
            after = float(tile_bpd(model, tiles[judge], known[judge], affine_q(model, mu, s, abc)).mean())
        tot0, tot1, n = tot0 + before, tot1 + after, n + 1
        print(f"{Path(url).name:28s} amortised {before:.4f}  corrected {after:.4f} ({100 * (after / before - 1):+.2f}%)"
              f"  |b| {abc[1].abs().mean():.3f}  a {abc[0].mean():+.3f}  c {abc[2].mean():+.3f}", flush=True)
    print(f"mean over images: amortised {tot0 / n:.4f} -> corrected {tot1 / n:.4f} ({100 * (tot1 / tot0 - 1):+.2f}%), "
          f"{args.fit} fitting and {args.judge} judging tiles per image, {args.steps} steps", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
