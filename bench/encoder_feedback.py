"""Probe for the next encoder (float model only, nothing exported): does an encoder that also sees the
error of p(x | z1 = its own mean) learn the inference gap (bench/inference_gap.py) faster than the plain
one? Both start from the same model, train their inference networks alone on the same bordered crops
(no EMA, no sensor noise), and are evaluated on the same validation tiles with the same latent draws.

The feedback encoder adds to q(z1|x)'s output a network of the squeezed pixels and their error against
p(x|z1)'s means at z1 = q's mean (rounded, no gradient through it), its output conv started at zero so
both start equal. The decoder could compute the same exactly (it has x and the exact p(x|z1)) before it
pushes the latents back; that exact path is not built.

    .venv/bin/python bench/encoder_feedback.py runs/data_wide ../shared/datasets/val --steps 300 --lr 5e-5
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference_gap import amortised_q as plain  # noqa: E402

from bitswap_core.model.float_model import Net  # noqa: E402
from bitswap_core.model.quant import X_IN_SCALE  # noqa: E402
from jobs.training import CropSampler, list_images, load_rgb, model_from_file, validation_tiles  # noqa: E402


class Feedback(nn.Module):
    """q(z1|x)'s output plus a network of (x, x - mean of p(x | z1 = q's mean)); starts as the plain q."""

    def __init__(self, cfg):
        super().__init__()
        self.net = Net(2 * cfg.x_channels, X_IN_SCALE, 2 * cfg.z_channels, cfg, 0)
        with torch.no_grad():
            self.net.conv_out.g.fill_(1e-6)
            self.net.conv_out.bias.zero_()

    def forward(self, m, x: torch.Tensor):
        cfg = m.cfg
        a = F.pixel_unshuffle(x - 128.0, 2)
        pre_q = m.q_nets[0](a)
        mu, _ = m.latent_params(pre_q)
        with torch.no_grad():
            pre_px = m.px_net(m.z_to_input(mu))
            mean = m.heads["x_mean"].level(pre_px[:, : cfg.x_channels]) / cfg.mean_frac
            err = torch.clamp(torch.round(a + 128.0 - mean), -127, 127)
        return m.latent_params(pre_q + self.net(torch.cat([a, err], 1)))


def evaluate(m, q, tiles, known) -> float:
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        tot = 0.0
        for i in range(0, len(tiles), 64):
            x = tiles[i : i + 64]
            tot += float(m(x, known=known[i : i + 64], q1=q(m, x[..., :32, :32]))["bpd"]) * len(x)
    return tot / len(tiles)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("--model", default="bitswap_core/zoo/default.safetensors")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--every", type=int, default=75)
    args = ap.parse_args()
    base = model_from_file(Path(args.model)).eval()
    control, grown, fb = copy.deepcopy(base), copy.deepcopy(base), Feedback(base.cfg)
    for m in (control, grown):
        for name, p in m.named_parameters():
            p.requires_grad_(name.startswith("q_nets"))
    opt_c = torch.optim.Adam([p for p in control.parameters() if p.requires_grad], lr=args.lr)
    opt_f = torch.optim.Adam([p for p in grown.parameters() if p.requires_grad] + list(fb.parameters()), lr=args.lr)
    sampler = CropSampler([load_rgb(u) for u in list_images(args.train)], seed=13, border=True)
    tiles, known = validation_tiles(args.val, args.tiles, seed=13, border=True)
    print(f"step 0: plain {evaluate(control, plain, tiles, known):.4f}, "
          f"feedback {evaluate(grown, fb, tiles, known):.4f} bpd on {len(tiles)} val tiles", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        x, k = sampler.batch(step, 64)
        for g in opt_c.param_groups + opt_f.param_groups:
            g["lr"] = args.lr * min(1.0, step / 50)
        for m, q, opt in ((control, plain, opt_c), (grown, fb, opt_f)):
            loss = m(x, known=k, q1=q(m, x[..., :32, :32]))["bpd"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        if step % args.every == 0:
            print(f"step {step} ({time.time() - t0:.0f} s): plain {evaluate(control, plain, tiles, known):.4f}, "
                  f"feedback {evaluate(grown, fb, tiles, known):.4f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
