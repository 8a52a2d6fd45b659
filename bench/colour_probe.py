"""How well the model couples its colours, against the colour blend's target (container v9, issue 7).

    .venv/bin/python bench/colour_probe.py ../shared/datasets/val/waterloo-tulips.png

For up to 96 evenly spread blocks of each image (one latent sample each, the model as is), per later
phase, for G and B: the model's bits per subpixel with its own means and with the best single scale shift,
and the bits with the colour blend's target (this pixel's previous channel plus the neighbours' mean
difference, phases.colour_context) in place of the mean, with its best single shift; then the model's mean
colour-residual weight h of G on R's surprise and the least-squares slope the data give for it.

Then, with the encoder's full adaptation (colour blend included), what a spike on the rounded target would
add: the share of G and B pixels that hit it exactly and the saving adapt._fit_spikes estimates for it,
in bits per dimension of the image (the colour spike that was measured and not built, docs/DESIGN.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.blocks import grid, to_blocks, valid_sizes  # noqa: E402
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.rans import cost_bits_each, random_coder  # noqa: E402
from bitswap_core.coding.tables import rows_bases  # noqa: E402
from bitswap_core.model import phases  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

SHIFTS = range(-10, 8)


def bits(bc, vals: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> float:
    """Mean bits of vals under the exact model's logistic with these mean and scale levels."""
    mf, levels = bc.cfg.mean_frac, bc.cfg.x_scales
    rows, bases = rows_bases(torch.clamp(mean, 0, 255 * mf).numpy(), torch.clamp(scale, 0, levels - 1).numpy(), mf)
    return float(cost_bits_each(vals.reshape(-1).numpy(), rows.reshape(-1), bases.reshape(-1), bc.tx).mean())


def probe(bc, im: np.ndarray) -> list[str]:
    net, cfg, mf = bc.net, bc.cfg, bc.cfg.mean_frac
    blocks, valid = to_blocks(im), valid_sizes(*im.shape[:2])
    pick = np.arange(0, len(blocks), max(1, len(blocks) // 96))
    x, n = torch.from_numpy(blocks[pick].astype(np.int64)), len(pick)
    rows, bases = bc._latent_codes(*net.q_latent(0, x))
    sampler = random_coder(np.random.default_rng(0), 4 * cfg.z_dims * n)
    z1 = np.stack([sampler.pop(rows[j], bases[j], bc.tz) for j in range(n)])
    trunk = net.px_trunk(torch.from_numpy(z1.reshape(n, cfg.z_channels, 16, 16)))
    xc, known = bc.borders([(blocks, valid, grid(*im.shape[:2])[1], pick)])
    out = []
    for phase in (1, 2, 3):
        p = net.p_pixels(trunk, phase, xc, known)
        xk = phases.view(x, 4, phase)
        means: list[torch.Tensor] = []
        for c in range(3):
            means.append(net.conditional_mean(p, c, xk, means[:c]))
        diff = torch.from_numpy(phases.colour_context((phase, -1), xc, known, mf)[0])
        line = f"  phase {phase}:"
        for c in (1, 2):
            sc, target = p["scale"][:, c], mf * xk[:, c - 1] + diff[:, c - 1]
            model = [bits(bc, xk[:, c], means[c], sc + s) for s in SHIFTS]
            colour = min(bits(bc, xk[:, c], target, sc + s) for s in SHIFTS)
            line += (f" {'GB'[c - 1]} model {model[SHIFTS.index(0)]:.3f} (best shift {min(model):.3f}),"
                     f" colour target {colour:.3f};")
        pre = net.conditional_mean({k: v for k, v in p.items() if k != "rcoef"}, 1, xk)
        r_g, r_r = (mf * xk[:, 1] - pre).double(), (mf * xk[:, 0] - means[0]).double()
        slope = float((r_g * r_r).sum() / (r_r * r_r).sum())
        out.append(line + f" h(G|R) mean {float(p['rcoef'][:, 0].double().mean()) / 64:.2f}, data slope {slope:.2f}")
    return out


def colour_spike(bc, im: np.ndarray) -> str:
    """The saving a spike on the rounded colour target would add on top of the encoder's adaptation."""
    cfg, mf, seen = bc.cfg, bc.cfg.mean_frac, {}
    fit = adapt._with_spikes

    def spy(parts, j, shifts, mixing, spiky, scored, spikes, cfg_, table, scale_up, colours=None):
        if colours is not None:
            seen["fit"] = (parts, shifts, mixing, colours, scale_up)
        return fit(parts, j, shifts, mixing, spiky, scored, spikes, cfg_, table, scale_up, colours)

    adapt._with_spikes = spy
    try:
        (a,) = adapt.choose(bc, [im])
    finally:
        adapt._with_spikes = fit
    if a.colour is None or "fit" not in seen:
        return "  no colour blend kept"
    parts, shifts, mixing, colours, scale_up = seen["fit"]
    steps, saving, hits, total = bc.steps, 0.0, 0, 0
    for s in phases.blend_steps(steps):
        for c in range(1, cfg.channels):
            p = parts[(0, s, c)]
            mean, level = adapt._corrected(p, shifts, steps[s][0], c, None if mixing is None else mixing[s, c], cfg,
                                           colours[s, c - 1])
            each = cost_bits_each(p["vals"], level * mf + mean % mf, mean // mf, bc.tx)
            hit = p["vals"] == np.clip((adapt.colour_prediction(p["prev"], p["cpred"], mf) + mf // 2) // mf, 0, 255)
            hits, total = hits + int(hit.sum()), total + len(hit)
            for k in range(adapt.COLOUR_CLASSES):
                sel = p["ccls"] == k
                if sel.any():
                    saving += adapt._fit_spikes(each[sel], hit[sel], None)[3] * scale_up
    return (f"  colour spike: {hits / total:.1%} of sampled G and B pixels hit the target, "
            f"saving {saving / im.size:.4f} bpd")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap")
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        print(path.name, flush=True)
        for line in probe(bc, im) + [colour_spike(bc, im)]:
            print(line, flush=True)


if __name__ == "__main__":
    main()
