"""Importance-sampled bits-back (BB-IS, Ruan et al. 2021): K posterior samples ("particles") per block.

Bit-Swap codes a block at its negative ELBO, -log2 w for one sample z ~ q(z | x), w = p(x, z) / q(z | x).
With K particles and the index j of the one that is sent drawn in proportion to the weights, the net cost
is -log2 of their mean weight: the importance-weighted bound, which is lower (docs/BENCHMARKS.md, "What the
inference gap leaves"). The price is about K times the network work on both ends, so it is an opt-in slow
mode (`particles` in api.compress). The order, which the decoder can undo because it decodes x first and
only then evaluates any q(. | x):

    encoder: pop z_1..z_K from q(. | x); pop j under w / sum(w); push the K - 1 others under q(. | x);
             push j uniform over K; push x | z1_j, then z_j under the prior (z1 | z2, ..., top)
    decoder: pop z_j (prior), x | z1_j, j (uniform), the others under q(. | x) in order; weigh the K
             particles; push j under w / sum(w); push z_K..z_1 under q(. | x)

Net: -log2 p(x, z_j) + log2 K - sum_{k != j} log2 q(z_k) + sum_k log2 q(z_k) - log2 (w_j / sum w)
= -log2 (sum_k w_k / K). The weights must be the same integers on both ends: each log2 w_k is a sum of
exact fixed-point code lengths (rans.cost_fixed), turned into integer frequencies by integer arithmetic.
Popping K particles needs K samples' worth of bits on the stack, so an image's first blocks use plain
Bit-Swap and the encoder climbs to 2, 4, ... K particles as the stack grows deep enough for each (`rungs`;
the block where each rung starts is in the payload).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isqrt
from typing import NamedTuple

import numpy as np
import torch

from bitswap_core.coding import adapt
from bitswap_core.coding.rans import CATEGORICAL_PRECISION, COST_FRAC, AnsCoder, cost_fixed

MAX_PARTICLES = 16
# bits one particle takes off the stack, with a margin (a posterior sample of the seventh default's two
# 8x16x16 latent layers costs about 6.3 bits a latent): the depth the encoder waits for before switching
BITS_PER_LATENT = 7
_EXP_BITS = 12  # the weights' resolution: 2**-(1/4096) steps of a weight


def check_particles(k: int) -> int:
    if not 1 <= k <= MAX_PARTICLES:
        raise ValueError(f"particles must be 1..{MAX_PARTICLES}, not {k}")
    return k


def stack_needed(block_coder, k: int) -> int:
    """Bits the stack should hold before one of block_coder's blocks is coded with k particles."""
    return k * block_coder.cfg.nz * block_coder.z_dims * BITS_PER_LATENT


def rungs(k: int) -> list[int]:
    """The particle counts an image coded with k climbs through: 2, 4, 8, ... below k, then k (none for 1).
    Why a ladder: a small image would otherwise wait most of its blocks for the stack that k needs."""
    out, r = [], 2
    while r < k:
        out.append(r)
        r *= 2
    return out + [k] if k > 1 else []


def particles_at(k: int, starts: Sequence[int], t: int) -> int:
    """Particles for block t of an image coded with k whose rungs start at blocks `starts`."""
    used = 1
    for rung, s in zip(rungs(k), starts):
        if t >= s:
            used = rung
    return used


def _exp2_table() -> np.ndarray:
    """floor(2**(i / 4096) * 2**29) for i in [0, 4096] from integer square roots of 2: exact integers."""
    q = 62
    roots = [2 << q]  # 2**(2**-b) in Q62, b = 0..12
    for _ in range(_EXP_BITS):
        roots.append(isqrt(roots[-1] << q))
    out = []
    for i in range(2**_EXP_BITS + 1):
        v = 1 << q
        for b in range(1, _EXP_BITS + 1):
            if i >> (_EXP_BITS - b) & 1:
                v = (v * roots[b]) >> q
        if i == 2**_EXP_BITS:
            v = roots[0]
        out.append(v >> (q - 29))
    return np.array(out, dtype=np.int64)


_EXP2 = _exp2_table()


def frequencies(log_w: np.ndarray) -> np.ndarray:
    """(n, K) log2 weights in units of 2**-COST_FRAC bits -> (n, K) integer frequencies of the particle
    index, each >= 1, each row adding up to 2**CATEGORICAL_PRECISION, in proportion to the weights."""
    log_w = np.asarray(log_w, dtype=np.int64)
    d = log_w.max(axis=1, keepdims=True) - log_w  # >= 0: the heaviest particle has weight 1
    whole = d >> COST_FRAC
    frac = (d >> (COST_FRAC - _EXP_BITS)) & (2**_EXP_BITS - 1)
    # 2**-d = 2**((4096 - frac) / 4096) / 2**(whole + 1), in Q29
    w = np.where(whole < 30, _EXP2[2**_EXP_BITS - frac] >> np.minimum(whole + 1, 62), 0)
    k = log_w.shape[1]
    total = 1 << CATEGORICAL_PRECISION
    freqs = 1 + w * (total - k) // w.sum(axis=1, keepdims=True)
    freqs[np.arange(len(freqs)), w.argmax(axis=1)] += total - freqs.sum(axis=1)
    return freqs


