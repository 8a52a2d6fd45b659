"""The probe behind coding/direct.py: ideal adaptive code lengths of two context models on one image, in the
decoder's order (reverse raster over the whole image, no blocks), as they were measured before the module
was written (its shipped model is the second with a 256-colour cache, coded per block).

    .venv/bin/python bench/context_probe.py ../shared/datasets/val/waterloo-serrano.png --cache 16 64 256

"plain": per pixel, which of its right, below, below-right and below-left neighbours it equals, else MED
residuals per channel; "cache N": the same with a move-to-front cache of the N most recent colours before
the residuals. Prints KB (ideal bits / 8000) and bits per dimension. Both count as the shipped model does
(direct._count: INCREMENT per symbol, halved above LIMIT) and share its MED residuals (residual_bits).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numba
import numpy as np
from PIL import Image

from bitswap_core.coding.direct import _count, _med, _same  # the shipped model's counts, MED, colour test


@numba.njit(cache=True, inline="always")
def residual_bits(img, y, x, nb, freq, tot, nact):
    """Ideal bits of pixel (y, x)'s channels as MED residuals, each channel's prediction moved by the one
    before's residual from its own MED prediction, in contexts of activity and that residual; nb: (4, C) its
    W', N', NW', NE' neighbours with the defaults of a missing one filled in. Updates the counts."""
    bits, pr = 0.0, 0
    for c in range(img.shape[2]):
        p0, p, k = _med(nb[0, c], nb[1, c], nb[2, c], nb[3, c], c, pr, nact)
        v = int(img[y, x, c])
        e = (v - p) & 255
        bits += -np.log2(freq[k, e] / tot[k])
        _count(freq, tot, k, e, 256)
        pr = v - p0
    return bits


@numba.njit(cache=True)
def plain_costs(img):
    H, W, C = img.shape
    nctx_m = 64
    mf = np.ones((nctx_m, 5), np.int64)
    mt = np.full(nctx_m, 5, np.int64)
    nact = 8
    ctxs = C * nact * 3
    freq = np.ones((ctxs, 256), np.int64)
    tot = np.full(ctxs, 256, np.int64)
    out = np.zeros((H, W), np.float64)
    res = np.zeros((H, W), np.float64)
    kinds = np.zeros(5, np.int64)
    nb = np.zeros((4, 3), np.int64)
    for y in range(H - 1, -1, -1):
        for x in range(W - 1, -1, -1):
            # neighbours: 0 W'=(y,x+1) 1 N'=(y+1,x) 2 NW'=(y+1,x+1) 3 NE'=(y+1,x-1)
            for c in range(C):
                nb[0, c] = img[y, x + 1, c] if x + 1 < W else (img[y + 1, x, c] if y + 1 < H else 0)
                nb[1, c] = img[y + 1, x, c] if y + 1 < H else nb[0, c]
                nb[2, c] = img[y + 1, x + 1, c] if (y + 1 < H and x + 1 < W) else nb[1, c]
                nb[3, c] = img[y + 1, x - 1, c] if (y + 1 < H and x >= 1) else nb[1, c]
            # equality pattern context
            e01 = 1 if (nb[0, 0] == nb[1, 0] and nb[0, 1] == nb[1, 1] and nb[0, 2] == nb[1, 2]) else 0
            e12 = 1 if (nb[1, 0] == nb[2, 0] and nb[1, 1] == nb[2, 1] and nb[1, 2] == nb[2, 2]) else 0
            e13 = 1 if (nb[1, 0] == nb[3, 0] and nb[1, 1] == nb[3, 1] and nb[1, 2] == nb[3, 2]) else 0
            e02 = 1 if (nb[0, 0] == nb[2, 0] and nb[0, 1] == nb[2, 1] and nb[0, 2] == nb[2, 2]) else 0
            mk = e01 + 2 * e12 + 4 * e13 + 8 * e02
            # the match: first of W', N', NW', NE' that equals the pixel, distinct candidates only
            sym = 4
            for j in range(4):
                if img[y, x, 0] == nb[j, 0] and img[y, x, 1] == nb[j, 1] and img[y, x, 2] == nb[j, 2]:
                    sym = j
                    break
            out[y, x] += -np.log2(mf[mk, sym] / mt[mk])
            _count(mf, mt, mk, sym, 5)
            kinds[sym] += 1
            if sym < 4:
                continue
            res[y, x] += residual_bits(img, y, x, nb, freq, tot, nact)
    return out + res, kinds, res


@numba.njit(cache=True)
def cache_costs(img, ncache):
    H, W, C = img.shape
    NM = 6
    mf = np.ones((2048, NM), np.int64)
    mt = np.full(2048, NM, np.int64)
    cf = np.ones((4, ncache), np.int64)
    ct = np.full(4, ncache, np.int64)
    nact = 8
    ctxs = C * nact * 3
    freq = np.ones((ctxs, 256), np.int64)
    tot = np.full(ctxs, 256, np.int64)
    out = np.zeros((H, W), np.float64)
    res = np.zeros((H, W), np.float64)
    kinds = np.zeros(NM, np.int64)
    nb = np.zeros((4, 3), np.int64)
    cache = np.zeros((ncache, 3), np.int64)
    ncached = 0
    prevsym = 0
    for y in range(H - 1, -1, -1):
        for x in range(W - 1, -1, -1):
            py = np.array([y, y + 1, y + 1, y + 1])
            px = np.array([x + 1, x, x + 1, x - 1])
            ok = np.array([x + 1 < W, y + 1 < H, y + 1 < H and x + 1 < W, y + 1 < H and x >= 1])
            for j in range(4):
                for c in range(C):
                    nb[j, c] = img[py[j], px[j], c] if ok[j] else -1
            e = 0
            bit = 1
            for a in range(4):
                for b in range(a + 1, 4):
                    if ok[a] and ok[b] and nb[a, 0] == nb[b, 0] and nb[a, 1] == nb[b, 1] and nb[a, 2] == nb[b, 2]:
                        e += bit
                    bit *= 2
            # e: 6 bits; plus W' == WW'
            ww = 1 if (x + 2 < W and _same(img, y, x + 1, y, x + 2, C)) else 0
            nn = 1 if (y + 2 < H and _same(img, y + 1, x, y + 2, x, C)) else 0
            mk = ((e * 2 + ww) * 2 + nn) * 4 + min(prevsym, 3)
            mk = mk % 2048
            sym = 5
            for j in range(4):
                if ok[j] and img[y, x, 0] == nb[j, 0] and img[y, x, 1] == nb[j, 1] and img[y, x, 2] == nb[j, 2]:
                    sym = j
                    break
            ci = -1
            if sym == 5:
                for j in range(ncached):
                    if cache[j, 0] == img[y, x, 0] and cache[j, 1] == img[y, x, 1] and cache[j, 2] == img[y, x, 2]:
                        ci = j
                        break
                if ci >= 0:
                    sym = 4
            out[y, x] += -np.log2(mf[mk, sym] / mt[mk])
            _count(mf, mt, mk, sym, NM)
            kinds[sym] += 1
            prevsym = sym
            if sym == 4:
                ck = min(e, 3)
                out[y, x] += -np.log2(cf[ck, ci] / ct[ck])
                _count(cf, ct, ck, ci, ncache)
            if sym < 4:
                continue
            # move to front of the cache
            if ci < 0:
                ci = min(ncached, ncache - 1)
                if ncached < ncache:
                    ncached += 1
            for j in range(ci, 0, -1):
                for c in range(3):
                    cache[j, c] = cache[j - 1, c]
            for c in range(3):
                cache[0, c] = img[y, x, c]
            if sym == 4:
                continue
            for c in range(C):  # a missing neighbour's default, as plain_costs fills it
                if not ok[0]:
                    nb[0, c] = nb[1, c] if ok[1] else 0
                if not ok[1]:
                    nb[1, c] = nb[0, c]
                if not ok[2]:
                    nb[2, c] = nb[1, c]
                if not ok[3]:
                    nb[3, c] = nb[1, c]
            res[y, x] += residual_bits(img, y, x, nb, freq, tot, nact)
    return out + res, kinds, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image", type=Path)
    ap.add_argument("--cache", type=int, nargs="*", default=[16, 64, 256])
    args = ap.parse_args()
    im = np.asarray(Image.open(args.image).convert("RGB"))
    o, _, res = plain_costs(im)
    print(f"plain      {o.sum() / 8000:8.1f} KB  {o.sum() / im.size:.4f} bpd  (residuals {res.sum() / 8000:.1f} KB)")
    for n in args.cache:
        o, _, res = cache_costs(im, n)
        print(f"cache {n:<4d} {o.sum() / 8000:8.1f} KB  {o.sum() / im.size:.4f} bpd  "
              f"(residuals {res.sum() / 8000:.1f} KB)")


if __name__ == "__main__":
    main()
