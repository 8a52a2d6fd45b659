"""Per-image scale adaptation: the encoder widens or narrows the model's pixel scales for one image.

Why: a model is over- or under-confident on images unlike its training data (scanner noise, smooth
renders), and no amount of training on one set fixes that for every user's set. The encoder knows the
image, so it picks, for each (pixel phase, channel, band of the model's own scale level), an integer shift
of the scale level (one level is about 7% in scale), estimated on a sample of the image's blocks, and
stores the shifts in the payload. The decoder maps every pixel's scale level through the same table before
the same CDF tables are looked up, so coding stays exact; a zero shift is the model unchanged.

Payload header (container version 3 on): u8 bands (0 = no adaptation), then phases x channels x bands
int8 shifts in C order. Measured on the validation set: docs/BENCHMARKS.md (bench/ratio.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bitswap_core.blocks import to_blocks, valid_sizes
from bitswap_core.errors import CorruptPayloadError

BANDS = 3  # what the encoder writes; the decoder takes any count up to MAX_BANDS
MAX_BANDS = 16
MAX_SHIFT = 24
SAMPLE_BLOCKS = 16  # blocks per image the encoder looks at (evenly spread over the image)
_BATCH_BLOCKS = 256  # sample blocks per network call
# candidate shifts, smallest first, so that ties keep the smaller change
_CANDIDATES = np.array(sorted(range(-MAX_SHIFT, MAX_SHIFT + 1), key=lambda s: (abs(s), s)), dtype=np.int64)


def to_bytes(shifts: np.ndarray | None) -> bytes:
    """The payload header for shifts of shape (phases, channels, bands), or for no adaptation."""
    if shifts is None or not shifts.any():
        return b"\0"
    return bytes([shifts.shape[2]]) + shifts.astype(np.int8).tobytes()


def from_bytes(payload: bytes, phases: int, channels: int) -> tuple[np.ndarray | None, bytes]:
    """(shifts or None, the rest of the payload); raises CorruptPayloadError on a malformed header."""
    if not payload:
        raise CorruptPayloadError("learned payload is empty: no scale adaptation header")
    bands = payload[0]
    if bands == 0:
        return None, payload[1:]
    n = phases * channels * bands
    if bands > MAX_BANDS or len(payload) < 1 + n:
        raise CorruptPayloadError(f"scale adaptation header declares {bands} bands ({n} shifts) in a "
                                  f"{len(payload)}-byte payload")
    shifts = np.frombuffer(payload, dtype=np.int8, count=n, offset=1).astype(np.int64)
    if np.abs(shifts).max() > MAX_SHIFT:
        raise CorruptPayloadError(f"scale adaptation shift {int(np.abs(shifts).max())} exceeds {MAX_SHIFT}")
    return shifts.reshape(phases, channels, bands), payload[1 + n :]


def level_maps(shifts: Sequence[np.ndarray | None], phases: int, channels: int, levels: int
               ) -> torch.Tensor | None:
    """(images, phases, channels, levels) int64: each scale level's adapted level; None if all are None."""
    if all(s is None for s in shifts):
        return None
    base = np.arange(levels, dtype=np.int64)
    out = np.broadcast_to(base, (len(shifts), phases, channels, levels)).copy()
    for i, s in enumerate(shifts):
        if s is not None:
            band = base * s.shape[2] // levels
            out[i] = np.clip(base + s[:, :, band], 0, levels - 1)
    return torch.from_numpy(out)


def apply(scale: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
    """scale: (B, h, w) levels of one phase and channel; maps: (B, levels) from level_maps, or None."""
    if maps is None:
        return scale
    b = scale.shape[0]
    return torch.gather(maps, 1, scale.reshape(b, -1)).reshape(scale.shape)


def _sample(images: Sequence[np.ndarray], sample_blocks: int):
    """Per image: (its block count, the picked blocks, their valid sizes), blocks evenly spread."""
    for im in images:
        blocks, valid = to_blocks(im), valid_sizes(im.shape[0], im.shape[1])
        pick = np.unique(np.linspace(0, len(blocks) - 1, min(len(blocks), sample_blocks)).round().astype(np.int64))
        yield len(blocks), blocks[pick], valid[pick]


def _groups(sizes: Sequence[int], limit: int):
    """Consecutive index groups whose sizes add up to at most limit (a larger item goes alone)."""
    group, total = [], 0
    for j, size in enumerate(sizes):
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(j)
        total += size
    if group:
        yield group


def choose(block_coder, images: Sequence[np.ndarray], sample_blocks: int = SAMPLE_BLOCKS, seed: int = 0
           ) -> list[np.ndarray | None]:
    """Shifts for each (H, W, C) uint8 image, from the pixel costs of up to sample_blocks of its blocks
    under every candidate shift (one latent sample per block from a sampler seeded alike for every image,
    so the choice, and the bytes, depend on the image alone, not on the batch). The networks see the
    samples of several images at once. None where the estimated saving does not pay the header."""
    from bitswap_core.coding.rans import cost_bits_each, random_coder

    cfg, m = block_coder.cfg, block_coder.net
    ph, ch, levels, mf = cfg.pixel_phases, cfg.channels, cfg.x_scales, cfg.mean_frac
    samples = list(_sample(images, max(1, min(sample_blocks, _BATCH_BLOCKS))))
    # cost[image, phase, channel, band, candidate] summed over the image's picked blocks
    cost = np.zeros((len(images), ph, ch, BANDS, len(_CANDIDATES)))
    for group in _groups([len(picked) for _, picked, _ in samples], _BATCH_BLOCKS):
        x = torch.from_numpy(np.concatenate([samples[j][1] for j in group]).astype(np.int64))
        valid = np.concatenate([samples[j][2] for j in group])
        owner = np.concatenate([np.full(len(samples[j][1]), j) for j in group])
        dist = m.q_latent(0, x)
        rows, bases = block_coder._latent_codes(*dist)
        z1, at = [], 0
        for j in group:
            n = len(samples[j][1])
            sampler = random_coder(np.random.default_rng(seed), 4 * cfg.z_dims * n)
            z1 += [sampler.pop(rows[at + r], bases[at + r], block_coder.tz) for r in range(n)]
            at += n
        z1 = torch.from_numpy(np.stack(z1).reshape(dist[0].shape))
        parts: dict[tuple[int, int, int], list] = {}
        for g, (i, vals, r, b) in enumerate(block_coder.pixel_symbols(x, z1, valid)):
            k, c = divmod(g // len(x), ch)
            parts.setdefault((int(owner[i]), k, c), []).append((vals, r, b))
        for (j, k, c), items in parts.items():
            vals, r, b = (np.concatenate(a) for a in zip(*items))
            level, frac = r // mf, r % mf
            band = level * BANDS // levels
            for t, shift in enumerate(_CANDIDATES):
                bits = cost_bits_each(vals, np.clip(level + shift, 0, levels - 1) * mf + frac, b, block_coder.tx)
                cost[j, k, c, :, t] += np.bincount(band, weights=bits, minlength=BANDS)
    out: list[np.ndarray | None] = []
    header_bits = 8 * (1 + ph * ch * BANDS)
    for j, (total, picked, _) in enumerate(samples):
        best = cost[j].argmin(axis=3)
        saving = (cost[j, ..., 0].sum() - np.take_along_axis(cost[j], best[..., None], 3).sum()) * total / len(picked)
        out.append(_CANDIDATES[best] if saving > 2 * header_bits else None)
    return out
