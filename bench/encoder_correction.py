"""Does a per-image correction of the encoder pay in the coded path, on top of the per-image adaptation?

bench/image_q.py found that one affine correction of q(z1|x) per latent channel, fitted on some of an
image's blocks, makes its other blocks 0-6.6% cheaper under the float model as is. The codec could carry
it exactly: a few integers per image, applied by encoder and decoder alike to the network's q levels,

    mean' = clamp(mean + floor((A (mean - centre) + 64) / 128) + B)      scale' = clamp(scale + C)

per latent channel (mean in 1/mean_frac bin, centre the level of 0; (A, B, C) the rounded float fit).
This measures, with the exact model and elbo_bits (the same latent draws in every column), per image:
the model as is, as is with the correction, with the codec's adaptation (adapt.choose), and with the
adaptation fitted again on the corrected latents plus the correction (4 bytes per latent channel more in
the header). The correction is applied where the coder takes q(z1|x) (BlockCoder.q1), so every fit of
the adaptation sees it too. --calibrate also fits a per-(phase, channel) pixel log-scale shift alongside,
a float stand-in for the adaptation's scale shifts, and keeps only the encoder part.

    .venv/bin/python bench/encoder_correction.py ../shared/datasets/val/*.png --calibrate
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import BlockCoder, elbo_bits  # noqa: E402
from bitswap_core.model import phases  # noqa: E402
from bitswap_core.model.export import import_tensors  # noqa: E402
from bitswap_core.model.float_model import BitSwapModel  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

A_ONE = 128  # A / A_ONE is the mean's relative change


def apply(mean: torch.Tensor, scale: torch.Tensor, corr: np.ndarray, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z1|x) levels (B, zc, 16, 16) with one image's correction (zc, 3) applied to every block."""
    a, b, c = (torch.from_numpy(corr[:, k]).reshape(1, -1, 1, 1) for k in range(3))
    centre = (cfg.z_bins - 1) * cfg.mean_frac // 2
    moved = mean + torch.div(a * (mean - centre) + A_ONE // 2, A_ONE, rounding_mode="floor") + b
    return torch.clamp(moved, 0, (cfg.z_bins - 1) * cfg.mean_frac), torch.clamp(scale + c, 0, cfg.z_scales - 1)


@contextmanager
def corrected(corr: np.ndarray | None):
    """Inside, the coder's q(z1|x) carries the correction (one image at a time)."""
    plain = BlockCoder.q1
    if corr is not None:
        BlockCoder.q1 = lambda self, x, q1=None: apply(*plain(self, x, q1), corr, self.cfg)
    try:
        yield
    finally:
        BlockCoder.q1 = plain


def fit(twin: BitSwapModel, x: torch.Tensor, known: torch.Tensor, steps: int, lr: float, calibrate: bool
        ) -> np.ndarray:
    """The rounded (zc, 3) correction (A, B, C) down the float -ELBO of bordered blocks x (Adam, one latent
    draw per block and step from a fixed seed); with calibrate, a pixel log-scale shift per (phase,
    channel) is fitted alongside and left out."""
    cfg = twin.cfg
    with torch.no_grad():
        mu0, s0 = twin.latent_params(twin.q_nets[0](F.pixel_unshuffle(x[..., : cfg.block, : cfg.block] - 128.0, 2)))
    a, b, c = (torch.zeros(1, mu0.shape[1], 1, 1, requires_grad=True) for _ in range(3))
    d = torch.zeros(cfg.pixel_phases, cfg.channels, requires_grad=True)
    masks = torch.zeros(cfg.pixel_phases, cfg.block, cfg.block)  # which pixels each phase codes
    for k in range(cfg.pixel_phases):
        phases.view(masks[k], cfg.pixel_phases, k)[:] = 1
    opt = torch.optim.Adam([a, b, c, d], lr=lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(steps):
            q1 = (torch.clamp(mu0 * (1 + a) + b, -cfg.z_range, cfg.z_range),
                  torch.clamp(s0 * c.exp(), cfg.z_scale_min, cfg.z_scale_max))
            shift = torch.einsum("pc,phw->chw", d, masks) if calibrate else None
            loss = twin(x, known=known, q1=q1, log_scale_shift=shift)["bpd"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    _, z_step = cfg.z_log_scale_grid()
    return np.stack([np.rint(a.detach().numpy().reshape(-1) * A_ONE),
                     np.rint(b.detach().numpy().reshape(-1) * cfg.mean_frac / cfg.z_delta),
                     np.rint(c.detach().numpy().reshape(-1) / z_step)], 1).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--calibrate", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resolve(args.model)
    bc = model.block_coder("bitswap")
    twin = BitSwapModel(model.cfg)
    import_tensors(twin, model.tensors)
    twin.eval().requires_grad_(False)
    cols = ["as is", "as is + corr", "adapted", "adapted again + corr"]
    totals, dims = np.zeros(len(cols)), 0
    print(f"model {model.id}, {args.steps} steps at lr {args.lr}, calibrate {args.calibrate}; -ELBO + headers, bpd")
    print(f"{'image':<24} " + " ".join(f"{c:>20}" for c in cols))
    for path in args.images:
        im = np.asarray(Image.open(path).convert("RGB"))
        total, picked, valid, parts = next(adapt._sample([im], None))  # the adaptation's own sample
        full = torch.from_numpy((valid[:, 0] == 32) & (valid[:, 1] == 32))
        xb, kb = bc.borders([parts])
        corr = fit(twin, xb[full].float(), kb[full].float(), args.steps, args.lr, args.calibrate)
        extra = 8 * (1 + 4 * len(corr))  # u8 count, then int8 A, int16 B, int8 C per channel
        plain = adapt.choose(bc, [im], None)
        with corrected(corr):
            again = adapt.choose(bc, [im], None)
            row = [elbo_bits(bc, [im])[0] + extra, elbo_bits(bc, [im], adaptations=again)[0] + extra]
        row = [elbo_bits(bc, [im])[0], row[0], elbo_bits(bc, [im], adaptations=plain)[0], row[1]]
        row[2:] = [row[2] + 8 * len(adapt.to_bytes(plain[0])), row[3] + 8 * len(adapt.to_bytes(again[0]))]
        totals += row
        dims += im.size
        print(f"{path.name:<24} " + " ".join(f"{b / im.size:20.4f}" for b in row)
              + f"   A {corr[:, 0].tolist()} B {corr[:, 1].tolist()} C {corr[:, 2].tolist()}", flush=True)
    t = totals / dims
    print(f"{'total':<24} " + " ".join(f"{b:20.4f}" for b in t)
          + f"   correction: as is {100 * (t[1] / t[0] - 1):+.2f}%, adapted {100 * (t[3] / t[2] - 1):+.2f}%")


if __name__ == "__main__":
    main()
