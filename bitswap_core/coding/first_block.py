"""An image's first block: latents sent on a coarse grid, since there are no bits to get back yet.

Bits-back coding pays for a block's latents only net of the bits it pops to choose them; those pops read
what the blocks coded before left on the stack. The first block has nothing under it, so its pops read the
stack's deterministic bed and it pays the latents in full: 7-10 bits per dimension on the validation images
where a later block pays 3-6 (docs/BENCHMARKS.md), about a kilobyte per image, 2% of a 256x256 image and
most of a 32x32 one.

From container version 10 on the encoder may instead send the first block's latents without bits-back:
the layers above z1 sit at their prior's mode (nothing to send), and z1 at the cell of k latent bins that
holds its posterior mean, coded as that cell's mass under p(z1 | z2) (AnsCoder.push_cells). The cell
costs about log2(k) bits less than a bin, and the networks, trained on noisy posterior samples, hardly
mind the coarser z1. k is picked per image from GRIDS on its own first block; 0 keeps the bits-back first
block (older containers, and naive BB-ANS by default, which stays the paper's baseline).

The lead (container version 20 on): one block on the grid leaves the stack shallower than the next
bits-back pop (a 32x32 block's posterior sample costs up to ~6 bits a latent, 25 kbit; the block on the grid
pushes 4-21 kbit), so that pop read the rest from the stack's bed, stored as initial bits: 12 KB over the
validation set, 2% of usc-4.1.07 and of serrano. From v20 on the encoder codes each next 32x32 part (or
block) both ways on copies of its coder, on the grid and by bits-back, and keeps the smaller, until
bits-back wins once (Lead); the header records how many went on the grid (a u8 after the grid byte). A
part on the grid costs its cells and slightly dearer pixels, 1-2 kbit over its -ELBO; which wins depends
on the image's posterior and pixel costs, so a fixed depth rule (a probe: 4 bits a latent) left 1% on 64x64
crops that the tries take. Versions 10-19 code the first part alone on the grid (lead 1). Measured:
docs/BENCHMARKS.md, "The lead".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bitswap_core.blocks import grid, to_blocks, valid_sizes
from bitswap_core.coding.rans import cell_cost_bits, cell_index, cell_value, cost_bits

GRIDS = (16, 24, 32, 40, 48, 64)  # cell widths in latent bins the encoder tries (z_bins 512: 0.5-2 units)
MAX_GRID = 255  # a header byte; the decoder also needs at least two cells (k <= z_bins / 2)
MAX_LEAD = 255  # a header byte: parts on the grid at most


class Lead:
    """The encoder's side of the lead (container v20): an image's 32x32 parts or blocks, in coding order, go
    on its grid while that codes them smaller than bits-back does (bitsback's _push_led tries both), the
    first always (when the grid is on), at most MAX_LEAD, then none; count is what the header records.
    Direct blocks (coding/direct.py, container v21) are not the lead's: after one, nothing forces the
    next part onto the grid (the stack holds the direct block's bits), so it too is tried both ways."""

    def __init__(self, grid: int, tries: bool = True) -> None:
        self.grid, self.count, self.open, self.tries, self.forced = grid, 0, grid > 0, tries, True

    def first(self) -> bool:
        """Whether the next part is the first, on the grid without a try."""
        return self.open and self.count == 0 and self.forced

    def trying(self) -> bool:
        """Whether the next part is coded both ways and the smaller kept."""
        return self.open and self.tries and (0 < self.count or not self.forced) and self.count < MAX_LEAD

    def state(self) -> tuple[int, bool]:
        return self.count, self.open

    def restore(self, state: tuple[int, bool]) -> None:
        """Undo what record did since state(), for a block that went direct instead (coding/direct.py):
        the next part is no longer forced onto the grid."""
        self.count, self.open = state
        self.forced = False

    def record(self, on_grid: bool) -> None:
        """The next part went on the grid or not; once not, no later part does."""
        self.count += on_grid
        self.open = on_grid

    def close(self) -> None:
        """No later part goes on the grid."""
        self.open = False


def mode_bins(mean_level: torch.Tensor, mean_frac: int, bins: int) -> torch.Tensor:
    """The bin holding each distribution's mean (levels in 1/mean_frac bins): its most likely bin."""
    return torch.clamp(torch.div(mean_level + mean_frac // 2, mean_frac, rounding_mode="floor"), 0, bins - 1)


def prior_above(block_coder, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distribution z1 is coded with in a first block: p(z1 | z2) with z2 (and any layer above it) at its
    prior's mode, or the top prior for a one-layer model."""
    cfg, m = block_coder.cfg, block_coder.net
    dist = block_coder.top_prior(n)
    for i in range(cfg.nz - 2, -1, -1):
        dist = m.p_latent(i, mode_bins(dist[0], cfg.mean_frac, cfg.z_bins))
    return dist


def latent_cells(block_coder, q1_mean: torch.Tensor, grids: Sequence[int]) -> tuple[list[np.ndarray], torch.Tensor]:
    """(per block, the cells of its z1's posterior means at its grid; z1, the cells' values as latent bins)."""
    cfg = block_coder.cfg
    bins = mode_bins(q1_mean, cfg.mean_frac, cfg.z_bins).reshape(len(grids), -1).cpu().numpy()
    cells = [cell_index(b, cfg.z_bins, int(k)) for b, k in zip(bins, grids)]
    z1 = np.stack([cell_value(c, cfg.z_bins, int(k)) for c, k in zip(cells, grids)])
    return cells, torch.from_numpy(z1.reshape(q1_mean.shape))


def check_grid(k: int, z_bins: int) -> None:
    if not (k == 0 or 1 <= k <= min(MAX_GRID, z_bins // 2)):
        raise ValueError(f"first-block grid {k} is neither 0 nor in 1..{min(MAX_GRID, z_bins // 2)}")


def choose(block_coder, images: Sequence[np.ndarray], adaptations=None, grids: Sequence[int] = GRIDS) -> list[int]:
    """Per image, the grid from `grids` that codes its first block smallest (ideal code lengths of the cells
    and of the pixels given their values, with the image's adaptation)."""
    from bitswap_core.coding import adapt

    if not images:
        return []
    cfg = block_coder.cfg
    n = len(images)
    side = block_coder.side
    parts = [(to_blocks(im, side), valid_sizes(*im.shape[:2], side), grid(*im.shape[:2], side)[1], [0])
             for im in images]
    x = torch.from_numpy(np.stack([blocks[0] for blocks, _, _, _ in parts]).astype(np.int64))
    valid = np.stack([v[0] for _, v, _, _ in parts])
    maps = adapt.coding_maps(adaptations, cfg, len(block_coder.steps))
    border = block_coder.borders(parts)
    q_mean = block_coder.q1(x)[0]
    rows, bases = block_coder._latent_codes(*prior_above(block_coder, n), adapt.latent_shift(maps))
    costs = np.zeros((len(grids), n))
    for g, k in enumerate(grids):
        cells, z1 = latent_cells(block_coder, q_mean, [k] * n)
        for i in range(n):
            costs[g, i] = cell_cost_bits(cells[i], rows[i], bases[i], block_coder.tz, k)
        for s in block_coder.pixel_symbols(x, z1, valid, maps, border):
            costs[g, s.image] += cost_bits(s.values, s.rows, s.bases, block_coder.tx, s.spikes)
    return [int(grids[g]) for g in costs.argmin(0)]
