"""Bits-back schedules over the exact model: Bit-Swap (recursive, interleaved) and naive BB-ANS.

Each image is one stack (AnsCoder) and its blocks (32x32, or larger: BlockCoder.side) are one sequence on
it; a step codes one block of every image in the batch, so the networks see many blocks at once. Read top
to bottom, the encoders are the paper's algorithms; each decoder is its encoder run backwards (pops <->
pushes, reversed order).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from bitswap_core.blocks import BLOCK, bordered, check_side, grid, pad_block, to_blocks, valid_sizes
from bitswap_core.coding import adapt, direct, feedback, first_block, importance
from bitswap_core.coding.rans import AnsCoder, GroupedCells, Table, cell_value, random_coder
from bitswap_core.coding.tables import rows_bases
from bitswap_core.model import phases
from bitswap_core.model.exact import ExactModel

SCHEMES = ("bitswap", "bbans")


class _Timed:
    """Forwards calls to the model and adds up the seconds spent in them."""

    def __init__(self, model: ExactModel):
        self.model, self.seconds = model, 0.0

    def __getattr__(self, name):
        fn = getattr(self.model, name)

        def timed(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds += time.perf_counter() - t

        return timed


def _flat(tracker, name: str, i: int, r: int, c: int, channel: int | None = None) -> np.ndarray | None:
    """Block i's r x c values of a tracker's per-pixel array (score, or feedback of one channel), or None."""
    t = None if tracker is None else getattr(tracker, name)
    if t is None:
        return None
    return np.ascontiguousarray(t[i, :r, :c] if channel is None else t[i, channel, :r, :c]).reshape(-1)


def _earlier(xs: np.ndarray, i: int, ch: int, r: int, c: int):
    """The channels before ch of block i's r x c real pixels in a step's view, flat, when asked (a palette's
    cells depend on them; they are decoded before ch is popped)."""
    return lambda: [np.ascontiguousarray(xs[i, k, :r, :c]).reshape(-1).astype(np.int64) for k in range(ch)]


class PixelSymbols(NamedTuple):
    """One block's symbols of one channel in one coding step, as the coder takes them."""

    image: int  # index of the block (its image's coder) in the batch
    step: int  # index into BlockCoder.steps
    channel: int
    values: np.ndarray
    rows: np.ndarray
    bases: np.ndarray
    spikes: tuple[np.ndarray, ...] | None  # (spike values, levels[, second values, levels]) for the coder, or None
    cells: np.ndarray | GroupedCells | None = None  # this channel's value or palette cells (adapt.cells_of)
    score: np.ndarray | None = None  # the pixels' surprise scores (coding/surprise.py), when the maps ask for them
    feedback: np.ndarray | None = None  # their neighbours' mean residual (coding/residual.py), when the maps ask


def _kept(nets: dict | None, key, make):
    """nets[key], made by make() and kept there the first time; make() alone when nets is None."""
    if nets is None:
        return make()
    if key not in nets:
        nets[key] = make()
    return nets[key]


