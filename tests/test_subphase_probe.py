"""bench/subphase_probe.py: the sub-phase heads it trains see only what the decoder would have."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bitswap_core.model import phases
from bitswap_core.model.config import PRESETS
from bitswap_core.model.float_model import BitSwapModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from subphase_probe import SubphaseProbe  # noqa: E402


def test_each_sub_phase_head_sees_only_the_sub_phases_coded_before_it():
    """Changing phase (0,0)'s pixels of sub-phase s and later leaves sub-phase s's parameters as they were
    (a head that saw them would measure a gain no decoder could have), and only sub-phases 1-3 change."""
    torch.manual_seed(0)
    probe = SubphaseProbe(BitSwapModel(PRESETS["tiny-deep"]))
    with torch.no_grad():
        for h in probe.heads:  # away from the start, so that the context matters
            h.ctx_in.g.fill_(1.0)
    x = torch.randint(0, 256, (2, 3, 32, 32)).float()
    frozen = probe.frozen(x)
    base = probe.params(x, frozen)
    rows = probe.rows
    as_is = frozen[1][:, rows]
    assert torch.equal(phases.view(base[:, rows], 4, 0), phases.view(as_is, 4, 0))
    for s in (1, 2, 3):
        y = x.clone()
        phase0 = phases.view(y, 4, 0)  # (B, C, 16, 16): phase (0,0)'s pixels
        for later in range(s, 4):
            phases.view(phase0, 4, later)[:] = torch.randint(0, 256, phases.view(phase0, 4, later).shape).float()
        moved = probe.params(y, frozen)
        assert torch.equal(phases.view(moved[:, rows], 4, s), phases.view(base[:, rows], 4, s)), s
        earlier = x.clone()
        phases.view(phases.view(earlier, 4, 0), 4, s - 1)[:] = 0.0
        assert not torch.equal(phases.view(probe.params(earlier, frozen)[:, rows], 4, s),
                               phases.view(base[:, rows], 4, s)), s
