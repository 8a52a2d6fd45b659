"""Direct blocks: a classical context model codes the blocks where it beats the latent model (container v21).

Why: on drawings and rendered graphics (waterloo-serrano: 1313 colours, flat regions, hard edges) the
model's latents cost ~1000 bits a 32x32 block whatever its content (bench/latent_blocks.py), and most
pixels there simply repeat a neighbour. An adaptive context model in the spirit of WebP lossless and
JPEG-LS codes such a block for a fraction of that: per pixel, which already decoded neighbour it equals
(right, below, below-right, below-left; context: which of those neighbours equal each other), else its
rank in a move-to-front cache of recent colours, else per channel its residual from the MED predictor
(the earlier channel's residual added for the later ones; context: local activity). On serrano that is
0.32 bits per dimension, below WebP's 0.40, where the latent model pays 0.79.

How it sits in the bits-back chain: a direct block pushes its symbols and pops nothing, so the blocks
after it draw their bits-back from its bits as from any other. The model reads the image in the order the
decoder decodes it (blocks last-first, each block's pixels bottom-right to top-left) and learns from every
block, learned ones included: a pixel's contexts use only pixels already decoded (later blocks, and
pixels after it in its own block), so the decoder, which feeds each learned block to the model once it
has it, keeps the same state. Its cost of a block therefore does not depend on which blocks are direct,
and the encoder traces every block once (trace), keeping the intervals of the blocks cheap enough to be
worth a try; it then pushes a block both ways and keeps the smaller (Choice, bitsback.encode_images), and
fits no adaptation for a graphic, whose blocks all go direct (graphic, api.compress_batch).

Header section (container v21): u8 0 (no direct block) or 1 and a bitmap of the image's blocks, raster
order, least significant bit first (from_bytes refuses a bitmap with no block set or bits past the last
block). The first block's grid and its lead (coding/first_block.py) count the latent model's blocks and
parts only; after a direct block the next is tried on the grid and by bits-back, not forced onto the grid
(lead and grid 0 when bits-back wins, as when every block is direct).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from bitswap_core.blocks import grid, pad_block
from bitswap_core.coding.rans import AnsCoder, _pop_one, _push_one
from bitswap_core.errors import CorruptPayloadError

PRECISION = 24  # the coder's interval precision (the adaptive totals stay at or below LIMIT < 2**PRECISION)
LIMIT = 1 << 16  # a context's total count above which its counts are halved
INCREMENT = 24  # what a coded symbol adds to its count
CACHE = 256  # colours in the move-to-front cache (a power of two: its ring wraps by a mask)
_SEEN = 4096  # hash buckets counting the cached colours, so a new colour skips the search (a power of two)
ACTIVITY = 8  # activity classes of the residual contexts
MATCH_CONTEXTS = 1024  # neighbour-equality patterns x runs of the previous pixel's match
CACHE_CONTEXTS = 4
# a block is tried directly if the trace codes it in at most this many bits per dimension (most photo
# blocks cost it more and the latent model less; bounds the intervals kept)
CANDIDATE_BPD = 3.0
# an image whose every block is a candidate and that the trace codes in at most this many bits per
# dimension is a graphic: the encoder skips the adaptation's fit for it (graphic)
GRAPHIC_BPD = 1.0
_NEAR, _CACHED, _OTHER = 4, 4, 5  # match symbols: below 4 a neighbour, 4 the cache, 5 the residuals
_MATCHES = 6

_TRACE, _FEED, _DECODE, _COST = 0, 1, 2, 3


class Model:
    """The context model's adaptive state for one image (counts, colour cache)."""

    def __init__(self, channels: int):
        self.match_f = np.ones((MATCH_CONTEXTS, _MATCHES), np.int64)
        self.match_t = np.full(MATCH_CONTEXTS, _MATCHES, np.int64)
        self.cache_f = np.ones((CACHE_CONTEXTS, CACHE), np.int64)
        self.cache_t = np.full(CACHE_CONTEXTS, CACHE, np.int64)
        self.res_f = np.ones((channels * ACTIVITY * 3, 256), np.int64)
        self.res_t = np.full(channels * ACTIVITY * 3, 256, np.int64)
        self.cache = np.zeros((CACHE, channels), np.int64)  # a ring: rank j at row (head + j) % CACHE
        self.misc = np.zeros(3, np.int64)  # colours in the cache, previous pixel's match symbol, the ring's head
        self.seen = np.zeros(_SEEN, np.int64)  # cached colours per hash bucket: a colour in none is not cached

    def arrays(self) -> tuple:
        return (self.match_f, self.match_t, self.cache_f, self.cache_t, self.res_f, self.res_t, self.cache,
                self.misc, self.seen)

    def copy(self) -> Model:
        out = object.__new__(Model)
        out.__dict__.update({k: v.copy() for k, v in self.__dict__.items()})
        return out


