"""An adaptation setting of the benchmarks: "16" = 16 sampled blocks with both spikes, "16o" = one spike
only, "16s" = scale shifts only, "0" = the model as is, "all" = every block (bench/adaptation.py and
bench/codec_speed.py measure such settings side by side)."""

from __future__ import annotations

from contextlib import contextmanager

from bitswap_core import api
from bitswap_core.coding import adapt

_CHOOSE = adapt.choose


def parse(setting: str) -> tuple[int, int]:
    """(adapt_blocks, spikes) of a setting."""
    blocks = setting.rstrip("so")
    return 10**9 if blocks == "all" else int(blocks), {"s": 0, "o": 1}.get(setting[-1], 2)


@contextmanager
def spikes_at_most(spikes: int):
    """api.compress* fit at most this many spikes per pixel while inside (adapt.choose's spikes)."""
    api.adapt.choose = lambda bc, arrays, n: _CHOOSE(bc, arrays, n, spikes=spikes)
    try:
        yield
    finally:
        api.adapt.choose = _CHOOSE
