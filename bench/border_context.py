"""What the next blocks' pixels would give the later pixel phases' edge cells (issue 7, cross-block context).

    .venv/bin/python bench/border_context.py ../shared/datasets/val/waterloo-tulips.png [more images]

The decoder pops an image's blocks last-first (bitsback.decode_images), so when it decodes a block, the
block to its right and the whole block row below are already decoded. The neighbour predictor of phases
(1,1), (0,1) and (1,0) nevertheless averages only the block's own pixels: on the last row or column of
its grid a cell loses its right or lower neighbours (phase (0,0) pixels of the next block). This takes
full blocks away from the image's last block row and column, and prints per later phase the exact model's
bits per subpixel (model as is: no per-image adaptation, one latent sample per block) on the other cells,
on those edge cells, and on the edge cells with the predictor's mean P taken over every neighbour that the
decoder would already hold (right and below; above and left stay out: those blocks decode later). The
heads' weights, scales and colour terms are left as trained, so this is what the predictor alone would
gain without retraining; a model trained with that context could reach the interior rate on edge cells.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding.rans import cost_bits_each, random_coder  # noqa: E402
from bitswap_core.coding.tables import rows_bases  # noqa: E402
from bitswap_core.model import phases  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def edge_costs(bc, im: np.ndarray, max_blocks: int, seed: int = 0) -> dict[int, np.ndarray]:
    """Per later phase, (3 channels, [other cells, edge cells, edge cells with the border]) bits/subpixel."""
    cfg, net = bc.cfg, bc.net
    rows, cols = im.shape[0] // 32, im.shape[1] // 32
    ids = [(a, b) for a in range(rows - 1) for b in range(cols - 1)][:max_blocks]
    ext = np.stack([im[32 * a : 32 * a + 33, 32 * b : 32 * b + 33].transpose(2, 0, 1) for a, b in ids]).astype(np.int64)
    x = torch.from_numpy(np.ascontiguousarray(ext[:, :, :32, :32]))
    n, rng, z = len(ids), np.random.default_rng(seed), []
    sampler = random_coder(rng, 4 * cfg.nz * cfg.z_dims * n)
    for i in range(cfg.nz):
        r, b = bc._latent_codes(*net.q_latent(i, x if i == 0 else z[i - 1]))
        z.append(torch.from_numpy(np.stack([sampler.pop(r[j], b[j], bc.tz) for j in range(n)]).reshape(
            n, cfg.z_channels, 16, 16)))
    trunk, known = net.px_trunk(z[0]), torch.ones((n, 1, 32, 32), dtype=torch.int64)
    last = np.zeros((16, 16), bool)
    last[-1], last[:, -1] = True, True
    out = {}
    for phase in (1, 2, 3):
        params, xk = net.p_pixels(trunk, phase, x, known), phases.view(x, 4, phase)
        res = np.zeros((cfg.channels, 3))
        # the predictor over the block and its border (blocks.bordered's layout), as container v8 codes it
        bordered = phases.neighbour_prediction(torch.from_numpy(ext), torch.ones((n, 1, 33, 33), dtype=torch.int64),
                                               phase, cfg.mean_frac)
        for k, pred in enumerate((params["pred"], bordered)):
            p, earlier = {**params, "pred": pred}, []
            for ch in range(cfg.channels):
                earlier.append(net.conditional_mean(p, ch, xk, earlier))
                r, b = rows_bases(earlier[-1].numpy(), p["scale"][:, ch].numpy(), cfg.mean_frac)
                e = cost_bits_each(xk[:, ch].numpy().reshape(-1), r.reshape(-1), b.reshape(-1), bc.tx)
                e = e.reshape(n, 16, 16)
                if k == 0:
                    res[ch, :2] = e[:, ~last].mean(), e[:, last].mean()
                else:
                    res[ch, 2] = e[:, last].mean()
        out[phase] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--blocks", type=int, default=256, help="full blocks per image (first ones in raster order)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    print("bits per subpixel R G B: other cells | edge cells (last row / column, 12.1% of cells) | "
          "edge cells, predictor over the next blocks' pixels too")
    saved = bound = total = 0.0
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        for phase, res in edge_costs(bc, im, args.blocks).items():
            fmt = lambda v: " ".join(f"{a:.3f}" for a in v)  # noqa: E731
            print(f"  {path.name:<24} phase {phases.ORDER_4[phase]}: {fmt(res[:, 0])} | {fmt(res[:, 1])} | "
                  f"{fmt(res[:, 2])}")
            # bits per dimension of the image: the phase holds 1/4 of the pixels, the edge cells 31/256 of it
            saved += (res[:, 1] - res[:, 2]).mean() * 0.25 * 31 / 256
            bound += (res[:, 1] - res[:, 0]).mean() * 0.25 * 31 / 256
        total += 1
    print(f"mean saving over these images, bits per dimension of the image (blocks away from the image's last "
          f"block row and column): {saved / total:.4f}; if the edge cells cost what the other cells do: "
          f"{bound / total:.4f}")


if __name__ == "__main__":
    main()