class Trace(NamedTuple):
    """The encoder's pass over an image: per block its cost in bits, and the coder's intervals (in decoding
    order) of the blocks within CANDIDATE_BPD (an empty range for the others)."""

    bits: np.ndarray  # (n,) float64
    lo: np.ndarray  # (n,) int64: block k's intervals are cums/freqs[lo[k]:hi[k]]
    hi: np.ndarray
    cums: np.ndarray
    freqs: np.ndarray

    def candidate(self, k: int) -> bool:
        return bool(self.hi[k] > self.lo[k])


def trace(image: np.ndarray, side: int) -> Trace:
    """Run the model over an (H, W, C) uint8 image in decoding order, as the decoder will."""
    h, w, c = image.shape
    rows, cols = grid(h, w, side)
    n = rows * cols
    model = Model(c)
    bits, lo, hi = np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64)
    cums, freqs = np.zeros(4096, np.int32), np.zeros(4096, np.int32)  # (< 2**24 each; 8 bytes a symbol)
    io = np.zeros(4, np.int64)  # (ANS words, deepest word, ok, intervals kept)
    x, buf = np.zeros(1, np.uint64), np.zeros(1, np.uint32)
    img = np.require(image, np.uint8, ["C", "W"])  # (one compiled function reads and, decoding, writes it)
    for k in range(n - 1, -1, -1):
        before = model.copy()
        bits[k] = _block(img, k, side, cols, _COST, *model.arrays(), cums, freqs, x, buf, io)
        lo[k] = hi[k] = io[3]
        r, q = min(side, h - (k // cols) * side), min(side, w - (k % cols) * side)
        if bits[k] <= CANDIDATE_BPD * r * q * c:  # worth a try: the block again, keeping its intervals
            need = io[3] + (2 + c) * side * side  # at most 1 + 1 + C symbols a pixel
            if need > len(cums):
                cums, freqs = _grown(cums, need), _grown(freqs, need)
            model = before
            _block(img, k, side, cols, _TRACE, *model.arrays(), cums, freqs, x, buf, io)
            hi[k] = io[3]
    return Trace(bits, lo, hi, cums[: io[3]], freqs[: io[3]])


def graphic(t: Trace, dims: int) -> bool:
    """Whether a traced image of dims subpixels is a graphic the encoder codes without fitting an adaptation.

    Why: the fit is half of the encoder's time, and on such an image every block goes direct, where the
    adaptation does nothing (serrano, frymire, a clean gradient: the same bytes without it, in half the
    time; bench/direct_blocks.py). Not on noisy or smooth photos, whose blocks the latent model wins with the
    fit and loses without (a 256x256 gradient with noise of sigma 0.6: trace 2.4 bpd, 49.8 KB with the fit,
    59.6 KB without; bench/direct_blocks.py --gradients)."""
    return bool(len(t.bits)) and bool(np.all(t.hi > t.lo)) and float(t.bits.sum()) <= GRAPHIC_BPD * dims


def push_block(coder: AnsCoder, t: Trace, k: int) -> None:
    """Push block k of a traced image (a candidate): its symbols last-first, as the decoder pops them."""
    a, b = int(t.lo[k]), int(t.hi[k])
    coder._reserve(b - a)
    state, coder.m = _push(np.uint64(coder.state), coder.buf, coder.m, t.cums[a:b], t.freqs[a:b])
    coder.state = np.uint64(state)


class Choice:
    """The encoder's choice of direct blocks for a batch of images (bitsback.encode_images): per block that
    its trace makes a candidate, push it both ways on copies and keep the smaller (tries, keep); but once an
    image's last SURE_AFTER tries all went direct by a factor of at least SURE_RATIO, push its candidates
    directly without a try (sure), except every RECHECK-th, so a drawing does not pay the latent model's
    work for blocks it will not use. went: per image, which blocks went direct."""

    SURE_RATIO, SURE_AFTER, RECHECK = 2.0, 2, 4

    def __init__(self, traces: list[Trace]):
        self.traces = traces
        self.went = [np.zeros(len(t.bits), dtype=bool) for t in traces]
        self._streak = [0] * len(traces)  # tries in a row that went direct by SURE_RATIO
        self._skipped = [0] * len(traces)

    def sure(self, j: int, t: int) -> bool:
        """Whether image j's block t goes direct without a try (then it is marked so: push it with push)."""
        if not self.traces[j].candidate(t) or self._streak[j] < self.SURE_AFTER:
            return False
        self._skipped[j] += 1
        if self._skipped[j] % self.RECHECK == 0:
            return False
        self.went[j][t] = True
        return True

    def push(self, coder: AnsCoder, j: int, t: int) -> None:
        push_block(coder, self.traces[j], t)

    def tries(self, coders: list[AnsCoder], led: list | None, js: list[int], t: int) -> dict:
        """Per image j of js whose block t is a candidate: (a copy of its coder with the block pushed directly,
        its coder's size before, its lead's state before: a direct block is not one of the lead's, which
        counts the latent model's parts and blocks only)."""
        out = {j: (coders[j].copy(), coders[j].num_bits(), None if led is None else led[j].state())
               for j in js if self.traces[j].candidate(t)}
        for j, (c, _, _) in out.items():
            self.push(c, j, t)
        return out

    def keep(self, coders: list[AnsCoder], tries: dict, led: list | None, t: int) -> None:
        """After the latent model pushed block t: keep the direct try where it is smaller (and undo what
        that push did to the lead)."""
        for j, (c, size, lead) in tries.items():
            direct_bits, latent_bits = c.num_bits() - size, coders[j].num_bits() - size
            sure = latent_bits >= self.SURE_RATIO * max(direct_bits, 1)
            self._streak[j] = self._streak[j] + 1 if sure else 0
            if direct_bits < latent_bits:
                coders[j].become(c)
                self.went[j][t] = True
                if led is not None:
                    led[j].restore(lead)


class Reader:
    """The decoder's side for one image: the model fed block by block in decoding order, and the image so
    far (the contexts read it)."""

    def __init__(self, height: int, width: int, channels: int, side: int):
        self.side, self.cols = side, grid(height, width, side)[1]
        self.image = np.zeros((height, width, channels), np.uint8)
        self.model = Model(channels)
        self._io = np.zeros(4, np.int64)
        self._none = np.zeros(1, np.int32)  # (the intervals trace keeps: unused here)

    def _place(self, k: int) -> tuple[slice, slice]:
        r0, c0 = (k // self.cols) * self.side, (k % self.cols) * self.side
        return slice(r0, r0 + self.side), slice(c0, c0 + self.side)

    def feed(self, block: np.ndarray, k: int) -> None:
        """Block k ((C, s, s), decoded by the latent model) joins the image and the model learns from it."""
        rows, cols = self._place(k)
        view = self.image[rows, cols]
        view[...] = block[:, : view.shape[0], : view.shape[1]].transpose(1, 2, 0)
        _block(self.image, k, self.side, self.cols, _FEED, *self.model.arrays(), self._none, self._none,
               np.zeros(1, np.uint64), np.zeros(1, np.uint32), self._io)

    def decode(self, coder: AnsCoder, k: int) -> np.ndarray:
        """Pop direct block k; returns it as (C, s, s), padded as blocks.to_blocks pads."""
        io = np.array([coder.m, coder.min_m, 1, 0], np.int64)
        x = np.array([coder.state], np.uint64)
        _block(self.image, k, self.side, self.cols, _DECODE, *self.model.arrays(), self._none, self._none, x,
               coder.buf, io)
        coder.state, coder.m, coder.min_m = np.uint64(x[0]), int(io[0]), int(io[1])
        if not io[2]:
            raise CorruptPayloadError("direct block could not be decoded: payload truncated or corrupt")
        rows, cols = self._place(k)
        view = self.image[rows, cols]
        out = np.zeros((self.image.shape[2], self.side, self.side), np.uint8)
        out[:, : view.shape[0], : view.shape[1]] = view.transpose(2, 0, 1)
        return pad_block(out, *view.shape[:2])


# ---- the header section ----
def to_bytes(direct: np.ndarray) -> bytes:
    """u8 0, or 1 and the bitmap of the blocks coded directly."""
    if not direct.any():
        return b"\0"
    return b"\1" + np.packbits(direct.astype(np.uint8), bitorder="little").tobytes()


def from_bytes(rest: bytes, n: int) -> tuple[np.ndarray | None, bytes]:
    """(the blocks coded directly, or None for none; the bytes after) of an image of n blocks."""
    if not rest:
        raise CorruptPayloadError("learned payload truncated: the direct blocks section is missing")
    if rest[0] == 0:
        return None, rest[1:]
    size = -(-n // 8)
    if rest[0] != 1 or len(rest) < 1 + size:
        raise CorruptPayloadError("learned payload is corrupt or truncated: bad direct blocks section")
    bits = np.unpackbits(np.frombuffer(rest[1 : 1 + size], np.uint8), bitorder="little")
    if bits[n:].any() or not bits[:n].any():
        raise CorruptPayloadError("learned payload is corrupt: the direct blocks' bitmap is not one the "
                                  "encoder writes")
    return bits[:n].astype(bool), rest[1 + size :]


def _grown(a: np.ndarray, need: int) -> np.ndarray:
    out = np.zeros(max(need, 2 * len(a)), a.dtype)
    out[: len(a)] = a
    return out


# ---- the model, compiled ----
@numba.njit(cache=True)
def _push(state, buf, m, cums, freqs):
    x = np.uint64(state)
    shift, p = np.uint64(64 - PRECISION), np.uint64(PRECISION)
    for i in range(len(cums) - 1, -1, -1):
        x, m = _push_one(x, buf, m, np.uint64(freqs[i]), np.uint64(cums[i]), shift, p)
    return x, m


@numba.njit(cache=True, inline="always")
def _scaled(cum, f, tot):
    """The interval [c, c + g) of counts [cum, cum + f) out of tot, scaled to 2**PRECISION (g >= 1 as
    tot <= 2**PRECISION)."""
    c = (cum << PRECISION) // tot
    return c, ((cum + f) << PRECISION) // tot - c


@numba.njit(cache=True, inline="always")
def _code(mode, sym, f, tot, n, cums, freqs, x, buf, io):
    """Code one symbol of a context's counts f (total tot, n symbols): in _TRACE mode keep its interval
    (io[3]: how many are kept) and return its bits; in _COST mode only its ideal bits; in _DECODE mode pop
    it (returned; -1 when the stack ran dry). In _FEED mode nothing is coded."""
    if mode == _COST:
        return sym, np.log2(tot / f[sym])
    if mode == _TRACE:
        cum = 0
        for s in range(sym):
            cum += f[s]
        c, g = _scaled(cum, f[sym], tot)
        cums[io[3]] = c
        freqs[io[3]] = g
        io[3] += 1
        return sym, -np.log2(g / (1 << PRECISION))
    if mode == _DECODE:
        slot = x[0] & np.uint64((1 << PRECISION) - 1)
        cum = 0
        s = 0
        while s < n - 1 and (((cum + f[s]) << PRECISION) // tot) <= slot:
            cum += f[s]
            s += 1
        c, g = _scaled(cum, f[s], tot)
        xx, m, min_m, ok = _pop_one(x[0], buf, io[0], io[1], np.uint64(g), slot, np.uint64(c),
                                    np.uint64(PRECISION))
        x[0], io[0], io[1] = xx, m, min_m
        if not ok:
            io[2] = 0
            return -1, 0.0
        return s, 0.0
    return sym, 0.0


@numba.njit(cache=True, inline="always")
def _count(f, t, k, s, n):
    f[k, s] += INCREMENT
    t[k] += INCREMENT
    if t[k] > LIMIT:
        total = 0
        for j in range(n):
            f[k, j] = (f[k, j] + 1) // 2
            total += f[k, j]
        t[k] = total


@numba.njit(cache=True, inline="always")
def _same(img, y0, x0, y1, x1, ch):
    for c in range(ch):
        if img[y0, x0, c] != img[y1, x1, c]:
            return False
    return True


@numba.njit(cache=True, inline="always")
def _med(a, b, cc, d, c, prev, activity):
    """(the MED prediction from the W', N', NW', NE' neighbours a, b, cc, d; channel c's prediction, moved by
    the earlier channel's residual prev from its own MED prediction; the residual's context: activity class
    of the neighbours' gradients, channel, and whether prev is 0)."""
    hi, lo = max(a, b), min(a, b)
    p0 = lo if cc >= hi else (hi if cc <= lo else a + b - cc)
    p = p0 if c == 0 else min(255, max(0, p0 + prev))
    g = abs(a - cc) + abs(b - cc) + abs(b - d)
    q, t = 0, 1
    while q < activity - 1 and g >= t:
        q += 1
        t *= 3
    return p0, p, (c * activity + q) * 3 + (0 if c == 0 else (1 if prev == 0 else 2))


@numba.njit(cache=True, inline="always")
def _bucket(colour, ch):
    """The colour's bucket in the model's seen counts."""
    h = 0
    for c in range(ch):
        h = h * 263 + colour[c]
    return (h ^ (h >> 12)) & (_SEEN - 1)


@numba.njit(cache=True)
def _block(img, k, side, per_row, mode, match_f, match_t, cache_f, cache_t, res_f, res_t, cache, misc, seen, cums,
           freqs, x, buf, io):
    """Run the model over block k of img (H, W, C) in decoding order (its pixels bottom-right to
    top-left): trace it (costs and intervals), cost it (ideal bits only), feed it (update only) or decode it
    (pop its pixels into img). Returns the block's bits when tracing or costing."""
    h, w, ch = img.shape
    r0, c0 = (k // per_row) * side, (k % per_row) * side
    r1, c1 = min(h, r0 + side), min(w, c0 + side)
    ny = np.empty(6, np.int64)
    nx = np.empty(6, np.int64)
    ok = np.zeros(6, np.bool_)
    pix = np.zeros(ch, np.int64)
    bits = 0.0
    for y in range(r1 - 1, r0 - 1, -1):
        for xx in range(c1 - 1, c0 - 1, -1):
            # neighbours in decoding order's frame: 0 right, 1 below, 2 below-right, 3 below-left,
            # 4 two right, 5 two below; known if decoded already (a later block, or later in this one)
            ny[0], nx[0] = y, xx + 1
            ny[1], nx[1] = y + 1, xx
            ny[2], nx[2] = y + 1, xx + 1
            ny[3], nx[3] = y + 1, xx - 1
            ny[4], nx[4] = y, xx + 2
            ny[5], nx[5] = y + 2, xx
            for j in range(6):
                yy, xj = ny[j], nx[j]
                if yy >= h or xj >= w or xj < 0:
                    ok[j] = False
                    continue
                kb = (yy // side) * per_row + xj // side
                ok[j] = kb > k or (kb == k and (yy > y or (yy == y and xj > xx)))
            pattern = 0
            bit = 1
            for a in range(4):
                for b in range(a + 1, 4):
                    if ok[a] and ok[b] and _same(img, ny[a], nx[a], ny[b], nx[b], ch):
                        pattern += bit
                    bit *= 2
            runs = 2 * pattern
            if ok[0] and ok[4] and _same(img, ny[0], nx[0], ny[4], nx[4], ch):
                runs += 1
            mk = ((runs * 2 + (1 if ok[1] and ok[5] and _same(img, ny[1], nx[1], ny[5], nx[5], ch) else 0)) * 4
                  + min(misc[1], 3)) % MATCH_CONTEXTS
            sym, ci = _OTHER, -1
            if mode != _DECODE:
                for c in range(ch):
                    pix[c] = img[y, xx, c]
                for j in range(4):
                    if ok[j] and _same(img, y, xx, ny[j], nx[j], ch):
                        sym = j
                        break
                if sym == _OTHER and seen[_bucket(pix, ch)] > 0:
                    for j in range(misc[0]):
                        hit = True
                        row = (misc[2] + j) & (CACHE - 1)
                        for c in range(ch):
                            if cache[row, c] != pix[c]:
                                hit = False
                                break
                        if hit:
                            ci = j
                            sym = _CACHED
                            break
            sym, b = _code(mode, sym, match_f[mk], match_t[mk], _MATCHES, cums, freqs, x, buf, io)
            bits += b
            if sym < 0 or (sym < _NEAR and not ok[sym]):
                io[2] = 0
                return bits
            _count(match_f, match_t, mk, sym, _MATCHES)
            misc[1] = sym
            if sym < _NEAR:
                if mode == _DECODE:
                    for c in range(ch):
                        img[y, xx, c] = img[ny[sym], nx[sym], c]
                continue
            if sym == _CACHED:
                ck = min(pattern, CACHE_CONTEXTS - 1)
                ci, b = _code(mode, ci, cache_f[ck], cache_t[ck], CACHE, cums, freqs, x, buf, io)
                bits += b
                if ci < 0 or ci >= misc[0]:
                    io[2] = 0
                    return bits
                _count(cache_f, cache_t, ck, ci, CACHE)
                if mode == _DECODE:
                    row = (misc[2] + ci) & (CACHE - 1)
                    for c in range(ch):
                        img[y, xx, c] = cache[row, c]
                        pix[c] = cache[row, c]
                for j in range(ci, 0, -1):  # move to front
                    row, up = (misc[2] + j) & (CACHE - 1), (misc[2] + j - 1) & (CACHE - 1)
                    for c in range(ch):
                        cache[row, c] = cache[up, c]
                for c in range(ch):
                    cache[misc[2], c] = pix[c]
            else:
                prev = 0  # the earlier channel's residual from its own MED prediction
                for c in range(ch):
                    a = img[ny[0], nx[0], c] if ok[0] else (img[ny[1], nx[1], c] if ok[1] else 0)
                    bb = img[ny[1], nx[1], c] if ok[1] else a
                    cc = img[ny[2], nx[2], c] if ok[2] else bb
                    d = img[ny[3], nx[3], c] if ok[3] else bb
                    p0, p, rk = _med(np.int64(a), np.int64(bb), np.int64(cc), np.int64(d), c, prev, ACTIVITY)
                    e, b = _code(mode, (pix[c] - p) & 255, res_f[rk], res_t[rk], 256, cums, freqs, x, buf, io)
                    bits += b
                    if e < 0:
                        io[2] = 0
                        return bits
                    _count(res_f, res_t, rk, e, 256)
                    v = (p + e) & 255
                    if mode == _DECODE:
                        img[y, xx, c] = v
                        pix[c] = v
                    prev = v - p0
                # a new colour goes in front: the ring turns back one row, over the last rank when full
                misc[2] = (misc[2] - 1) & (CACHE - 1)
                if misc[0] == CACHE:
                    seen[_bucket(cache[misc[2]], ch)] -= 1
                for c in range(ch):
                    cache[misc[2], c] = pix[c]
                seen[_bucket(pix, ch)] += 1
                if misc[0] < CACHE:
                    misc[0] += 1
    return bits
