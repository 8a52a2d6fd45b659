"""Per-image adaptation: the encoder fits two small corrections of the model's pixel distributions to
one image and stores them in the payload; the decoder applies the same, so coding stays exact.

Why: a model is over- or under-confident on images unlike its training data (scanner noise, smooth
renders), and no amount of training on one set fixes that for every user's set. The encoder knows the
image, so it picks, for each (pixel phase, channel, band of the model's own scale level), an integer shift
of the scale level (one level is about 7% in scale), estimated on a sample of the image's blocks, and
stores the shifts in the payload. The decoder maps every pixel's scale level through the same table before
the same CDF tables are looked up, so coding stays exact; a zero shift is the model unchanged.

Spikes (container version 4 on): graphics, screenshots and saturated areas repeat exact values, which a
smooth logistic cannot predict however narrow. A pixel whose already coded neighbours agree on a value
(phases.neighbour_spikes; phase (0,0) is coded in four sub-phases so that most of it has such neighbours)
gets a mixture: L/256 of its mass moves onto that value (coding/rans.py
does it in exact integers). The encoder picks L per (coding step, channel, agreement class) on the same
sampled blocks; photos mostly keep L = 0.

Payload header: u8 bands (0 = no scale shifts), then phases x channels x bands int8 shifts in C order;
from container version 4 on, then u8 spike classes (0 = no spikes), then, for each coding step with decoded
neighbours (phase 0's sub-phases 1-3, phases 1-3: phases.coding_steps), channels x classes u8 levels.
Measured on the validation set: docs/BENCHMARKS.md (bench/ratio.py, bench/adaptation.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bitswap_core.blocks import to_blocks, valid_sizes
from bitswap_core.errors import CorruptPayloadError
from bitswap_core.model import phases as pixel_phases

BANDS = 3  # what the encoder writes; the decoder takes any count up to MAX_BANDS
MAX_BANDS = 16
MAX_SHIFT = 24
SAMPLE_BLOCKS = 16  # blocks per image the encoder looks at (evenly spread over the image)
_BATCH_BLOCKS = 256  # sample blocks per network call
# candidate shifts, smallest first, so that ties keep the smaller change
_CANDIDATES = np.array(sorted(range(-MAX_SHIFT, MAX_SHIFT + 1), key=lambda s: (abs(s), s)), dtype=np.int64)
SPIKE_CLASSES = pixel_phases.SPIKE_CLASSES
# spike weight levels the encoder tries (L / 256 of the mass on the agreed value), smallest first
_SPIKE_LEVELS = np.array([0, 2, 8, 16, 32, 64, 96, 128, 160, 192, 224, 240, 248, 252, 254, 255], dtype=np.int64)


@dataclass(frozen=True)
class Adaptation:
    """One image's corrections: scale shifts (phases, channels, bands) and spike levels (coding steps,
    channels, classes; rows of steps without decoded neighbours are 0). None = the model as is."""

    shifts: np.ndarray | None = None
    spikes: np.ndarray | None = None


NONE = Adaptation()


def to_bytes(a: Adaptation) -> bytes:
    """The payload header (container version 4) of an adaptation."""
    shifts = b"\0" if a.shifts is None or not a.shifts.any() else (
        bytes([a.shifts.shape[2]]) + a.shifts.astype(np.int8).tobytes())
    spikes = b"\0" if a.spikes is None or not a.spikes.any() else (
        bytes([a.spikes.shape[2]]) + a.spikes[_spike_rows(a.spikes.shape[0])].astype(np.uint8).tobytes())
    return shifts + spikes


def _spike_rows(steps: int) -> list[int]:
    """The spike-capable steps of a model with this many coding steps (container v4 layout)."""
    return pixel_phases.spike_steps(pixel_phases.coding_steps(4, True)) if steps == 7 else []


def spike_shape(phases: int, channels: int) -> tuple[int, int, int]:
    """Shape of Adaptation.spikes for a model (container v4 layout: phase 0 split in four sub-phases)."""
    return len(pixel_phases.coding_steps(phases, True)), channels, SPIKE_CLASSES


def from_bytes(payload: bytes, phases: int, channels: int, with_spikes: bool = True) -> tuple[Adaptation, bytes]:
    """(adaptation, the rest of the payload); raises CorruptPayloadError on a malformed header.
    with_spikes: whether the header has the spike section (container version 4 on)."""
    if not payload:
        raise CorruptPayloadError("learned payload is empty: no scale adaptation header")
    bands, shifts = payload[0], None
    n = phases * channels * bands
    if bands > MAX_BANDS or len(payload) < 1 + n:
        raise CorruptPayloadError(f"scale adaptation header declares {bands} bands ({n} shifts) in a "
                                  f"{len(payload)}-byte payload")
    if bands:
        shifts = np.frombuffer(payload, dtype=np.int8, count=n, offset=1).astype(np.int64)
        if np.abs(shifts).max() > MAX_SHIFT:
            raise CorruptPayloadError(f"scale adaptation shift {int(np.abs(shifts).max())} exceeds {MAX_SHIFT}")
        shifts = shifts.reshape(phases, channels, bands)
    rest = payload[1 + n :]
    if not with_spikes:
        return Adaptation(shifts), rest
    if not rest:
        raise CorruptPayloadError("learned payload ends before its spike header")
    classes, spikes = rest[0], None
    if classes:
        shape = spike_shape(phases, channels)
        rows = _spike_rows(shape[0])
        n = len(rows) * channels * classes
        if not rows or classes != SPIKE_CLASSES or len(rest) < 1 + n:
            raise CorruptPayloadError(f"spike header declares {classes} classes for a {phases}-phase model in "
                                      f"a {len(rest)}-byte remainder (expected {SPIKE_CLASSES} classes, 4 phases)")
        spikes = np.zeros(shape, np.int64)
        spikes[rows] = np.frombuffer(rest, dtype=np.uint8, count=n, offset=1).reshape(len(rows), channels, classes)
        rest = rest[1 + n :]
    else:
        rest = rest[1:]
    return Adaptation(shifts, spikes), rest


@dataclass(frozen=True)
class CodingMaps:
    """What the coder applies for a batch of blocks: each block's scale level map (B, phases, channels,
    levels) and spike levels (B, coding steps, channels, classes), either None when no block has one."""

    levels: torch.Tensor | None
    spikes: torch.Tensor | None

    def __getitem__(self, idx) -> CodingMaps:
        return CodingMaps(*(None if t is None else t[idx] for t in (self.levels, self.spikes)))

    def repeat(self, n: int) -> CodingMaps:
        """The maps of one image for n of its blocks."""
        return CodingMaps(*(None if t is None else t[:1].expand(n, *t.shape[1:]) for t in (self.levels, self.spikes)))


def coding_maps(adaptations: Sequence[Adaptation] | None, cfg) -> CodingMaps | None:
    """The batch's CodingMaps, or None when every image keeps the model as is."""
    if adaptations is None:
        return None
    levels = level_maps([a.shifts for a in adaptations], cfg.pixel_phases, cfg.channels, cfg.x_scales)
    spikes = None
    if any(a.spikes is not None for a in adaptations):
        spikes = torch.zeros((len(adaptations), *spike_shape(cfg.pixel_phases, cfg.channels)), dtype=torch.int64)
        for i, a in enumerate(adaptations):
            if a.spikes is not None:
                spikes[i] = torch.from_numpy(a.spikes)
    return None if levels is None and spikes is None else CodingMaps(levels, spikes)


