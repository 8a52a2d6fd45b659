"""What two further per-image corrections of the coded pixel distributions could still save, measured
before building them (issue 7). Both start from the coder's own distributions (the shipped default with
its per-image adaptation, one latent sample per block) and fit in-sample on the whole image, so they are
upper bounds on what an encoder fitting on sampled blocks would get.

    .venv/bin/python bench/distribution_headroom.py ../shared/datasets/val/waterloo-tulips.png ... \
        [--probe tails linear] [--radius 2]

tails   heavier tails: each (coding step, channel) codes with the mixture (1 - e) P' + e P_wide, P_wide the
        same logistic with its scale level raised by d (one level ~7%), P' optionally narrowed by n levels;
        the best (e, d, n) per step and channel, 16 header bits each.
linear  a better mean: per (coding step with decoded neighbours, channel), a least-squares linear correction
        of the mean from the decoded pixels of the same channel in a (2r+1)^2 window of the step's grid
        (their offsets from the model's mean; a neighbour outside the block counts as the mean) plus a
        constant, coefficients rounded to 1/256, then the best scale shift; 16 header bits per coefficient.
        Spiked pixels are left out (their cost is the spike's).

Prints per image the bits of the pixels concerned, before and after, and the change in percent of them.
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
from bitswap_core.model.phases import ORDER_4  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def coded_symbols(bc, im: np.ndarray, seed: int = 0):
    """Yield (block pixels, valid size, PixelSymbols) of every block of the image, as the coder codes it."""
    cfg = bc.cfg
    maps = adapt.coding_maps(adapt.choose(bc, [im]), cfg)
    blocks, valid = to_blocks(im), valid_sizes(*im.shape[:2])
    rng = np.random.default_rng(seed)
    for s0 in range(0, len(blocks), 64):
        xb, vb = blocks[s0 : s0 + 64], valid[s0 : s0 + 64]
        n = len(xb)
        x = torch.from_numpy(xb.astype(np.int64))
        rows, bases = bc._latent_codes(*bc.net.q_latent(0, x))
        sampler = random_coder(rng, 4 * cfg.z_dims * n)
        z1 = np.stack([sampler.pop(rows[j], bases[j], bc.tz) for j in range(n)]).reshape(n, cfg.z_channels, 16, 16)
        border = bc.borders([(blocks, valid, grid(*im.shape[:2])[1], np.arange(s0, s0 + n))])
        for s in bc.pixel_symbols(x, torch.from_numpy(z1), vb, None if maps is None else maps.repeat(n), border):
            yield xb[s.image], vb[s.image], s


def _spikes4(s) -> tuple | None:
    """A symbol group's spikes as (value, level, second value, level) arrays, or None."""
    if s.spikes is None:
        return None
    if len(s.spikes) == 4:
        return s.spikes
    return s.spikes + (np.full_like(s.spikes[0], -1), np.zeros_like(s.spikes[1]))


def tails(bc, im: np.ndarray) -> tuple[float, float]:
    cfg, mf = bc.cfg, bc.cfg.mean_frac
    groups: dict = {}
    for _, _, s in coded_symbols(bc, im):
        sp = _spikes4(s)
        if sp is None:
            sp = (np.zeros_like(s.values), np.zeros_like(s.values), np.full_like(s.values, -1), np.zeros_like(s.values))
        g = groups.setdefault((s.step, s.channel), [])
        g.append((s.values, s.rows, s.bases) + tuple(sp))
    before = after = 0.0
    for parts in groups.values():
        v, r, b, *sp = (np.concatenate(t) for t in zip(*parts))
        sp = tuple(sp)
        lv, fr = r // mf, r % mf
        bits0 = cost_bits_each(v, r, b, bc.tx, sp)
        best = bits0.sum()
        for n in (0, 2, 4):
            p0 = 2.0 ** -cost_bits_each(v, np.clip(lv - n, 0, cfg.x_scales - 1) * mf + fr, b, bc.tx, sp)
            for d in (6, 12, 18, 24, 36):
                p1 = 2.0 ** -cost_bits_each(v, np.clip(lv + d, 0, cfg.x_scales - 1) * mf + fr, b, bc.tx, sp)
                for e in (1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4):
                    best = min(best, -np.log2((1 - e) * p0 + e * p1).sum())
        before, after = before + bits0.sum(), after + best + 16
    return before, after


