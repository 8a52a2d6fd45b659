"""The probe behind coding/direct.py: ideal adaptive code lengths of two context models on one image, in the
decoder's order (reverse raster over the whole image, no blocks), as they were measured before the module
was written (its shipped model is the second with a 256-colour cache, coded per block).

    .venv/bin/python bench/context_probe.py ../shared/datasets/val/waterloo-serrano.png --cache 16 64 256

"plain": per pixel, which of its right, below, below-right and below-left neighbours it equals, else MED
residuals per channel; "cache N": the same with a move-to-front cache of the N most recent colours before
the residuals. Prints KB (ideal bits / 8000) and bits per dimension.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numba
import numpy as np
from PIL import Image


@numba.njit(cache=True)
def plain_costs(img, inc, limit):
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
            mf[mk, sym] += inc
            mt[mk] += inc
            if mt[mk] > limit:
                s = 0
                for j in range(5):
                    mf[mk, j] = (mf[mk, j] + 1) // 2
                    s += mf[mk, j]
                mt[mk] = s
            kinds[sym] += 1
            if sym < 4:
                continue
            pr = 0
            for c in range(C):
                a = nb[0, c]
                b = nb[1, c]
                cc = nb[2, c]
                d = nb[3, c]
                mx = max(a, b)
                mn = min(a, b)
                if cc >= mx:
                    p = mn
                elif cc <= mn:
                    p = mx
                else:
                    p = a + b - cc
                if c > 0:
                    p = min(255, max(0, p + pr))
                g = abs(a - cc) + abs(b - cc) + abs(b - d)
                q = 0
                t = 1
                while q < nact - 1 and g >= t:
                    q += 1
                    t *= 3
                pz = 0 if c == 0 else (1 if pr == 0 else 2)
                k = (c * nact + q) * 3 + pz
                v = int(img[y, x, c])
                e = (v - p) & 255
                res[y, x] += -np.log2(freq[k, e] / tot[k])
                freq[k, e] += inc
                tot[k] += inc
                if tot[k] > limit:
                    s = 0
                    for j in range(256):
                        freq[k, j] = (freq[k, j] + 1) // 2
                        s += freq[k, j]
                    tot[k] = s
                # the next channel's adjustment: this channel's residual from its plain MED prediction
                mx2 = max(a, b)
                mn2 = min(a, b)
                if cc >= mx2:
                    p0 = mn2
                elif cc <= mn2:
                    p0 = mx2
                else:
                    p0 = a + b - cc
                pr = v - p0
    return out + res, kinds, res


@numba.njit(cache=True, inline='always')
def eq(img, y0, x0, y1, x1):
    return img[y0, x0, 0] == img[y1, x1, 0] and img[y0, x0, 1] == img[y1, x1, 1] and img[y0, x0, 2] == img[y1, x1, 2]

@numba.njit(cache=True, inline='always')
def upd(f, t, k, s, inc, limit, n):
    f[k, s] += inc
    t[k] += inc
    if t[k] > limit:
        tt = 0
        for j in range(n):
            f[k, j] = (f[k, j] + 1) // 2
            tt += f[k, j]
        t[k] = tt

@numba.njit(cache=True)
def cache_costs(img, inc, limit, ncache):
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
            ww = 1 if (x + 2 < W and eq(img, y, x + 1, y, x + 2)) else 0
            nn = 1 if (y + 2 < H and eq(img, y + 1, x, y + 2, x)) else 0
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
            upd(mf, mt, mk, sym, inc, limit, NM)
            kinds[sym] += 1
            prevsym = sym
            if sym == 4:
                ck = min(e, 3)
                out[y, x] += -np.log2(cf[ck, ci] / ct[ck])
                upd(cf, ct, ck, ci, inc, limit, ncache)
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
            pr = 0
            for c in range(C):
                a = nb[0, c] if ok[0] else (nb[1, c] if ok[1] else 0)
                b = nb[1, c] if ok[1] else a
                cc = nb[2, c] if ok[2] else b
                d = nb[3, c] if ok[3] else b
                mx = max(a, b)
                mn = min(a, b)
                if cc >= mx:
                    p0 = mn
                elif cc <= mn:
                    p0 = mx
                else:
                    p0 = a + b - cc
                p = p0 if c == 0 else min(255, max(0, p0 + pr))
                g = abs(a - cc) + abs(b - cc) + abs(b - d)
                q = 0
                t = 1
                while q < nact - 1 and g >= t:
                    q += 1
                    t *= 3
                pz = 0 if c == 0 else (1 if pr == 0 else 2)
                k = (c * nact + q) * 3 + pz
                v = int(img[y, x, c])
                ee = (v - p) & 255
                res[y, x] += -np.log2(freq[k, ee] / tot[k])
                upd(freq, tot, k, ee, inc, limit, 256)
                pr = v - p0
    return out + res, kinds, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image", type=Path)
    ap.add_argument("--cache", type=int, nargs="*", default=[16, 64, 256])
    args = ap.parse_args()
    im = np.asarray(Image.open(args.image).convert("RGB"))
    o, _, res = plain_costs(im, 24, 1 << 16)
    print(f"plain      {o.sum() / 8000:8.1f} KB  {o.sum() / im.size:.4f} bpd  (residuals {res.sum() / 8000:.1f} KB)")
    for n in args.cache:
        o, _, res = cache_costs(im, 24, 1 << 16, n)
        print(f"cache {n:<4d} {o.sum() / 8000:8.1f} KB  {o.sum() / im.size:.4f} bpd  "
              f"(residuals {res.sum() / 8000:.1f} KB)")


if __name__ == "__main__":
    main()
