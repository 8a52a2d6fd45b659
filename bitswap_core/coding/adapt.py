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
does it in exact integers). From container version 5 on, a pixel whose neighbours disagree also gets a
second spike, L2/256 on the value the dissenting neighbours share (the other side of an edge between two
flat areas). The encoder picks the levels per (coding step, channel, agreement class) on the same sampled
blocks; photos mostly keep them 0.

Payload header: u8 bands (0 = no scale shifts), then phases x channels x bands int8 shifts in C order;
from container version 4 on, then u8 spike classes (0 = no spikes), then, for each coding step with decoded
neighbours (phase 0's sub-phases 1-3, phases 1-3: phases.coding_steps), channels x classes u8 levels;
from version 5 on, then u8 second-spike classes (0 = none, else 2: agreement classes 1 and 2, the ones
with dissenting neighbours), then, for the same steps, channels x 2 u8 levels (each adds up with its
first spike's level to at most 255).
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
    """One image's corrections: scale shifts (phases, channels, bands), spike levels and second-spike
    levels (coding steps, channels, classes; rows of steps without decoded neighbours are 0, and so is
    class 0 of the second spikes). None = the model as is."""

    shifts: np.ndarray | None = None
    spikes: np.ndarray | None = None
    spikes2: np.ndarray | None = None


NONE = Adaptation()
_SECOND_CLASSES = list(range(1, SPIKE_CLASSES))  # agreement classes that have dissenting neighbours


def to_bytes(a: Adaptation) -> bytes:
    """The payload header (container version 5) of an adaptation."""
    shifts = b"\0" if a.shifts is None or not a.shifts.any() else (
        bytes([a.shifts.shape[2]]) + a.shifts.astype(np.int8).tobytes())
    spikes = b"\0" if a.spikes is None or not a.spikes.any() else (
        bytes([a.spikes.shape[2]]) + a.spikes[_spike_rows(a.spikes.shape[0])].astype(np.uint8).tobytes())
    second = b"\0" if a.spikes2 is None or not a.spikes2.any() else (
        bytes([len(_SECOND_CLASSES)])
        + a.spikes2[_spike_rows(a.spikes2.shape[0])][..., _SECOND_CLASSES].astype(np.uint8).tobytes())
    return shifts + spikes + second


def _spike_rows(steps: int) -> list[int]:
    """The spike-capable steps of a model with this many coding steps (container v4 layout)."""
    return pixel_phases.spike_steps(pixel_phases.coding_steps(4, True)) if steps == 7 else []


def spike_shape(phases: int, channels: int) -> tuple[int, int, int]:
    """Shape of Adaptation.spikes for a model (container v4 layout: phase 0 split in four sub-phases)."""
    return len(pixel_phases.coding_steps(phases, True)), channels, SPIKE_CLASSES


def from_bytes(payload: bytes, phases: int, channels: int, with_spikes: bool = True, with_second: bool = True
               ) -> tuple[Adaptation, bytes]:
    """(adaptation, the rest of the payload); raises CorruptPayloadError on a malformed header.
    with_spikes: whether the header has the spike section (container version 4 on); with_second: whether it
    has the second-spike section too (version 5 on)."""
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
    if not with_second:
        return Adaptation(shifts, spikes), rest
    if not rest:
        raise CorruptPayloadError("learned payload ends before its second-spike header")
    classes, second = rest[0], None
    if classes:
        shape = spike_shape(phases, channels)
        rows = _spike_rows(shape[0])
        n = len(rows) * channels * classes
        if not rows or classes != len(_SECOND_CLASSES) or len(rest) < 1 + n:
            raise CorruptPayloadError(f"second-spike header declares {classes} classes for a {phases}-phase model "
                                      f"in a {len(rest)}-byte remainder (expected {len(_SECOND_CLASSES)}, 4 phases)")
        second = np.zeros(shape, np.int64)
        second[np.ix_(rows, range(channels), _SECOND_CLASSES)] = np.frombuffer(
            rest, dtype=np.uint8, count=n, offset=1).reshape(len(rows), channels, classes)
        first = np.zeros(shape, np.int64) if spikes is None else spikes
        if (first + second).max() > 255:
            raise CorruptPayloadError("second-spike levels add up with their first spikes' to more than 255")
        rest = rest[1 + n :]
    else:
        rest = rest[1:]
    return Adaptation(shifts, spikes, second), rest


@dataclass(frozen=True)
class CodingMaps:
    """What the coder applies for a batch of blocks: each block's scale level map (B, phases, channels,
    levels), spike and second-spike levels (B, coding steps, channels, classes), each None when no block
    has one."""

    levels: torch.Tensor | None
    spikes: torch.Tensor | None
    spikes2: torch.Tensor | None = None

    def _parts(self):
        return self.levels, self.spikes, self.spikes2

    def __getitem__(self, idx) -> CodingMaps:
        return CodingMaps(*(None if t is None else t[idx] for t in self._parts()))

    def repeat(self, n: int) -> CodingMaps:
        """The maps of one image for n of its blocks."""
        return CodingMaps(*(None if t is None else t[:1].expand(n, *t.shape[1:]) for t in self._parts()))


def coding_maps(adaptations: Sequence[Adaptation] | None, cfg) -> CodingMaps | None:
    """The batch's CodingMaps, or None when every image keeps the model as is."""
    if adaptations is None:
        return None
    levels = level_maps([a.shifts for a in adaptations], cfg.pixel_phases, cfg.channels, cfg.x_scales)

    def stacked(parts):
        if all(t is None for t in parts):
            return None
        out = torch.zeros((len(parts), *spike_shape(cfg.pixel_phases, cfg.channels)), dtype=torch.int64)
        for i, t in enumerate(parts):
            if t is not None:
                out[i] = torch.from_numpy(t)
        return out

    maps = CodingMaps(levels, stacked([a.spikes for a in adaptations]), stacked([a.spikes2 for a in adaptations]))
    return None if all(t is None for t in maps._parts()) else maps


def spike_levels(spikes: np.ndarray | None, cls: np.ndarray) -> np.ndarray | None:
    """Per-pixel spike level of one coding step and channel: spikes (B, classes) levels, cls (B, h, w) classes
    (-1 = no spike); None when no pixel gets a spike. numpy: these are a few hundred pixels per block."""
    if spikes is None or not spikes.any():
        return None
    lv = spikes[np.arange(len(cls))[:, None, None], np.maximum(cls, 0)]
    return np.where(cls >= 0, lv, 0)


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


def _spike_costs(bits: np.ndarray, hit: np.ndarray, hit2: np.ndarray, l1: np.ndarray, l2: np.ndarray
                 ) -> np.ndarray:
    """Estimated bits of pixels costing `bits` under the model, hit / hit2 = equal to their spike / second
    spike value, for each candidate pair of levels (l1[i], l2[i]); plus one virtual miss, so that a few
    sampled hits never buy full confidence."""
    w1, w2 = l1 / 256.0, l2 / 256.0
    keep = 1 - w1 - w2
    cost = bits[~(hit | hit2)].sum() - (np.count_nonzero(~(hit | hit2)) + 1) * np.log2(keep)
    for h, w in ((hit, w1), (hit2, w2)):
        cost = cost - np.log2(keep[None, :] * 2.0 ** -bits[h][:, None] + w[None, :]).sum(0)
    return cost


def _fit_spikes(bits: np.ndarray, hit: np.ndarray, hit2: np.ndarray | None) -> tuple[int, int, int, float, float]:
    """(level, the level with a second spike, second level, estimated saving of one spike, further saving
    of the second) for one (step, channel, class): the first level over every candidate alone, then the
    second given it and the first again given the second (coordinate descent, smallest levels on ties)."""
    zero = np.zeros(len(_SPIKE_LEVELS), np.int64)
    none = np.zeros_like(hit)
    est = _spike_costs(bits, hit, none, _SPIKE_LEVELS, zero)
    l1 = int(_SPIKE_LEVELS[est.argmin()])
    if hit2 is None or not hit2.any():
        return l1, l1, 0, float(est[0] - est.min()), 0.0
    cand = _SPIKE_LEVELS[_SPIKE_LEVELS + l1 <= 255]
    est2 = _spike_costs(bits, hit, hit2, np.full(len(cand), l1), cand)
    l2 = int(cand[est2.argmin()])
    cand = _SPIKE_LEVELS[_SPIKE_LEVELS + l2 <= 255]
    est3 = _spike_costs(bits, hit, hit2, cand, np.full(len(cand), l2))
    return l1, int(cand[est3.argmin()]), l2, float(est[0] - est.min()), float(est.min() - est3.min())


def choose(block_coder, images: Sequence[np.ndarray], sample_blocks: int = SAMPLE_BLOCKS, seed: int = 0,
           spikes: int = 2) -> list[Adaptation]:
    """The adaptation of each (H, W, C) uint8 image, from the pixel costs of up to sample_blocks of its
    blocks: first the scale shifts (every candidate shift), then, given them, the spike levels (4-phase
    models only; spikes = 2: both spikes, 1: the first only, 0: none; _fit_spikes). One latent sample per block from a
    sampler seeded alike for every image, so the choice, and the bytes, depend on the image alone, not on
    the batch; the networks see the samples of several images at once. A part is left out (None) where its
    estimated saving does not pay for its header twice."""
    from bitswap_core.coding.rans import cost_bits_each, random_coder

    cfg, m = block_coder.cfg, block_coder.net
    ph, ch, levels, mf = cfg.pixel_phases, cfg.channels, cfg.x_scales, cfg.mean_frac
    steps = block_coder.steps
    if spikes not in (0, 1, 2):
        raise ValueError(f"spikes must be 0, 1 or 2, not {spikes!r}")
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
        one, first, second = (np.zeros(spike_shape(ph, ch), dtype=np.int64) for _ in range(3))
        saving, saving2 = 0.0, 0.0
        for s in spiky:
            k = steps[s][0]
            for c in range(ch):
                if (j, s, c) not in parts:  # an image too small to have pixels in this step
                    continue
                vals, r, b, value, cls, value2 = parts[(j, s, c)]
                level, frac = r // mf, r % mf
                if shifts is not None:
                    level = np.clip(level + shifts[k, c, level * BANDS // levels], 0, levels - 1)
                bits = cost_bits_each(vals, level * mf + frac, b, block_coder.tx)
                for q in range(SPIKE_CLASSES):
                    sel = cls == q
                    if sel.any():
                        hit2 = vals[sel] == value2[sel] if spikes == 2 and q in _SECOND_CLASSES else None
                        one[s, c, q], first[s, c, q], second[s, c, q], gain, gain2 = _fit_spikes(
                            bits[sel], vals[sel] == value[sel], hit2)
                        saving, saving2 = saving + gain * scale_up, saving2 + gain2 * scale_up
        keep = saving > 2 * 8 * (1 + len(spiky) * ch * SPIKE_CLASSES) and one.any()
        keep2 = keep and saving2 > 2 * 8 * (1 + len(spiky) * ch * len(_SECOND_CLASSES)) and second.any()
        if keep2:
            out.append(Adaptation(shifts, first if first.any() else None, second))
        else:
            out.append(Adaptation(shifts, one if keep else None))
    return out