def _layout(phase: int, sub: int, radius: int):
    """(grid size, offset of the step's pixels, window offsets of decoded pixels) of a coding step."""
    size, (dy, dx), k = (32, ORDER_4[phase], phase) if phase > 0 else (16, ORDER_4[sub], sub)
    earlier = np.zeros((size, size), bool)
    for q in range(k):
        earlier[ORDER_4[q][0] :: 2, ORDER_4[q][1] :: 2] = True
    offs = [(a, c) for a in range(-radius, radius + 1) for c in range(-radius, radius + 1)
            if earlier[(dy + a) % 2, (dx + c) % 2]]
    return size, dy, dx, offs


def linear(bc, im: np.ndarray, radius: int) -> tuple[float, float]:
    cfg, mf = bc.cfg, bc.cfg.mean_frac
    groups: dict = {}
    for xb, vb, s in coded_symbols(bc, im):
        phase, sub = bc.steps[s.step]
        if phase == 0 and sub <= 0:
            continue  # no decoded neighbours
        size, dy, dx, offs = _layout(phase, sub, radius)
        g = xb[s.channel].astype(np.int64)
        known = np.zeros((32, 32), bool)
        known[: vb[0], : vb[1]] = True
        if phase == 0:
            g, known = g[::2, ::2], known[::2, ::2]
        hh, ww = bc._extents(s.step, vb[None])[0]
        mean = (s.bases * mf + s.rows % mf).reshape(hh, ww)
        ii, jj = np.meshgrid(np.arange(hh), np.arange(ww), indexing="ij")
        r0, c0 = 2 * ii + dy, 2 * jj + dx
        cols = []
        for a, c in offs:
            rr, cc = r0 + a, c0 + c
            ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
            ok[ok] &= known[rr[ok], cc[ok]]
            cols.append(np.where(ok, g[np.clip(rr, 0, size - 1), np.clip(cc, 0, size - 1)] * mf, mean) - mean)
        keep = np.ones((hh, ww), bool) if s.spikes is None else ~np.any(
            [lv.reshape(hh, ww) > 0 for lv in s.spikes[1::2]], axis=0)
        d = groups.setdefault((s.step, s.channel), [[], [], [], []])
        for t, arr in zip(d, (np.stack(cols, -1)[keep], mean[keep], (s.rows // mf).reshape(hh, ww)[keep],
                              s.values.reshape(hh, ww)[keep])):
            t.append(arr)
    before = after = 0.0
    for parts in groups.values():
        w, mean, level, v = (np.concatenate(t) for t in parts)
        a = np.column_stack([w, np.full(len(mean), mf)]).astype(np.float64)
        coef = np.round(np.linalg.lstsq(a, v * mf - mean, rcond=None)[0] * 256) / 256
        mu = np.clip(mean + np.floor(a @ coef + 0.5), 0, 255 * mf).astype(np.int64)
        best = min(cost_bits_each(v, np.clip(level + sh, 0, cfg.x_scales - 1) * mf + mu % mf, mu // mf, bc.tx).sum()
                   for sh in range(-8, 9))
        before += cost_bits_each(v, level * mf + mean % mf, mean // mf, bc.tx).sum()
        after += best + 16 * len(coef)
    return before, after


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--probe", nargs="+", choices=["tails", "linear"], default=["tails", "linear"])
    ap.add_argument("--radius", type=int, default=2, help="linear: window radius in the step's grid")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bc = resolve(args.model).block_coder("bitswap", 1)  # container v17's seven steps, as measured
    for probe in args.probe:
        total = np.zeros(2)
        for path in args.images:
            im = np.asarray(Image.open(path).convert("RGB"))
            got = np.array(tails(bc, im) if probe == "tails" else linear(bc, im, args.radius))
            total += got
            print(f"{probe:6} {path.name:24} {got[0] / im.size:.4f} -> {got[1] / im.size:.4f} bpd of these pixels "
                  f"({(got[1] - got[0]) / got[0] * 100:+.2f}%, header included)", flush=True)
        print(f"{probe:6} all: {(total[1] - total[0]) / total[0] * 100:+.2f}% of these pixels' bits", flush=True)


if __name__ == "__main__":
    main()
