"""What a model pays for content that photos never show: flat areas, hard edges, exact gradients.

    .venv/bin/python bench/patterns.py                      # the shipped default
    .venv/bin/python bench/patterns.py --models A.safetensors B.safetensors   # side by side
    .venv/bin/python bench/patterns.py --adapted     # and each with the encoder's per-image adaptation

The exact model's negative ELBO (bits per dimension, one latent sample per block, as the codec codes it)
of small synthetic 64x64 images, one column per model, side by side in one run. A perfectly flat block
should cost a few hundredths of a bit per dimension; PNG pays ~0.01 bpd for it. This is the diagnostic that
found the second default's weakness on drawings (waterloo-serrano: 4.98 bpd against PNG's 0.82).
With --adapted, a second column per model adds the adaptation the encoder would fit (coding/adapt.py:
scale shifts and spikes), header bits included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def patterns() -> dict[str, np.ndarray]:
    size = 64
    flat = {f"flat {c}": np.broadcast_to(np.array(c, np.uint8), (size, size, 3))
            for c in ((255, 255, 255), (0, 0, 0), (128, 128, 128), (120, 80, 200), (30, 160, 60))}
    halves = np.zeros((size, size, 3), np.uint8)
    halves[:, : size // 2], halves[:, size // 2 :] = (40, 90, 160), (200, 50, 50)
    ramp = np.tile(np.linspace(0, 255, size).round().astype(np.uint8)[None, :, None], (size, 1, 3))
    disc = np.full((size, size, 3), 255, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    disc[(yy - 30) ** 2 + (xx - 34) ** 2 < 20**2] = (220, 30, 30)
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return {**flat, "two flat halves": halves, "horizontal ramp": ramp, "red disc on white": disc,
            "uniform noise": noise}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=[None], help="model files (default: the shipped default)")
    ap.add_argument("--adapted", action="store_true", help="also each model with the per-image adaptation")
    args = ap.parse_args()
    models = [resolve(m) for m in args.models]
    heads = [h for m in models for h in ([m.id[:8]] + ([m.id[:6] + "+a"] if args.adapted else []))]
    print(f"{'pattern (64x64)':<24}" + "".join(f"{h:>10}" for h in heads) + "   (-ELBO, bpd)")
    for name, im in patterns().items():
        im = np.ascontiguousarray(im)
        cells = []
        for m in models:
            bc = m.block_coder("bitswap")
            cells.append(elbo_bits(bc, [im])[0] / im.size)
            if args.adapted:
                a = adapt.choose(bc, [im])
                cells.append((elbo_bits(bc, [im], adaptations=a)[0] + 8 * len(adapt.to_bytes(a[0]))) / im.size)
        print(f"{name:<24}" + "".join(f"{c:10.3f}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