class BlockCoder:
    """push_blocks / pop_blocks: one bits-back step for one block of each of several images.

    split: how phase (0,0) is split into sub-phases (phases.coding_steps): 2 as container v18 on codes it,
    1 (or True) as versions 4-17 did, 0 (or False) for older payloads. border: the neighbour predictor,
    spikes and blend contexts also read the next blocks' first row and column (blocks.bordered), which the
    decoder has already decoded, as container v8 on does; the pixel methods then take `border`, the blocks
    with their border and its known mask. side: the blocks' side, 32 as the model was trained, or 64 / 128
    (container v15: the same convolutional networks over larger blocks, fewer pixels at a block's edge)."""

    def __init__(self, model: ExactModel, scheme: str = "bitswap", split: int = phases.SPLIT, border: bool = False,
                 side: int = BLOCK):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
        cfg = model.cfg
        self.model, self.scheme, self.cfg, self.border = model, scheme, cfg, border
        self.side = check_side(side)
        self.z_side = side // 2  # the latent grids are side/2 x side/2
        self.z_dims = cfg.z_channels * self.z_side**2  # latents per layer of one block
        self.split = int(split)
        self.steps = phases.coding_steps(cfg.pixel_phases, self.split)
        self.tz = Table(model.table_z, cfg.z_bins, cfg.precision)
        self.tx = Table(model.table_x, 256, cfg.precision)
        # enough initial bits for the largest run of pops before any push (BB-ANS: all layers)
        self.bed_words = cfg.nz * self.z_dims * cfg.precision // 32 + 64
        self.net = _Timed(model)  # the networks, timed for the benchmarks' network/coder split
        self._sides = {side: self}

    def at_side(self, side: int) -> BlockCoder:
        """This coder for blocks of another side (the same model and settings): the 32x32 parts of an
        image's first blocks (split_blocks), the blocks the adaptation is fitted on (adapt.choose)."""
        if side not in self._sides:
            self._sides[side] = BlockCoder(self.model, self.scheme, self.split, self.border, side)
            self._sides[side]._sides = self._sides
        return self._sides[side]

    # ---- latents ----
    def top_prior(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.top_prior(n, self.z_side)

    def q1(self, x: torch.Tensor, q1=None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z1|x) levels of blocks x as coded (q1: already computed from x): the one place the coder and
        the encoder's fits take it from (bench/encoder_correction.py measures a per-image correction here)."""
        return q1 if q1 is not None else self.net.q_latent(0, x)

    def _latent_codes(self, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, bases) per block; shift: per block, a scale-level shift of the latents' distributions (the
        adaptation's latent shift, coding/adapt.py), or None."""
        if shift is not None:
            scale = torch.clamp(scale + shift.reshape(-1, *[1] * (scale.dim() - 1)), 0, self.cfg.z_scales - 1)
        rows, bases = rows_bases(mean.cpu().numpy(), scale.cpu().numpy(), self.cfg.mean_frac)
        n = rows.shape[0]
        return rows.reshape(n, -1), bases.reshape(n, -1)

    def pop_latents(self, coders: Sequence[AnsCoder], dist, shift: torch.Tensor | None = None) -> torch.Tensor:
        rows, bases = self._latent_codes(*dist, shift)
        z = np.stack([c.pop(rows[i], bases[i], self.tz) for i, c in enumerate(coders)])
        return torch.from_numpy(z.reshape(dist[0].shape))

    def push_latents(self, coders: Sequence[AnsCoder], z: torch.Tensor, dist, shift: torch.Tensor | None = None
                     ) -> None:
        rows, bases = self._latent_codes(*dist, shift)
        zf = z.reshape(len(coders), -1).numpy()
        for i, c in enumerate(coders):
            c.push(zf[i], rows[i], bases[i], self.tz)

    def sample_elbo_bits(self, x: torch.Tensor, valid: np.ndarray, samplers: Sequence[AnsCoder], maps=None,
                         border=None, q1=None) -> np.ndarray:
        """Per block, its negative ELBO in bits with one latent sample popped from its sampler (a coder on
        random bits; blocks may share one): what the bits-back chain pays for it, without ANS. maps and
        border as for pixel_symbols; q1: q(z1|x) of these blocks if already computed, as for push_blocks."""
        from bitswap_core.coding.rans import cost_bits

        m, n, shift = self.net, len(x), adapt.latent_shift(maps)
        bits, z = np.zeros(n), []
        for i in range(self.cfg.nz):
            dist = self.q1(x, q1) if i == 0 else m.q_latent(i, z[i - 1])
            rows, bases = self._latent_codes(*dist, shift)
            zi = np.stack([samplers[j].pop(rows[j], bases[j], self.tz) for j in range(n)])
            bits -= [cost_bits(zi[j], rows[j], bases[j], self.tz) for j in range(n)]
            z.append(torch.from_numpy(zi.reshape(dist[0].shape)))
        for i in range(self.cfg.nz):
            rows, bases = self._latent_codes(*(m.p_latent(i, z[i + 1]) if i < self.cfg.nz - 1 else self.top_prior(n)),
                                             shift)
            zf = z[i].reshape(n, -1).numpy()
            bits += [cost_bits(zf[j], rows[j], bases[j], self.tz) for j in range(n)]
        for sym in self.pixel_symbols(x, z[0], valid, maps, border):
            bits[sym.image] += cost_bits(sym.values, sym.rows, sym.bases, self.tx, sym.spikes, sym.cells)
        return bits

    # ---- pixels: step by step (coding_steps), channel by channel (R, then G|R, then B|R,G); real pixels ----
    def _known(self, valid: np.ndarray) -> torch.Tensor:
        """(B, 1, s, s) 1 where a block's pixel is real, 0 on padding (which is never coded)."""
        known = torch.zeros((len(valid), 1, self.side, self.side), dtype=torch.int64)
        for i, (r, k) in enumerate(valid):
            known[i, 0, :r, :k] = 1
        return known

    def _tracker(self, maps: adapt.CodingMaps | None, valid: np.ndarray) -> feedback.Tracker | None:
        """The surprise context's and residual feedback's state for these blocks (coding/feedback.py), if
        their maps have either."""
        if maps is None or (maps.surprise_edges is None and maps.residual is None):
            return None
        return feedback.Tracker(self.steps, self._known(valid), self.cfg.mean_frac, self.cfg.x_scales,
                                maps.surprise, maps.surprise_edges, maps.residual, maps.residual_edges,
                                self.cfg.channels)

    def _extents(self, step: int, valid: np.ndarray) -> list[tuple[int, int]]:
        """Rows and columns of each block's real pixels in one coding step's grid."""
        if self.cfg.pixel_phases == 1:
            return [(int(r), int(k)) for r, k in valid]
        phase, sub = self.steps[step]
        out = [phases.valid_extent(int(r), int(k), *phases.offsets(4)[phase]) for r, k in valid]
        for s in phases.sub_path(sub):
            out = [phases.valid_extent(r, k, *phases.offsets(4)[s]) for r, k in out]
        return out

    def step_view(self, x, step: int):
        """One coding step's pixels of (..., s, s) blocks (a strided view)."""
        return phases.step_view(x, self.cfg.pixel_phases, *self.steps[step])

    def _pixel_codes(self, params, step: int, channel: int, xk: torch.Tensor, means: list[torch.Tensor],
                     maps: adapt.CodingMaps | None = None, context=None, colour=None):
        """(rows, bases) of one channel's distributions in one step's grid; xk: the step's phase's pixels
        (B, C, s/2, s/2). Channels come in order; means collects their mean levels, which later channels'
        colour residual reads (the model's, unblended). maps: the blocks' per-image adaptation
        (coding/adapt.py) or None; context: the step's (prediction, class) arrays if it is blended; colour:
        its colour blend's (difference, class) arrays (phases.colour_context) if it has one."""
        phase, sub = self.steps[step]
        means.append(self.model.conditional_mean(params, channel, xk, means[:channel]))
        levels = None if maps is None or maps.levels is None else maps.levels[:, phase, channel]
        scale = adapt.apply(params["scale"][:, channel], levels)
        mean = means[-1]
        mean, scale = phases.sub_view(mean, sub), phases.sub_view(scale, sub)
        mean, scale = mean.cpu().numpy(), scale.cpu().numpy()
        if context is not None:
            mean, scale = adapt.blended(mean, scale, context[0][:, channel], context[1][:, channel],
                                        maps.blend[:, step, channel].numpy(), self.cfg.x_scales,
                                        255 * self.cfg.mean_frac)
        if colour is not None and channel > 0:  # the previous channel of these pixels is decoded already
            prev = phases.sub_view(xk[:, channel - 1], sub)
            target = adapt.colour_prediction(prev.cpu().numpy().astype(np.int64), colour[0][:, channel - 1],
                                             self.cfg.mean_frac)
            mean, scale = adapt.blended(mean, scale, target, colour[1][:, channel - 1],
                                        maps.colour[:, step, channel - 1].numpy(), self.cfg.x_scales,
                                        255 * self.cfg.mean_frac)
        return rows_bases(mean, scale, self.cfg.mean_frac)

    def _context(self, x: torch.Tensor, known: torch.Tensor, step: int, maps: adapt.CodingMaps | None):
        """(prediction, class) of a blended step's pixels from the decoded neighbours, or None."""
        if maps is None or maps.blend is None or not maps.blend[:, step].any():
            return None
        return phases.step_context(self.steps[step], x, known, self.cfg.mean_frac)

    def _colour(self, x: torch.Tensor, known: torch.Tensor, step: int, maps: adapt.CodingMaps | None):
        """(difference, class) of a colour-blended step's pixels from the decoded neighbours, or None."""
        if maps is None or maps.colour is None or not maps.colour[:, step].any():
            return None
        return phases.colour_context(self.steps[step], x, known, self.cfg.mean_frac)

    def _spikes(self, x: torch.Tensor, known: torch.Tensor, step: int, maps: adapt.CodingMaps | None):
        """Per channel, (spike values, levels) or (spike values, levels, second values, levels) numpy
        arrays in one step's grid, or None."""
        tables = [] if maps is None else [None if t is None else t[:, step].numpy()
                                          for t in (maps.spikes, maps.spikes2)]
        if not any(t is not None and t.any() for t in tables):
            return [None] * self.cfg.channels
        value, cls, value2 = (t.numpy() for t in phases.step_spikes(self.steps[step], x, known))
        out = []
        for ch in range(self.cfg.channels):
            lv = [adapt.spike_levels(None if t is None else t[:, ch], cls[:, ch]) for t in tables]
            if lv[0] is None and lv[1] is None:
                out.append(None)
                continue
            first = (value[:, ch], np.zeros_like(cls[:, ch]) if lv[0] is None else lv[0])
            out.append(first if lv[1] is None else first + (value2[:, ch], lv[1]))
        return out

    @staticmethod
    def _block_spikes(spikes, i: int, r: int, c: int):
        """Block i's flat (values, levels) over its r x c real pixels, or None if it has no spike."""
        if spikes is None or not any(lv[i, :r, :c].any() for lv in spikes[1::2]):
            return None
        return tuple(np.ascontiguousarray(t[i, :r, :c]).reshape(-1) for t in spikes)

    def _phase_params(self, trunk, x, xc, known, nets: dict | None = None):
        """Yield (step, the step's phase's pixel tensor, that phase's network outputs), computing each
        phase's networks once (phase 0's sub-phases share them). xc, known: the blocks x as the contexts
        read them (bordered or x itself) and their known mask. nets: a dict that keeps each phase's
        outputs for another pass over the same blocks and latents, or None."""
        last, params = None, None
        for step, (phase, _) in enumerate(self.steps):
            if phase != last:
                params, last = _kept(nets, phase, lambda p=phase: self.net.p_pixels(trunk, p, xc, known)), phase
            yield step, phases.view(x, self.cfg.pixel_phases, phase), params

    def _bordered(self, x: torch.Tensor, valid: np.ndarray, border):
        """(blocks as the contexts read them, known mask): the border's if the coder uses one."""
        if self.border != (border is not None):
            raise ValueError("a bordered coder takes the blocks' border, an unbordered one none")
        return (x, self._known(valid)) if border is None else border

    def borders(self, parts) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The `border` argument of the pixel methods, None for an unbordered coder: parts is a list of (an
        image's blocks (n, C, s, s), their valid sizes, blocks per row, block indices), stacked in order
        (blocks.bordered)."""
        if not self.border:
            return None
        xs, ks = zip(*(bordered(b, v, gw, idx) for b, v, gw, idx in parts))
        return torch.from_numpy(np.concatenate(xs).astype(np.int64)), torch.from_numpy(np.concatenate(ks))

    def pixel_symbols(self, x: torch.Tensor, z1: torch.Tensor, valid: np.ndarray, maps=None, border=None,
                      nets: dict | None = None):
        """Yield PixelSymbols in decoding order for blocks x whose pixels are all known (encoder, cost
        accounting): every step sees the true earlier ones, as the decoder will. maps: adapt.CodingMaps of
        these blocks, or None for the model as is. border: (B, C, s + 1, s + 1) int64 blocks with their border
        and (B, 1, s + 1, s + 1) known (blocks.bordered), for a bordered coder. nets: a dict for the networks'
        outputs, filled by the first pass over these blocks and z1 and read by the next (the encoder's fits
        price the same sample with and without the adaptation; the maps change codes, not the networks)."""
        xc, known = self._bordered(x, valid, border)
        xn, trunk = x.numpy(), _kept(nets, "trunk", lambda: self.net.px_trunk(z1))
        tracker = self._tracker(maps, valid)
        for step, xk, params in self._phase_params(trunk, x, xc, known, nets):
            ext, xs, means = self._extents(step, valid), self.step_view(xn, step), []
            spikes, context = self._spikes(xc, known, step, maps), self._context(xc, known, step, maps)
            colour = self._colour(xc, known, step, maps)
            if tracker is not None:
                tracker.start(step)
            for ch in range(x.shape[1]):
                rows, bases = self._pixel_codes(params, step, ch, xk, means, maps, context, colour)
                coded, cbases = (rows, bases) if tracker is None else tracker.codes(rows, bases, step, ch)
                for i, (r, c) in enumerate(ext):
                    values = np.ascontiguousarray(xs[i, ch, :r, :c]).reshape(-1).astype(np.int64)
                    yield PixelSymbols(i, step, ch, values, np.ascontiguousarray(coded[i, :r, :c]).reshape(-1),
                                       np.ascontiguousarray(cbases[i, :r, :c]).reshape(-1),
                                       self._block_spikes(spikes[ch], i, r, c),
                                       adapt.cells_of(maps, i, ch, _earlier(xs, i, ch, r, c)),
                                       _flat(tracker, "score", i, r, c), _flat(tracker, "feedback", i, r, c, ch))
                if tracker is not None:
                    tracker.add(step, ch, xs[:, ch], rows, bases, self.tx)

    def push_pixels(self, coders, x: torch.Tensor, z1: torch.Tensor, valid: np.ndarray, maps=None,
                    border=None) -> None:
        # the decoder pops first step, first channel first: push everything in reverse
        for s in reversed(list(self.pixel_symbols(x, z1, valid, maps, border))):
            coders[s.image].push(s.values, s.rows, s.bases, self.tx, s.spikes, s.cells)

    def pop_pixels(self, coders, z1: torch.Tensor, valid: np.ndarray, maps=None, border=None) -> torch.Tensor:
        """border: as for pixel_symbols, its block area unused (the decoded pixels go there)."""
        n, ch_count = len(coders), self.cfg.channels
        if border is None:
            xc, known = self._bordered(torch.zeros((n, ch_count, self.side, self.side), dtype=torch.int64), valid,
                                       None)
        else:
            xc, known = self._bordered(border[0].clone(), valid, border)
        x = xc[..., : self.side, : self.side]  # a view: decoded pixels land in xc
        x.zero_()  # (a bordered block arrives with whatever the caller's buffer held there)
        xn = x.numpy()  # shares memory with x
        trunk = self.net.px_trunk(z1)
        tracker = self._tracker(maps, valid)
        for step, xk, params in self._phase_params(trunk, x, xc, known):
            ext, xs, means = self._extents(step, valid), self.step_view(xn, step), []
            # spikes, blend contexts and surprise scores come from the earlier steps, already decoded
            spikes, context = self._spikes(xc, known, step, maps), self._context(xc, known, step, maps)
            colour = self._colour(xc, known, step, maps)
            if tracker is not None:
                tracker.start(step)
            for ch in range(ch_count):
                rows, bases = self._pixel_codes(params, step, ch, xk, means, maps, context, colour)
                coded, cbases = (rows, bases) if tracker is None else tracker.codes(rows, bases, step, ch)
                for i, c in enumerate(coders):
                    r, w = ext[i]
                    vals = c.pop(np.ascontiguousarray(coded[i, :r, :w]).reshape(-1),
                                 np.ascontiguousarray(cbases[i, :r, :w]).reshape(-1), self.tx,
                                 self._block_spikes(spikes[ch], i, r, w),
                                 adapt.cells_of(maps, i, ch, _earlier(xs, i, ch, r, w)))
                    xs[i, ch, :r, :w] = vals.reshape(r, w)
                if tracker is not None:
                    tracker.add(step, ch, xs[:, ch], rows, bases, self.tx)
        for i in range(n):
            pad_block(xn[i], *valid[i])
        return x.contiguous()

    # ---- an image's first block: latents on a coarse grid (coding/first_block.py) ----
    def push_first(self, coders: Sequence[AnsCoder], x: torch.Tensor, valid: np.ndarray, grids: Sequence[int],
                   q1=None, maps: adapt.CodingMaps | None = None, border=None) -> None:
        """Code first blocks without bits-back: their pixels given z1 at the cell of grids[i] latent bins
        holding its posterior mean, then those cells under p(z1 | z2 at its prior's mode)."""
        mean = self.q1(x, q1)[0]
        cells, z1 = first_block.latent_cells(self, mean, grids)
        self.push_pixels(coders, x, z1, valid, maps, border)
        rows, bases = self._latent_codes(*first_block.prior_above(self, len(coders)), adapt.latent_shift(maps))
        for i, c in enumerate(coders):
            c.push_cells(cells[i], rows[i], bases[i], self.tz, int(grids[i]))

    def pop_first(self, coders: Sequence[AnsCoder], valid: np.ndarray, grids: Sequence[int],
                  maps: adapt.CodingMaps | None = None, border=None) -> torch.Tensor:
        rows, bases = self._latent_codes(*first_block.prior_above(self, len(coders)), adapt.latent_shift(maps))
        z1 = np.stack([cell_value(c.pop_cells(rows[i], bases[i], self.tz, int(k)), self.cfg.z_bins, int(k))
                       for i, (c, k) in enumerate(zip(coders, grids))])
        z1 = torch.from_numpy(z1.reshape(len(coders), self.cfg.z_channels, self.z_side, self.z_side))
        return self.pop_pixels(coders, z1, valid, maps, border)

    # ---- one block of each image ----
    def push_blocks(self, coders: Sequence[AnsCoder], blocks: np.ndarray, valid: np.ndarray, q1=None,
                    maps: adapt.CodingMaps | None = None, border=None, grids: Sequence[int] | None = None,
                    particles: Sequence[int] | None = None) -> None:
        """q1: q(z1|x) of these blocks if already computed (it depends on x alone, so the encoder can
        batch it over many steps). maps: the images' adaptation (adapt.coding_maps rows) or None. border:
        the blocks with their border (self.borders) for a bordered coder. grids: per block, its image's
        first-block grid if this is that image's first block (push_first) and 0 otherwise, or None (all 0).
        particles: per block, how many posterior samples code it (coding/importance.py; 1: one, the
        schedule's own), or None (all 1)."""
        x = torch.from_numpy(blocks.astype(np.int64))
        for kind, idx in _kinds(grids, particles, len(coders)):
            whole = len(idx) == len(coders)
            sub, xs = (coders, x) if whole else ([coders[i] for i in idx], x[idx])
            rows = (q1, maps, border) if whole else _rows((q1, maps, border), idx)
            if kind == 0:
                self.push_first(sub, xs, valid[idx], [grids[i] for i in idx], *rows)
            elif kind == 1:
                self._push_bits_back(sub, xs, valid[idx], *rows)
            else:
                importance.push_blocks(self, sub, xs, valid[idx], kind, *rows)

    def _push_bits_back(self, coders, x: torch.Tensor, valid: np.ndarray, q1=None, maps=None, border=None) -> None:
        m, nz, ls = self.net, self.cfg.nz, adapt.latent_shift(maps)
        z: list[torch.Tensor] = []
        for i in range(nz):
            dist = self.q1(x, q1) if i == 0 else m.q_latent(i, z[i - 1])
            z.append(self.pop_latents(coders, dist, ls))  # bits back
            if self.scheme == "bitswap":  # Bit-Swap: give the bits back at once, layer by layer
                if i == 0:
                    self.push_pixels(coders, x, z[0], valid, maps, border)
                else:
                    self.push_latents(coders, z[i - 1], m.p_latent(i - 1, z[i]), ls)
        if self.scheme == "bbans":
            self.push_pixels(coders, x, z[0], valid, maps, border)
            for i in range(1, nz):
                self.push_latents(coders, z[i - 1], m.p_latent(i - 1, z[i]), ls)
        self.push_latents(coders, z[-1], self.top_prior(len(coders)), ls)

    def pop_blocks(self, coders: Sequence[AnsCoder], valid: np.ndarray, maps: adapt.CodingMaps | None = None,
                   border=None, grids: Sequence[int] | None = None, particles: Sequence[int] | None = None
                   ) -> np.ndarray:
        out = np.empty((len(coders), self.cfg.channels, self.side, self.side), dtype=np.uint8)
        for kind, idx in _kinds(grids, particles, len(coders)):
            whole = len(idx) == len(coders)
            sub = coders if whole else [coders[i] for i in idx]
            rows = (maps, border) if whole else _rows((maps, border), idx)
            if kind == 0:
                x = self.pop_first(sub, valid[idx], [grids[i] for i in idx], *rows).numpy()
            elif kind == 1:
                x = self._pop_bits_back(sub, valid[idx], *rows)
            else:
                x = importance.pop_blocks(self, sub, valid[idx], kind, *rows).numpy()
            out[idx] = x.astype(np.uint8)
        return out

    def _pop_bits_back(self, coders, valid: np.ndarray, maps=None, border=None) -> np.ndarray:
        m, nz, ls = self.net, self.cfg.nz, adapt.latent_shift(maps)
        z: list[torch.Tensor | None] = [None] * nz
        z[-1] = self.pop_latents(coders, self.top_prior(len(coders)), ls)
        if self.scheme == "bitswap":
            x = None
            for i in range(nz - 1, -1, -1):
                if i > 0:
                    z[i - 1] = self.pop_latents(coders, m.p_latent(i - 1, z[i]), ls)
                else:
                    x = self.pop_pixels(coders, z[0], valid, maps, border)
                self.push_latents(coders, z[i], self.q1(x) if i == 0 else m.q_latent(i, z[i - 1]), ls)
        else:
            for i in range(nz - 1, 0, -1):
                z[i - 1] = self.pop_latents(coders, m.p_latent(i - 1, z[i]), ls)
            x = self.pop_pixels(coders, z[0], valid, maps, border)
            for i in range(nz - 1, -1, -1):
                self.push_latents(coders, z[i], self.q1(x) if i == 0 else m.q_latent(i, z[i - 1]), ls)
        return x.numpy().astype(np.uint8)


def _kinds(grids: Sequence[int] | None, particles: Sequence[int] | None, n: int) -> list[tuple[int, np.ndarray]]:
    """The blocks of one step by how they are coded: (0, first blocks coded on a grid), (1, one posterior
    sample), (k, k particles), each with its indices; empty groups left out."""
    g = np.zeros(n, dtype=np.int64) if grids is None else np.asarray(grids, dtype=np.int64)
    k = np.ones(n, dtype=np.int64) if particles is None else np.maximum(np.asarray(particles, dtype=np.int64), 1)
    k = np.where(g > 0, 0, k)
    return [(int(v), np.flatnonzero(k == v)) for v in np.unique(k)]


def _rows(parts, idx: np.ndarray) -> list:
    """Each of parts (q1 / border pairs of tensors, CodingMaps, or None) at rows idx."""
    out = []
    for p in parts:
        if p is None:
            out.append(None)
        elif isinstance(p, tuple):
            out.append(tuple(t[torch.from_numpy(idx)] for t in p))
        else:
            out.append(p[torch.from_numpy(idx)])
    return out


def encode_images(block_coder: BlockCoder, images: Sequence[np.ndarray], block_bits: list | None = None,
                  adaptations: Sequence[adapt.Adaptation] | None = None,
                  first_grids: Sequence[int] | None = None, particles: int = 1,
                  starts: list | None = None, parts: list | None = None, lead: bool = False,
                  leads: list | None = None, directly: bool = False, directs: list | None = None,
                  traces: list | None = None) -> list[AnsCoder]:
    """(H, W, C) uint8 arrays -> one finished coder per image. Blocks of all images are batched per step.

    block_bits, if given, receives per image the stored size in bits after each block (cost accounting).
    adaptations: per image, its adaptation (coding/adapt.py), or None; the decoder needs the same.
    first_grids: per image, the latent grid of its first block (coding/first_block.py; 0: bits-back), or
    None (all 0, as containers before version 10); the decoder needs the same.
    particles: posterior samples per block (coding/importance.py; 1: the schedule's own single sample).
    With more, each image climbs to them (importance.rungs) as its stack grows deep enough for each
    (importance.stack_needed); starts, if given, receives per image the block where each rung started
    (its block count for a rung never reached), which the decoder needs.
    With blocks larger than 32x32 (block_coder.side) an image's first blocks are coded in 32x32 parts until
    its stack is deep enough for a whole one (split_blocks); parts, if given, receives per image how many
    (0 for 32x32 blocks), which the decoder needs.
    lead: an image on a grid codes each next 32x32 part (or 32x32 block) both on it and by bits-back and keeps
    the smaller, until bits-back wins (first_block.Lead, container v20; False: the first alone, as
    containers 10-19); leads, if given, receives per image how many went on the grid, which the decoder needs.
    directly: a block (or a block coded in parts, as one) that the classical context model codes cheaply
    enough (direct.trace) is pushed both ways and the smaller kept (direct.Choice, container v21); directs,
    if given, receives per image which blocks went direct ((n,) bool), which the decoder needs; traces: the
    images' direct.trace at this side if already made.
    """
    importance.check_particles(particles)
    maps = adapt.coding_maps(adaptations, block_coder.cfg, len(block_coder.steps))
    side = block_coder.side
    blocks = [to_blocks(im, side) for im in images]
    valid = [valid_sizes(im.shape[0], im.shape[1], side) for im in images]
    per_row = [grid(im.shape[0], im.shape[1], side)[1] for im in images]
    coders = [AnsCoder(block_coder.bed_words) for _ in images]
    led = None if first_grids is None else [first_block.Lead(int(g), lead) for g in first_grids]
    if directly and traces is None:
        traces = [direct.trace(im, side) for im in images]
    choice = direct.Choice(traces) if directly else None
    if block_bits is not None:
        block_bits.extend([] for _ in images)
    steps = max((len(b) for b in blocks), default=0)
    ladder = importance.rungs(particles)
    start = [[len(b)] * len(ladder) for b in blocks]
    need = [importance.stack_needed(block_coder, k) for k in ladder]
    # steps whose q(z1|x) is computed in one batch (256 blocks of 32x32 pixels)
    ahead = max(1, 256 // max(1, len(images) * (side // BLOCK) ** 2))
    q1: list = []
    split = None if side == BLOCK else [split_blocks(im, side) for im in images]
    parted = [len(b) for b in blocks]  # per image, its first block coded whole (above t while in parts)
    need_whole = importance.stack_needed(block_coder, 1)  # bits a whole block pops, with a margin
    for t in range(steps):
        act = [j for j in range(len(images)) if t < len(blocks[j])]
        if t % ahead == 0:  # q(z1|x) needs only pixels: one big batch for the next `ahead` steps
            span = [(s, [j for j in range(len(images)) if s < len(blocks[j])]) for s in range(t, min(t + ahead, steps))]
            xs = np.stack([blocks[j][s] for s, js in span for j in js])
            mean, scale = block_coder.net.q_latent(0, torch.from_numpy(xs.astype(np.int64)))
            q1, k = [], 0
            for _, js in span:
                q1.append((mean[k : k + len(js)], scale[k : k + len(js)]))
                k += len(js)
        if split is not None:  # blocks coded in 32x32 parts while the stack is shallow (split_blocks)
            mine = [j for j in act if parted[j] > t and (t == 0 or coders[j].num_bits() < need_whole)]
            for j in act:
                if j not in mine and parted[j] > t:
                    parted[j] = t
            sure = _sure(choice, coders, mine, t)
            parting = [j for j in mine if j not in sure]  # (a sure direct block is pushed whole already)
            tries = {} if choice is None else choice.tries(coders, led, parting, t)
            _push_parts(block_coder.at_side(BLOCK), [coders[j] for j in parting], [split[j] for j in parting], t,
                        None if maps is None else maps[parting], None if led is None else [led[j] for j in parting])
            if choice is not None:
                choice.keep(coders, tries, led, t)
            if block_bits is not None:
                for j in mine:
                    block_bits[j].append(coders[j].num_bits())
            act, q1[t % ahead] = _without(act, q1[t % ahead], set(mine))
            if not act:
                continue
            for j in act if led is not None else ():  # coded whole from here: never on the grid
                led[j].close()
        for j in act:
            for r in range(len(ladder)):
                if t and start[j][r] > t and coders[j].num_bits() >= need[r]:
                    start[j][r] = t
        sure = _sure(choice, coders, act, t)
        if sure:  # coded already: the rest of the batch goes on without them
            for j in sure if block_bits is not None else ():
                block_bits[j].append(coders[j].num_bits())
            act, q1[t % ahead] = _without(act, q1[t % ahead], sure)
            if not act:
                continue
        tries = {} if choice is None else choice.tries(coders, led, act, t)
        _push_led(block_coder, [coders[j] for j in act], np.stack([blocks[j][t] for j in act]),
                  np.stack([valid[j][t] for j in act]), None if led is None else [led[j] for j in act],
                  q1=q1[t % ahead], maps=None if maps is None else maps[act],
                  border=block_coder.borders([(blocks[j], valid[j], per_row[j], [t]) for j in act]),
                  particles=[importance.particles_at(particles, start[j], t) for j in act])
        if choice is not None:
            choice.keep(coders, tries, led, t)
        if block_bits is not None:
            for j in act:
                block_bits[j].append(coders[j].num_bits())
    if starts is not None:
        starts.extend(start)
    if parts is not None:
        parts.extend(parted if split is not None else [0] * len(images))
    if leads is not None:
        leads.extend([0] * len(images) if led is None else [g.count for g in led])
    if directs is not None:
        directs.extend(choice.went if choice is not None else [np.zeros(len(b), dtype=bool) for b in blocks])
    return coders


def _without(act: list[int], q1_step: tuple, gone: set[int]) -> tuple[list[int], tuple]:
    """The images of a step's batch but those gone (coded already), and their rows of q(z1|x)."""
    keep = [r for r, j in enumerate(act) if j not in gone]
    rows = torch.tensor(keep, dtype=torch.int64)
    return [act[r] for r in keep], tuple(v[rows] for v in q1_step)


def _sure(choice: direct.Choice | None, coders: list[AnsCoder], js: list[int], t: int) -> set[int]:
    """The images of js whose block t goes direct without a try (direct.Choice.sure), pushed so."""
    sure = set() if choice is None else {j for j in js if choice.sure(j, t)}
    for j in sure:
        choice.push(coders[j], j, t)
    return sure


def decode_images(block_coder: BlockCoder, coders: Sequence[AnsCoder], shapes: Sequence[tuple[int, int, int]],
                  adaptations: Sequence[adapt.Adaptation] | None = None,
                  first_grids: Sequence[int] | None = None, particles: Sequence[int] | None = None,
                  starts: Sequence[Sequence[int]] | None = None, parts: Sequence[int] | None = None,
                  leads: Sequence[int] | None = None, directs: Sequence[np.ndarray | None] | None = None
                  ) -> list[np.ndarray]:
    """Inverse of encode_images: blocks come off each stack last-first; returns (H, W, C) uint8 arrays.
    particles, starts, parts, leads: per image, as encode_images used and gave them (None: one sample
    throughout; no block in parts; the first part or block alone on its grid, as containers 10-19).
    directs: per image, which blocks are coded directly ((n,) bool, or None: none, as before container v21)."""
    maps = adapt.coding_maps(adaptations, block_coder.cfg, len(block_coder.steps))
    from bitswap_core.blocks import from_blocks

    side = block_coder.side
    counts = [grid(h, w, side)[0] * grid(h, w, side)[1] for h, w, _ in shapes]
    valid = [valid_sizes(h, w, side) for h, w, _ in shapes]
    per_row = [grid(h, w, side)[1] for h, w, _ in shapes]
    out = [np.zeros((n, c, side, side), dtype=np.uint8) for n, (_, _, c) in zip(counts, shapes)]
    split: dict[int, tuple] = {}  # per image in its parts, split_blocks of what is decoded, filled as it goes
    if leads is None:
        leads = [0 if first_grids is None or not g else 1 for g in (first_grids or [0] * len(coders))]
    # per image with direct blocks, the context model, fed every block as it is decoded
    readers = {j: direct.Reader(*shapes[j], side) for j, d in enumerate(directs or []) if d is not None}
    # per image, each block's index among the latent model's blocks (the lead counts those only)
    ranks = [np.arange(n) if j not in readers else np.arange(n) - np.cumsum(directs[j]) + directs[j]
             for j, n in enumerate(counts)]
    for t in range(max(counts, default=0)):
        act = [j for j in range(len(coders)) if t < counts[j]]
        for j in [j for j in act if j in readers and directs[j][counts[j] - 1 - t]]:
            out[j][counts[j] - 1 - t] = readers[j].decode(coders[j], counts[j] - 1 - t)
            act.remove(j)
        fed = [j for j in act if j in readers]
        if parts is not None:  # blocks coded in 32x32 parts (split_blocks)
            mine = [j for j in act if counts[j] - 1 - t < parts[j]]
            for j in mine:
                k = counts[j] - 1 - t
                if j not in split:  # its later blocks are decoded whole: cut the image into parts once
                    split[j] = split_blocks(from_blocks(out[j], *shapes[j][:2]), side)
                out[j][k] = _pop_parts(block_coder.at_side(BLOCK), coders[j], split[j], k, valid[j][k], side,
                                       None if maps is None else maps[[j]],
                                       None if first_grids is None else first_grids[j], leads[j],
                                       directs[j] if j in readers else None)
            act = [j for j in act if j not in mine]
        if act:
            _pop_whole(block_coder, coders, out, act, counts, t, valid, per_row, maps, first_grids, leads, parts,
                       particles, starts, ranks)
        for j in fed:
            readers[j].feed(out[j][counts[j] - 1 - t], counts[j] - 1 - t)
    for c in coders:
        c.check_finished()
    return [from_blocks(b, h, w) for b, (h, w, _) in zip(out, shapes)]


def _pop_whole(block_coder, coders, out, act, counts, t, valid, per_row, maps, first_grids, leads, parts, particles,
               starts, ranks) -> None:
    """decode_images' step t for the images in act whose block is coded whole by the latent model (ranks: per
    image, each block's index among those)."""
    idx = [counts[j] - 1 - t for j in act]
    # the blocks after these (to the right, below) are decoded already: the border reads them
    border = block_coder.borders([(out[j], valid[j], per_row[j], [k]) for j, k in zip(act, idx)])
    x = block_coder.pop_blocks([coders[j] for j in act], np.stack([valid[j][k] for j, k in zip(act, idx)]),
                               maps=None if maps is None else maps[act], border=border,
                               grids=None if first_grids is None else
                               [first_grids[j] if ranks[j][k] < leads[j] and not (parts and parts[j]) else 0
                                for j, k in zip(act, idx)],
                               particles=None if particles is None else
                               [importance.particles_at(particles[j], starts[j], k) for j, k in zip(act, idx)])
    for row, (j, k) in enumerate(zip(act, idx)):
        out[j][k] = x[row]


def split_blocks(image: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, int, list[list[int]]]:
    """An image's 32x32 blocks, their valid sizes, blocks per row and, per block of side `side` (raster
    order), the indices of the 32x32 blocks inside it (raster order): its parts.

    Why: bits-back pops a block's latents off the stack before it pushes the block, so a block needs that
    many bits under it, and a block of side s has (s / 32)**2 times the latents of a 32x32 one. The first
    block has nothing under it at all (coding/first_block.py). So an image's first large blocks are coded
    in 32x32 parts, the first of them with the first block's coarse grid, until its stack holds enough for a
    whole one (importance.stack_needed). The decoder decodes the parts of a block right to left and bottom
    to top, after every later block, so each part's border (the first row and column of the parts or
    blocks below and to its right) is decoded before it is."""
    h, w = image.shape[:2]
    return to_blocks(image, BLOCK), valid_sizes(h, w, BLOCK), grid(h, w, BLOCK)[1], part_lists(h, w, side)


def part_lists(h: int, w: int, side: int) -> list[list[int]]:
    """Per block of side `side` of an h x w image (raster order), the indices of the 32x32 blocks inside it."""
    rows, cols = grid(h, w, BLOCK)
    f, per_row = side // BLOCK, grid(h, w, side)[1]
    return [[(br * f + r) * cols + bc * f + c for r in range(f) for c in range(f)
             if br * f + r < rows and bc * f + c < cols]
            for br, bc in (divmod(t, per_row) for t in range(grid(h, w, side)[0] * per_row))]


def lead_limit(h: int, w: int, side: int, parted: int) -> int:
    """The most 32x32 parts or blocks an h x w image may code on its first block's grid (container v20):
    those of its first `parted` blocks, coded in parts, or every block of a 32x32-block image."""
    if side == BLOCK:
        return grid(h, w, BLOCK)[0] * grid(h, w, BLOCK)[1]
    return sum(len(p) for p in part_lists(h, w, side)[:parted])


def _push_parts(fc: BlockCoder, coders: list[AnsCoder], split: list, t: int, maps, lead: list | None) -> None:
    """Push block t of each image (split: its split_blocks) as its 32x32 parts, batched across images; lead:
    per image its first_block.Lead, which says which parts go on its grid (None: none)."""
    for k in range(max((len(s[3][t]) for s in split), default=0)):
        act = [j for j in range(len(coders)) if k < len(split[j][3][t])]
        part = [(*split[j][:3], [split[j][3][t][k]]) for j in act]
        _push_led(fc, [coders[j] for j in act], np.stack([b[i[0]] for b, _, _, i in part]),
                  np.stack([v[i[0]] for _, v, _, i in part]), None if lead is None else [lead[j] for j in act],
                  maps=None if maps is None else maps[act], border=fc.borders(part))


def _push_led(fc: BlockCoder, coders: list[AnsCoder], blocks: np.ndarray, valid: np.ndarray, lead: list | None,
              q1=None, maps=None, border=None, particles: list[int] | None = None) -> None:
    """Push one block (or 32x32 part) of each image, batched: an image's first on its grid, and where its
    first_block.Lead is trying, the block both on the grid and by bits-back on copies of its coder, keeping
    the smaller (the first bits-back win closes the lead); the rest by bits-back (or particles)."""
    n = len(coders)
    grids = None if lead is None else [g.grid if g.first() else 0 for g in lead]
    trial = [] if lead is None else [i for i in range(n) if lead[i].trying()]
    tried = set(trial)
    plain = np.array([i for i in range(n) if i not in tried], dtype=np.int64)
    if len(plain):
        rows = (q1, maps, border) if len(plain) == n else _rows((q1, maps, border), plain)
        fc.push_blocks([coders[i] for i in plain], blocks[plain], valid[plain], *rows,
                       grids=None if grids is None else [grids[i] for i in plain],
                       particles=None if particles is None else [particles[i] for i in plain])
        for i in plain if lead is not None else ():
            lead[i].record(bool(grids[i]))
    if trial:
        idx = np.array(trial, dtype=np.int64)
        rows = _rows((q1, maps, border), idx)
        on, off = [coders[i].copy() for i in trial], [coders[i].copy() for i in trial]
        fc.push_blocks(on, blocks[idx], valid[idx], *rows, grids=[lead[i].grid for i in trial])
        fc.push_blocks(off, blocks[idx], valid[idx], *rows, grids=None,
                       particles=None if particles is None else [particles[i] for i in trial])
        for i, a, b in zip(trial, on, off):
            keep = a.num_bits() < b.num_bits()
            coders[i].become(a if keep else b)
            lead[i].record(keep)


def _pop_parts(fc: BlockCoder, coder: AnsCoder, split: tuple, t: int, valid_t, side: int, maps,
               grid_k: int | None, lead: int, directs: np.ndarray | None = None) -> np.ndarray:
    """The decoder's half of _push_parts for one image: pops block t's parts into split (its split_blocks,
    every later block decoded) and returns block t (valid_t: its valid size), padded as to_blocks pads it;
    the image's first `lead` parts in coding order are on grid grid_k (directs: the blocks coded directly,
    whose parts are not coded, or None)."""
    blocks, valid, per_row, inside = split
    out = np.zeros((blocks.shape[1], side, side), dtype=blocks.dtype)
    top, left = divmod(inside[t][0], per_row)
    # parts coded before this block's
    before = sum(len(p) for u, p in enumerate(inside[:t]) if directs is None or not directs[u])
    for k in range(len(inside[t]) - 1, -1, -1):
        i = inside[t][k]
        x = fc.pop_blocks([coder], valid[i : i + 1], maps=maps, border=fc.borders([(blocks, valid, per_row, [i])]),
                          grids=None if grid_k is None or before + k >= lead else [grid_k])
        blocks[i] = x[0]
        r, c = divmod(i, per_row)
        out[:, (r - top) * BLOCK : (r - top + 1) * BLOCK, (c - left) * BLOCK : (c - left + 1) * BLOCK] = x[0]
    return pad_block(out, *valid_t)


def elbo_bits(block_coder: BlockCoder, images: Sequence[np.ndarray], seed: int = 0,
              adaptations: Sequence[adapt.Adaptation] | None = None) -> list[float]:
    """The exact model's negative ELBO in bits per image (one latent sample per block), without ANS.

    Same networks and tables as the codec, so compressed size minus this is the coding overhead
    (initial bits, ANS state, rounding). Latents are sampled by popping from a coder on random bits.
    adaptations: per image, the adaptation the codec would use (coding/adapt.py), or None.
    """
    maps = adapt.coding_maps(adaptations, block_coder.cfg, len(block_coder.steps))
    cfg = block_coder.cfg
    rng = np.random.default_rng(seed)
    totals = []
    for j_im, im in enumerate(images):
        side = block_coder.side
        blocks, valid = to_blocks(im, side), valid_sizes(im.shape[0], im.shape[1], side)
        per_row = grid(im.shape[0], im.shape[1], side)[1]
        bits = 0.0
        step = max(1, 64 // (side // BLOCK) ** 2)
        for s in range(0, len(blocks), step):
            xb, vb = blocks[s : s + step], valid[s : s + step]
            n = len(xb)
            sampler = random_coder(rng, 4 * cfg.nz * block_coder.z_dims * n)
            mb = None if maps is None else maps[j_im : j_im + 1].repeat(n)
            border = block_coder.borders([(blocks, valid, per_row, np.arange(s, s + n))])
            bits += block_coder.sample_elbo_bits(torch.from_numpy(xb.astype(np.int64)), vb, [sampler] * n, mb,
                                                 border).sum()
        totals.append(bits)
    return totals