def spike_levels(spikes: torch.Tensor | None, cls: torch.Tensor) -> torch.Tensor | None:
    """Per-pixel spike level of one coding step and channel: spikes (B, classes) levels, cls (B, h, w) classes
    (-1 = no spike); None when no pixel gets a spike."""
    if spikes is None or not spikes.any():
        return None
    b = cls.shape[0]
    lv = torch.gather(spikes, 1, cls.clamp_min(0).reshape(b, -1)).reshape(cls.shape)
    return torch.where(cls >= 0, lv, torch.zeros_like(lv))


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


def _spike_costs(bits: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Estimated bits of pixels costing `bits` under the model, hit = equal to their spike value, for each
    candidate level; plus one virtual miss, so that a few sampled hits never buy full confidence."""
    w = _SPIKE_LEVELS / 256.0
    p = 2.0 ** -bits[hit]
    hits = -np.log2((1 - w)[None, :] * p[:, None] + w[None, :]).sum(0)
    misses = bits[~hit].sum() - (np.count_nonzero(~hit) + 1) * np.log2(1 - w)
    return hits + misses


def choose(block_coder, images: Sequence[np.ndarray], sample_blocks: int = SAMPLE_BLOCKS, seed: int = 0,
           spikes: bool = True) -> list[Adaptation]:
    """The adaptation of each (H, W, C) uint8 image, from the pixel costs of up to sample_blocks of its
    blocks: first the scale shifts (every candidate shift), then, given them, the spike levels (every
    candidate level, 4-phase models only, unless spikes is False). One latent sample per block from a
    sampler seeded alike for every image, so the choice, and the bytes, depend on the image alone, not on
    the batch; the networks see the samples of several images at once. A part is left out (None) where its
    estimated saving does not pay for its header twice."""
    from bitswap_core.coding.rans import cost_bits_each, random_coder

    cfg, m = block_coder.cfg, block_coder.net
    ph, ch, levels, mf = cfg.pixel_phases, cfg.channels, cfg.x_scales, cfg.mean_frac
    steps = block_coder.steps
    spiky = pixel_phases.spike_steps(steps) if spikes and len(steps) == 7 else []
    samples = list(_sample(images, max(1, min(sample_blocks, _BATCH_BLOCKS))))
    # cost[image, phase, channel, band, candidate] summed over the image's picked blocks
    cost = np.zeros((len(images), ph, ch, BANDS, len(_CANDIDATES)))
    parts: dict[tuple[int, int, int], list] = {}
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
        known = block_coder._known(valid)
        agreed = {s: pixel_phases.step_spikes(steps[s], x, known) for s in spiky}
        for sym in block_coder.pixel_symbols(x, z1, valid):
            i, s, c = sym.image, sym.step, sym.channel
            item = (sym.values, sym.rows, sym.bases)
            if s in agreed:  # the spike value and class of each of these pixels, in the same order
                rr, cc = block_coder._extents(s, valid[i : i + 1])[0]
                item += tuple(t[i, c, :rr, :cc].reshape(-1).numpy() for t in agreed[s])
            parts.setdefault((int(owner[i]), s, c), []).append(item)
    for key, items in parts.items():
        parts[key] = [np.concatenate(a) for a in zip(*items)]
        j, s, c = key
        k = steps[s][0]
        vals, r, b = parts[key][:3]
        level, frac = r // mf, r % mf
        band = level * BANDS // levels
        for t, shift in enumerate(_CANDIDATES):
            bits = cost_bits_each(vals, np.clip(level + shift, 0, levels - 1) * mf + frac, b, block_coder.tx)
            cost[j, k, c, :, t] += np.bincount(band, weights=bits, minlength=BANDS)
    out: list[Adaptation] = []
    for j, (total, picked, _) in enumerate(samples):
        scale_up = total / len(picked)
        best = cost[j].argmin(axis=3)
        saving = (cost[j, ..., 0].sum() - np.take_along_axis(cost[j], best[..., None], 3).sum()) * scale_up
        shifts = _CANDIDATES[best] if saving > 2 * 8 * (1 + ph * ch * BANDS) else None
        levels_j = np.zeros(spike_shape(ph, ch), dtype=np.int64)
        saving = 0.0
        for s in spiky:
            k = steps[s][0]
            for c in range(ch):
                if (j, s, c) not in parts:  # an image too small to have pixels in this step
                    continue
                vals, r, b, value, cls = parts[(j, s, c)]
                level, frac = r // mf, r % mf
                if shifts is not None:
                    level = np.clip(level + shifts[k, c, level * BANDS // levels], 0, levels - 1)
                bits = cost_bits_each(vals, level * mf + frac, b, block_coder.tx)
                for q in range(SPIKE_CLASSES):
                    sel = cls == q
                    if sel.any():
                        est = _spike_costs(bits[sel], vals[sel] == value[sel])
                        levels_j[s, c, q] = _SPIKE_LEVELS[est.argmin()]
                        saving += (est[0] - est.min()) * scale_up
        keep = saving > 2 * 8 * (1 + len(spiky) * ch * SPIKE_CLASSES) and levels_j.any()
        out.append(Adaptation(shifts, levels_j if keep else None))
    return out
