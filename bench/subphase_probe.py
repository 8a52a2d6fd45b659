"""What would learned heads for phase (0,0)'s sub-phases pay? A float-model probe, before any codec work.

Phase (0,0)'s distributions come from z1 alone (px_net); the codec codes its 16x16 grid in four sub-phases
and lets sub-phases 1-3 lean on the decoded pixels two apart only through per-image blends and spikes
(coding/adapt.py). They cost 0.3-0.6 bits per subpixel more than phase (1,1), whose head sees its decoded
neighbours (bench/bit_breakdown.py). This probe adds one PhaseHead per sub-phase 1-3 on the frozen model
(p(x|z1)'s trunk plus the phase-0 pixels of the earlier sub-phases, the way phase heads see earlier phases),
trains the three heads alone on crops, and reports each coding step's bits per subpixel with and without
them on the same latent samples: the plain -ELBO of the model as is, no per-image adaptation, so the gain
it shows is an upper estimate of what the codec could keep (its blends already recover part of it).

    OMP_NUM_THREADS=1 .venv/bin/python bench/subphase_probe.py runs/data_wide \\
        --eval ../shared/datasets/val/usc-4.2.01.png ../shared/datasets/val/waterloo-tulips.png --minutes 40
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.model import phases  # noqa: E402
from bitswap_core.model.float_model import PhaseHead, step_onehot  # noqa: E402
from jobs.training import CropSampler, list_images, load_rgb, model_from_file, tile_blocks  # noqa: E402

DEFAULT = Path(__file__).resolve().parent.parent / "bitswap_core" / "zoo" / "default.safetensors"


class SubphaseProbe(torch.nn.Module):
    """The frozen model plus three heads that replace phase (0,0)'s rows at sub-phases 1-3."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        cfg = model.cfg
        self.rows = model.phase_rows(0)
        self.heads = torch.nn.ModuleList(PhaseHead(cfg.channels, len(self.rows), cfg) for _ in range(3))
        src = model.px_net.conv_out
        with torch.no_grad():  # each head starts as p(x|z1)'s own output for phase 0 (context adds to it)
            for h in self.heads:
                h.conv_out.v.copy_(src.v[self.rows])
                h.conv_out.g.copy_(src.g[self.rows])
                h.conv_out.bias.copy_(src.bias[self.rows])

    @torch.no_grad()
    def frozen(self, x: torch.Tensor):
        """One latent sample per block: p(x|z1)'s trunk, the pixel parameters and the phase heads' gates."""
        m = self.model
        z1 = m.z_to_input(m.sample_posterior(x)[0][0])
        t = m.px_net.trunk(z1)
        pre, gates = m.pixel_pre(z1, x, t)
        return t, pre, gates

    def params(self, x: torch.Tensor, frozen) -> torch.Tensor:
        """The pixel parameters with phase (0,0)'s rows at sub-phases 1-3 from the heads; head s sees only
        the phase-0 pixels of sub-phases 0..s-1 (the pixels the decoder has when it codes s)."""
        t, pre, _ = frozen
        c = self.model.cfg.channels
        x0 = F.pixel_unshuffle(x - 128.0, 2)[:, phases.squeezed(c, 0)]  # phase (0,0)'s grid
        known = torch.zeros_like(x0[:, :1])
        rows = pre[:, self.rows]  # a copy (list index): phase (0,0)'s parameters
        for s, head in enumerate(self.heads, start=1):
            phases.view(known, 4, s - 1)[:] = 1.0  # the sub-phases coded before s
            phases.view(rows, 4, s)[:] = phases.view(head(t, x0 * known), 4, s)
        pre = pre.clone()
        pre[:, self.rows] = rows
        return pre

    def logp(self, x: torch.Tensor, frozen, with_heads: bool = True) -> torch.Tensor:
        """log P(x | z1) per subpixel (B, C, S, S), phase 0's sub-phases 1-3 from the heads if with_heads."""
        pre = self.params(x, frozen) if with_heads else frozen[1]
        return self.model.pixel_logp(pre, x, frozen[2])


