"""An adaptation setting of the benchmarks: "16" = 16 sampled blocks with everything the encoder fits
(scale shifts, both spikes, the blend of every step with decoded neighbours), "16b" = the blend of phase
(0,0)'s sub-phases only (container v6's), "16n" = no blend, "16o" = no blend and one spike only, "16s" =
scale shifts only, "0" = the model as is, "all" = every block (bench/adaptation.py and
bench/codec_speed.py measure such settings side by side)."""

from __future__ import annotations

from contextlib import contextmanager

from bitswap_core import api
from bitswap_core.coding import adapt

_CHOOSE = adapt.choose
_PARTS = {"s": (0, 0), "o": (1, 0), "n": (2, 0), "b": (2, 1)}


def parse(setting: str) -> tuple[int, int, int]:
    """(adapt_blocks, spikes, blend) of a setting (adapt.choose's spikes and blend)."""
    blocks = setting.rstrip("sonb")
    return (10**9 if blocks == "all" else int(blocks), *_PARTS.get(setting[-1], (2, 2)))


@contextmanager
def parts_of(setting: str):
    """api.compress* fit only the setting's parts of the adaptation while inside (adapt.choose's spikes and
    blend)."""
    _, spikes, blend = parse(setting)
    api.adapt.choose = lambda bc, arrays, n: _CHOOSE(bc, arrays, n, spikes=spikes, blend=blend)
    try:
        yield
    finally:
        api.adapt.choose = _CHOOSE