def uniform(k: int) -> np.ndarray:
    return frequencies(np.zeros((1, k), dtype=np.int64))[0]


class Particles(NamedTuple):
    """K posterior samples of n blocks: z[i] (K * n, ...) of latent layer i, particle-major (row k * n + b),
    and q[i] its q distribution (mean, scale levels) on those rows."""

    z: list
    q: list


def _latent_costs(bc, z: torch.Tensor, dist, shift) -> np.ndarray:
    rows, bases = bc._latent_codes(*dist, shift)
    zf = z.reshape(len(rows), -1).numpy()
    return np.array([cost_fixed(zf[b], rows[b], bases[b], bc.tz) for b in range(len(rows))], dtype=np.int64)


def pop_particle(bc, coders: Sequence[AnsCoder], q1, shift) -> tuple[list, list]:
    """One posterior sample of every block, popped: z1 under q(z1 | x), then each layer under q(. | below)."""
    z, q = [], []
    for i in range(bc.cfg.nz):
        dist = q1 if i == 0 else bc.net.q_latent(i, z[i - 1])
        z.append(bc.pop_latents(coders, dist, shift))
        q.append(dist)
    return z, q


def push_particle(bc, coders: Sequence[AnsCoder], z: list, q: list, shift) -> None:
    """The inverse of pop_particle: the top layer first."""
    for i in range(bc.cfg.nz - 1, -1, -1):
        bc.push_latents(coders, z[i], q[i], shift)


def _stack(parts: list[tuple[list, list]]) -> Particles:
    """Particles from K (z, q) samples of the same n blocks."""
    nz = len(parts[0][0])
    z = [torch.cat([p[0][i] for p in parts]) for i in range(nz)]
    q = [tuple(torch.cat([p[1][i][t] for p in parts]) for t in range(2)) for i in range(nz)]
    return Particles(z, q)


def _weighed(bc, q1, z: list) -> Particles:
    """Particles of K * n rows (particle-major) from their latents: q(z1 | x) tiled, each layer above
    under q(. | below) in one network batch."""
    k = len(z[0]) // len(q1[0])
    q = [tuple(t.repeat(k, *[1] * (t.dim() - 1)) for t in q1)]
    q += [bc.net.q_latent(i, z[i - 1]) for i in range(1, bc.cfg.nz)]
    return Particles(z, q)


def _particle(ps: Particles, k: int, n: int) -> tuple[list, list]:
    rows = slice(k * n, (k + 1) * n)
    return [z[rows] for z in ps.z], [(m[rows], s[rows]) for m, s in ps.q]


def log_weights(bc, x: torch.Tensor, valid: np.ndarray, ps: Particles, k: int, maps=None, border=None
                ) -> tuple[np.ndarray, list, list]:
    """((n, K) log2 w of each block's particles in units of 2**-COST_FRAC, the pixel symbols of every
    particle (PixelSymbols with image = k * n + b), the priors of every particle's latent layers), all
    exact integers from the coded distributions."""
    n, m, nz = len(x), bc.net, bc.cfg.nz
    rep = torch.arange(n).repeat(k)
    maps_k = None if maps is None else maps[rep]
    shift = adapt.latent_shift(maps_k)
    border_k = None if border is None else tuple(t[rep] for t in border)
    lw = np.zeros(k * n, dtype=np.int64)
    priors = [m.p_latent(i, ps.z[i + 1]) for i in range(nz - 1)] + [bc.top_prior(k * n)]
    for i in range(nz):  # + log2 q(z | x), - log2 p(z)
        lw += _latent_costs(bc, ps.z[i], ps.q[i], shift)
        lw -= _latent_costs(bc, ps.z[i], priors[i], shift)
    symbols = list(bc.pixel_symbols(x[rep], ps.z[0], np.tile(valid, (k, 1)), maps_k, border_k))
    for s in symbols:  # - log2 p(x | z1)
        lw[s.image] -= cost_fixed(s.values, s.rows, s.bases, bc.tx, s.spikes, s.cells)
    return lw.reshape(k, n).T.copy(), symbols, priors