def per_step_bits(probe: SubphaseProbe, x: torch.Tensor, seed: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Bits per subpixel of each coding step, without and with the heads, on the same latent samples."""
    side = x.shape[-1]
    device = next(probe.heads.parameters()).device
    onehot = step_onehot(4, side, device)
    tot = {"as is": 0.0, "heads": 0.0}
    torch.manual_seed(seed)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i : i + batch].to(device)
            fr = probe.frozen(xb)
            for key, on in (("as is", False), ("heads", True)):
                lp = probe.logp(xb, fr, on).sum(1).flatten(1)  # (B, S*S) nats over the channels
                tot[key] = tot[key] + (-lp @ onehot).sum(0).double().cpu().numpy()
    n = len(x) * x.shape[1] * onehot.sum(0).cpu().numpy()
    return {k: v / n / np.log(2.0) for k, v in tot.items()}


def report(name: str, bits: dict[str, np.ndarray]) -> None:
    steps = phases.coding_steps(4, True)
    print(f"{name}: bits per subpixel by coding step, as is -> with sub-phase heads")
    for k, st in enumerate(steps):
        print(f"  step {str(st):8s} {bits['as is'][k]:.4f} -> {bits['heads'][k]:.4f}")
    share = step_onehot(4, 32).mean(0).numpy()
    a, h = float(bits["as is"] @ share), float(bits["heads"] @ share)
    print(f"  all pixels: {a:.4f} -> {h:.4f} bits per subpixel ({100 * (h / a - 1):+.2f}%)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="training images (folder, glob or fsspec URL)")
    ap.add_argument("--model", type=Path, default=DEFAULT)
    ap.add_argument("--eval", nargs="+", type=Path, required=True, help="images evaluated on their full tiles")
    ap.add_argument("--side", type=int, default=64, help="crop and tile side")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--context-lr-scale", type=float, default=10.0,
                    help="learning-rate multiplier for the heads' context convs and residual blocks")
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="save the heads' weights here")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    probe = SubphaseProbe(model_from_file(args.model)).to(device)
    evals = {p.name: tile_blocks([load_rgb(str(p))], side=args.side) for p in args.eval}
    for name, x in evals.items():
        report(f"{name} at the start", per_step_bits(probe, x, args.seed))
    sampler = CropSampler([load_rgb(u, max_side=None) for u in list_images(args.data)], seed=args.seed,
                          side=args.side)
    # the output convs start as p(x|z1)'s trained rows and take the base rate; the context path and the
    # residual blocks start near zero and need a larger one to grow within a probe's minutes
    fresh = [p for n, p in probe.heads.named_parameters() if not n.split(".")[1].startswith("conv_out")]
    out = [p for n, p in probe.heads.named_parameters() if n.split(".")[1].startswith("conv_out")]
    opt = torch.optim.Adam([{"params": out, "scale": 1.0}, {"params": fresh, "scale": args.context_lr_scale}],
                           lr=args.lr)
    sub = step_onehot(4, args.side, device)[:, 1:4].sum(1)  # the pixels of sub-phases 1-3
    t0, step, ema = time.time(), 0, None
    while step < args.steps and time.time() - t0 < args.minutes * 60:
        done = min(1.0, (time.time() - t0) / (args.minutes * 60))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + np.cos(np.pi * done))
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        x = sampler.batch(step, args.batch).to(device)
        lp = probe.logp(x, probe.frozen(x)).sum(1).flatten(1)
        loss = -(lp @ sub).mean() / (x.shape[1] * float(sub.sum()) * np.log(2.0))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.heads.parameters(), 10.0)
        opt.step()
        ema = float(loss.detach()) if ema is None else 0.99 * ema + 0.01 * float(loss.detach())
        step += 1
        if step % 25 == 0:
            print(f"step {step} {time.time() - t0:.0f} s, sub-phase bits per subpixel (EMA) {ema:.4f}", flush=True)
    for name, x in evals.items():
        report(f"{name} after {step} steps", per_step_bits(probe, x, args.seed))
    if args.out:
        torch.save(probe.heads.state_dict(), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
