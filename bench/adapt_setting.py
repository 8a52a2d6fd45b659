"""An adaptation setting of the benchmarks: "16" = 16 sampled blocks with everything the encoder fits
(value masks or the palette, scale shifts, both spikes, the blend of every step with decoded neighbours, the
colour blend, the residual feedback, the surprise context, the latent shift) and the first block on a coarse
grid (container v21, phase (0,0) split twice in images of 256x256 or more, api.phase_split_for, the adaptation
header deflated, the first parts on the first block's grid while the stack is shallow, the blocks the context
model codes smaller coded directly), "16t" = all of that but the latent shift (v21, adapt.fit_latent's
three network passes left out), "~x" = the encoder's fast effort (api effort=1: half its sample, no latent
shift), "16e" = the same without direct blocks (v20), "16j" = and with the first
part alone on the grid (v19), "16h" = and the header not deflated (v18), "16d" = the same with
every image split twice, "16g" = the same with phase (0,0) split as v17 did (four sub-phases), "16f" = all
but that and the residual feedback (v16), "16q" = all but that and the surprise context (v15), "16r" = the
same in 32x32 blocks (v14's), "16p" = all but that and the palette (v12), "16v" = all but
those and the value masks (v11), "16l" = all but those and the latent shift (v10), "16c" = all but the
latent shift and the coarse first block (v9; every letter below leaves both out too), "16k" = all but the
colour blend (container v8's adaptation; every letter below leaves it out too), "16b" = the blend of phase
(0,0)'s sub-phases only (container v6's), "16n" = no blend, "16o" = no blend and one spike only, "16s" =
scale shifts only, "0" = the model as is, "all" = every block, "~" = the encoder's own sample size
(adapt.sample_size: 16 to 64 blocks by the image's size), which takes the same letters ("~p"); a trailing
"u" (after any other letter: "16u", "0u") codes without the next blocks' border, as container v7 did
(bench/adaptation.py and bench/codec_speed.py measure such settings side by side)."""

from __future__ import annotations

import functools
from contextlib import contextmanager

from bitswap_core import api, container
from bitswap_core.coding import adapt
from bitswap_core.registry import Model

_CHOOSE = adapt.choose
_PARTS = {"s": (0, 0, 0, 0, 0, 0, 0, 0), "o": (1, 0, 0, 0, 0, 0, 0, 0), "n": (2, 0, 0, 0, 0, 0, 0, 0),
          "b": (2, 1, 0, 0, 0, 0, 0, 0), "k": (2, 2, 0, 0, 0, 0, 0, 0), "c": (2, 2, 1, 0, 0, 0, 0, 0),
          "l": (2, 2, 1, 0, 0, 0, 0, 0), "v": (2, 2, 1, 1, 0, 0, 0, 0), "p": (2, 2, 1, 1, 1, 0, 0, 0),
          "q": (2, 2, 1, 1, 1, 1, 0, 0), "r": (2, 2, 1, 1, 1, 1, 0, 0), "f": (2, 2, 1, 1, 1, 1, 1, 0),
          "g": (2, 2, 1, 1, 1, 1, 1, 1), "d": (2, 2, 1, 1, 1, 1, 1, 1), "h": (2, 2, 1, 1, 1, 1, 1, 1),
          "j": (2, 2, 1, 1, 1, 1, 1, 1), "e": (2, 2, 1, 1, 1, 1, 1, 1), "t": (2, 2, 1, 0, 1, 1, 1, 1),
          "x": (2, 2, 1, 1, 1, 1, 1, 1)}
# the container version a letter writes (those of "k" and below: 8)
_VERSIONS = {"c": 9, "l": 10, "v": 11, "p": 12, "r": 14, "q": 15, "f": 16, "g": 17, "h": 18, "j": 19, "e": 20}


def parse(setting: str) -> tuple[int | None, int, int, int, int, int, int, int, int]:
    """(adapt_blocks, spikes, blend, colour, latent, values, paletted, shock, residuals) of a setting
    (adapt.choose's spikes, blend, colour, latent, values, paletted, shock and residuals)."""
    setting = setting.removesuffix("u")
    blocks = setting.rstrip("sonbkclvprqfgdhjetx")
    count = 10**9 if blocks == "all" else None if blocks == "~" else int(blocks)
    return (count, *_PARTS.get(setting[-1], (2, 2, 1, 1, 1, 1, 1, 1)))


def version(setting: str) -> int:
    """The container version a setting writes."""
    if not bordered(setting):
        return 7
    parts = parse(setting)
    if setting[-1] in _VERSIONS and parts[8]:
        return _VERSIONS[setting[-1]]
    return container.VERSION if parts[8] else _VERSIONS.get(setting[-1], 8 if not parts[3] else 10)


def bordered(setting: str) -> bool:
    """Whether the setting codes with the next blocks' border (container v8), not as v7 did."""
    return not setting.endswith("u")


@contextmanager
def parts_of(setting: str):
    """api.compress* fit only the setting's parts of the adaptation while inside (adapt.choose's spikes,
    blend, colour, latent, values, paletted, shock and residuals) and write the container version that holds
    them: v16 without the residual feedback, v15 without it and the surprise context, v12 without those and
    the palette, v11 without the value masks too, v10 without the latent shift too, v9 without the coarse first
    block too, v8 without the colour blend, v7 without the border (which api.decompress decodes as those
    versions)."""
    _, spikes, blend, colour, latent, values, paletted, shock, residuals = parse(setting)
    plain, current, split_for = Model.block_coder, container.VERSION, api.phase_split_for
    if not bordered(setting):
        Model.block_coder = functools.partialmethod(plain, border=False)
        colour = latent = values = paletted = shock = residuals = 0
    container.VERSION = version(setting)
    if setting.endswith("d"):
        api.phase_split_for = lambda width, height: 2
    fast = {"effort": 1} if setting.endswith("x") else {}
    api.adapt.choose = lambda bc, arrays, n, **kw: _CHOOSE(bc, arrays, n, spikes=spikes, blend=blend, colour=colour,
                                                           latent=latent, values=values, paletted=paletted,
                                                           shock=shock, residuals=residuals, **(kw | fast))
    try:
        yield
    finally:
        api.adapt.choose = _CHOOSE
        Model.block_coder = plain
        container.VERSION = current
        api.phase_split_for = split_for
