"""Cost of the first block and coding overhead per image: Bit-Swap vs BB-ANS on the same model, and
Bit-Swap with the first block's latents on a coarse grid (coding/first_block.py, container v10).

    .venv/bin/python bench/first_block.py ../shared/datasets/val
    .venv/bin/python bench/first_block.py ../shared/datasets/val --all --crop 32   # small images

For each 768x512 image (or all images with --all; with --crop S each image's top-left S x S crop): stored
bits after the first block (the initial-bits cost the paper compares: Bit-Swap needs bits only for
q(z1|x), BB-ANS for every layer, the coarse grid none), the total coded size, and the exact model's
negative ELBO (averaged over --samples latent draws), so overhead = size / ELBO - 1. The model as is (no
adaptation), so that size and ELBO are the same model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding import first_block  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits, encode_images  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--all", action="store_true", help="every image, not only the 768x512 ones")
    ap.add_argument("--model", default=None)
    ap.add_argument("--samples", type=int, default=4, help="latent samples averaged in the -ELBO estimate")
    ap.add_argument("--crop", type=int, default=0, help="code each image's top-left S x S crop instead")
    ap.add_argument("--grids", default=",".join(map(str, first_block.GRIDS)),
                    help="the coarse grids the encoder may pick from (first_block.GRIDS by default)")
    args = ap.parse_args()
    model = resolve(args.model)
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png")
    images = [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in paths]
    if not args.all:
        images = [(n, a) for n, a in images if a.shape[:2] in ((512, 768), (768, 512))]
    if args.crop:
        images = [(n, np.ascontiguousarray(a[: args.crop, : args.crop])) for n, a in images]
    print(f"model {model.id}; first block = bits stored after block 1 (3072 dims); "
          f"-ELBO averaged over {args.samples} latent samples per block")
    print(f"{'image':<24} {'scheme':<15} {'first block bpd':>15} {'size bpd':>9} {'-ELBO bpd':>10} {'overhead':>9}")
    elbos: dict = {}
    for scheme, coarse in (("bitswap", True), ("bitswap", False), ("bbans", False)):
        label = scheme + (" coarse" if coarse else "")
        tot_bits = tot_elbo = tot_dims = 0.0
        firsts = []
        for name, arr in images:
            bc = model.block_coder(scheme)
            trace: list = []
            grids = first_block.choose(bc, [arr], grids=[int(g) for g in args.grids.split(",")]) if coarse else None
            coder = encode_images(bc, [arr], trace, first_grids=grids)[0]
            size = 8 * len(coder.to_bytes())
            if name not in elbos:  # the same model and latent draws for every scheme
                elbos[name] = float(np.mean([elbo_bits(bc, [arr], seed=s)[0] for s in range(args.samples)]))
            elbo = elbos[name]
            first = trace[0][0] / 3072
            firsts.append(first)
            tot_bits, tot_elbo, tot_dims = tot_bits + size, tot_elbo + elbo, tot_dims + arr.size
            print(f"{name:<24} {label:<15} {first:15.2f} {size / arr.size:9.3f} {elbo / arr.size:10.3f} "
                  f"{100 * (size / elbo - 1):8.2f}%", flush=True)
        print(f"{'ALL':<24} {label:<15} {np.mean(firsts):15.2f} {tot_bits / tot_dims:9.3f} "
              f"{tot_elbo / tot_dims:10.3f} {100 * (tot_bits / tot_elbo - 1):8.2f}%")


if __name__ == "__main__":
    main()
