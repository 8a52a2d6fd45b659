"""Decode speed of the rANS pop with the bracketed symbol search against a plain binary search, side by
side in one run (issue 3: coder >= 10 M symbols/s per core).

    .venv/bin/python bench/rans_search.py

The plain kernel below is the pop the coder had before the search started from the coarse inverse CDF:
the same arithmetic with an 8-probe binary search over the 256 pixel values. Both decode the same
stream; the bench checks they return the same symbols. Rows: every scale level, or levels 20-50 only
(pixel scales 0.5-4, around the 2.2 of a pixel that costs 4 bits).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding.rans import AnsCoder, Table, _cdf, _pop_one, _rotation_start  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


@numba.njit(cache=True)
def _pop_plain(state, buf, m, out, rows, bases, table, inv, width, n, precision):
    x = np.uint64(state)
    total = np.uint64(1 << precision)
    mask = total - np.uint64(1)
    p = np.uint64(precision)
    for i in range(out.shape[0]):
        r, b = rows[i], bases[i]
        slot = x & mask
        k0 = _rotation_start(i, r, b, inv, n, True)
        c0 = _cdf(table, r, k0, b, width, n, total)
        target = (slot + c0) & mask
        lo_k, hi_k = 0, n
        while hi_k - lo_k > 1:
            mid = (lo_k + hi_k) >> 1
            if _cdf(table, r, mid, b, width, n, total) <= target:
                lo_k = mid
            else:
                hi_k = mid
        k = lo_k
        lo = _cdf(table, r, k, b, width, n, total)
        f = _cdf(table, r, k + 1, b, width, n, total) - lo
        c = lo - c0 if k >= k0 else lo + total - c0
        x, m, _, ok = _pop_one(x, buf, m, m, f, slot, c, p)
        if not ok:
            break
        out[i] = k
    return x, m


def main(n: int = 2_000_000) -> None:
    m = resolve(None)
    tab = Table(m.tensors["table_x"], 256, m.cfg.precision)
    f = m.cfg.mean_frac
    rng = np.random.default_rng(0)
    print("decode M symbols/s, one thread: plain binary search | bracketed (shipped)")
    for label, levels in (("every scale level", (0, m.cfg.x_scales)), ("scale levels 20-50", (20, 50))):
        rows = rng.integers(levels[0], levels[1], n) * f + rng.integers(0, f, n)
        bases = rng.integers(0, 256, n)
        sym = AnsCoder(n).pop(rows, bases, tab)  # samples of the distributions
        enc = AnsCoder(64)
        enc.push(sym, rows, bases, tab)
        data = enc.to_bytes()
        best = {"plain": 1e9, "bracketed": 1e9}
        for _ in range(3):  # interleaved, best of three: the machine is shared
            d = AnsCoder.from_bytes(data, 64)
            out = np.empty(n, dtype=np.int64)
            t0 = time.perf_counter()
            _pop_plain(d.state, d.buf, d.m, out, rows, bases, tab.cdf, tab.inv, tab.width, tab.n, tab.precision)
            best["plain"] = min(best["plain"], time.perf_counter() - t0)
            assert np.array_equal(out, sym)
            d = AnsCoder.from_bytes(data, 64)
            t0 = time.perf_counter()
            out = d.pop(rows, bases, tab)
            best["bracketed"] = min(best["bracketed"], time.perf_counter() - t0)
            assert np.array_equal(out, sym)
        print(f"  {label:<20} {n / best['plain'] / 1e6:6.1f} | {n / best['bracketed'] / 1e6:6.1f}")


if __name__ == "__main__":
    main()
