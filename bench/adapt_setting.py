"""An adaptation setting of the benchmarks: "16" = 16 sampled blocks with everything the encoder fits
(scale shifts, both spikes, the blend of every step with decoded neighbours, the colour blend), "16k" = all
but the colour blend (container v8's adaptation; every letter below leaves it out too), "16b" = the blend of phase
(0,0)'s sub-phases only (container v6's), "16n" = no blend, "16o" = no blend and one spike only, "16s" =
scale shifts only, "0" = the model as is, "all" = every block; a trailing "u" (after any other letter:
"16u", "0u") codes without the next blocks' border, as container v7 did (bench/adaptation.py and
bench/codec_speed.py measure such settings side by side)."""

from __future__ import annotations

import functools
from contextlib import contextmanager

from bitswap_core import api, container
from bitswap_core.coding import adapt
from bitswap_core.registry import Model

_CHOOSE = adapt.choose
_PARTS = {"s": (0, 0, 0), "o": (1, 0, 0), "n": (2, 0, 0), "b": (2, 1, 0), "k": (2, 2, 0)}


def parse(setting: str) -> tuple[int, int, int, int]:
    """(adapt_blocks, spikes, blend, colour) of a setting (adapt.choose's spikes, blend and colour)."""
    setting = setting.removesuffix("u")
    blocks = setting.rstrip("sonbk")
    return (10**9 if blocks == "all" else int(blocks), *_PARTS.get(setting[-1], (2, 2, 1)))


def bordered(setting: str) -> bool:
    """Whether the setting codes with the next blocks' border (container v8), not as v7 did."""
    return not setting.endswith("u")


@contextmanager
def parts_of(setting: str):
    """api.compress* fit only the setting's parts of the adaptation while inside (adapt.choose's spikes,
    blend and colour), write container v8 without the colour blend and v7 without the border (which
    api.decompress decodes as those versions)."""
    _, spikes, blend, colour = parse(setting)
    plain, version = Model.block_coder, container.VERSION
    if not bordered(setting):
        Model.block_coder = functools.partialmethod(plain, border=False)
        container.VERSION, colour = 7, 0
    elif not colour:
        container.VERSION = 8
    api.adapt.choose = lambda bc, arrays, n: _CHOOSE(bc, arrays, n, spikes=spikes, blend=blend, colour=colour)
    try:
        yield
    finally:
        api.adapt.choose = _CHOOSE
        Model.block_coder = plain
        container.VERSION = version