def push_blocks(bc, coders: Sequence[AnsCoder], x: torch.Tensor, valid: np.ndarray, k: int, q1=None, maps=None,
                border=None) -> None:
    """Code one block of each image with k particles (the encoder's half of the order above)."""
    n, nz = len(coders), bc.cfg.nz
    shift = adapt.latent_shift(maps)
    q1 = bc.q1(x, q1)
    ps = _stack([pop_particle(bc, coders, q1, shift) for _ in range(k)])
    lw, symbols, priors = log_weights(bc, x, valid, ps, k, maps, border)
    freqs = frequencies(lw)
    chosen = np.array([c.pop_categorical(freqs[b]) for b, c in enumerate(coders)])
    for kk in range(k - 1, -1, -1):  # the others, for the decoder to pop first to last
        z, q = _particle(ps, kk, n)
        keep = np.flatnonzero(chosen != kk)
        if len(keep):
            sub = torch.from_numpy(keep)
            push_particle(bc, [coders[b] for b in keep], [t[sub] for t in z], [(a[sub], s[sub]) for a, s in q],
                          None if shift is None else shift[sub])
    index = uniform(k)
    for b, c in enumerate(coders):
        c.push_categorical(int(chosen[b]), index)
    rows = torch.from_numpy(chosen * n + np.arange(n))
    for s in reversed(symbols):  # x | z1_j: the symbols the weights were computed from
        if chosen[s.image % n] == s.image // n:
            coders[s.image % n].push(s.values, s.rows, s.bases, bc.tx, s.spikes, s.cells)
    for i in range(nz):  # z_j under the prior its weight was computed with: z1 | z2, ..., the top
        bc.push_latents(coders, ps.z[i][rows], tuple(t[rows] for t in priors[i]), shift)


def pop_blocks(bc, coders: Sequence[AnsCoder], valid: np.ndarray, k: int, maps=None, border=None) -> torch.Tensor:
    """The decoder's half: returns the blocks x (n, C, s, s) int64."""
    n, m, nz = len(coders), bc.net, bc.cfg.nz
    shift = adapt.latent_shift(maps)
    z: list = [None] * nz
    z[-1] = bc.pop_latents(coders, bc.top_prior(n), shift)
    for i in range(nz - 1, 0, -1):
        z[i - 1] = bc.pop_latents(coders, m.p_latent(i - 1, z[i]), shift)
    x = bc.pop_pixels(coders, z[0], valid, maps, border)
    index = uniform(k)
    chosen = np.array([c.pop_categorical(index) for c in coders])
    q1 = bc.q1(x)
    parts = []
    for kk in range(k):
        taken = np.flatnonzero(chosen != kk)  # blocks whose particle kk was pushed back under q
        zk = [t.clone() for t in z]
        if len(taken):
            sub = torch.from_numpy(taken)
            zs, _ = pop_particle(bc, [coders[b] for b in taken], (q1[0][sub], q1[1][sub]),
                                 None if shift is None else shift[sub])
            for i in range(nz):
                zk[i][sub] = zs[i]
        parts.append(zk)
    ps = _weighed(bc, q1, [torch.cat([zk[i] for zk in parts]) for i in range(nz)])
    if border is not None:
        border = (border[0].clone(), border[1])
        border[0][..., :x.shape[-2], :x.shape[-1]] = x
    lw, _, _ = log_weights(bc, x, valid, ps, k, maps, border)
    freqs = frequencies(lw)
    for b, c in enumerate(coders):
        c.push_categorical(int(chosen[b]), freqs[b])
    for kk in range(k - 1, -1, -1):  # undo the encoder's first pops: the last particle first
        zk, qk = _particle(ps, kk, n)
        push_particle(bc, coders, zk, qk, shift)
    return x


def to_bytes(k: int, starts: Sequence[int], blocks: int) -> bytes:
    """The payload's particles section (container version 14 on): u8 particles per block k, then, above 1,
    per rung (rungs(k)) a u32 (big-endian): the first block coded with it (blocks: never). An image that
    never climbed stores 1."""
    check_particles(k)
    if k == 1 or min(starts, default=blocks) >= blocks:
        return bytes([1])
    return bytes([k]) + b"".join(int(s).to_bytes(4, "big") for s in starts)


def from_bytes(rest: bytes, blocks: int) -> tuple[int, list[int], bytes]:
    """(particles k, the first block of each rung, the rest) of a payload after its grid byte; raises
    CorruptPayloadError on a malformed section."""
    from bitswap_core.errors import CorruptPayloadError

    if not rest:
        raise CorruptPayloadError("learned payload truncated: the particles byte is missing")
    k = rest[0]
    if not 1 <= k <= MAX_PARTICLES:
        raise CorruptPayloadError(f"learned payload declares {k} particles per block, outside 1..{MAX_PARTICLES}")
    n = len(rungs(k))
    if len(rest) < 1 + 4 * n:
        raise CorruptPayloadError("learned payload truncated: the particles' first blocks are missing")
    starts = [int.from_bytes(rest[1 + 4 * i : 5 + 4 * i], "big") for i in range(n)]
    if starts and (not 1 <= starts[0] < blocks or starts[-1] > blocks or starts != sorted(starts)):
        raise CorruptPayloadError(f"learned payload's particle rungs start at blocks {starts}, not rising "
                                  f"within 1..{blocks}")
    return k, starts, rest[1 + 4 * n :]
