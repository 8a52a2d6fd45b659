"""What the amortised encoder q(z1|x) leaves on the table, on the validation tiles a training run
evaluates on (float model, bits per dimension):

- optimised q: each tile's q(z1|x) means and scales optimised by gradient descent on its own -ELBO (Adam,
  scales kept on the model's latent scale grid), q(z2|z1) and the generative model as they are. The
  drop from the amortised -ELBO bounds what a better encoder could save without touching the decoder's
  networks (ModelConfig.encoder_blocks, experiment Q in docs/MODEL_CARD.md).
- importance-weighted (--iwae K): the K-sample bound -log mean_k p(x, z_k) / q(z_k | x), what Monte Carlo
  bits-back coding with K particles would approach (Ruan et al. 2021), at K times the network work.

    .venv/bin/python bench/inference_gap.py ../shared/datasets/val --tiles 64 --steps 100 --iwae 64
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.training import float_model, validation_tiles  # noqa: E402


def tile_bpd(model, tiles, known, q1=None, samples: int = 8, seed: int = 0, split: bool = False):
    """Each tile's -ELBO (bpd), averaged over `samples` latent draws (the same draws for any q1); with
    split, also the mean pixel and latent shares."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rep = lambda t: t.repeat(samples, *[1] * (t.dim() - 1))  # noqa: E731
        out = model(rep(tiles), known=rep(known), q1=None if q1 is None else (rep(q1[0]), rep(q1[1])))
    each = out["bpd_each"].view(samples, -1).mean(0)
    return (each, float(out["bpd_x"]), float(out["bpd_z"])) if split else each


def amortised_q(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's q(z1|x) (mean, scale) of 32x32 blocks x (a bordered tile's border is cut off)."""
    return model.latent_params(model.q_nets[0](F.pixel_unshuffle(x[..., :32, :32] - 128.0, 2)))


def descend(model, tiles, known, params: list[torch.Tensor], q_of, steps: int, lr: float, samples: int) -> None:
    """Adam on params down the tiles' -ELBO with q(z1|x) = q_of(), the model frozen; fresh draws each step."""
    opt = torch.optim.Adam(params, lr=lr)
    for p in model.parameters():
        p.requires_grad_(False)
    for step in range(steps):
        loss = tile_bpd(model, tiles, known, q_of(), samples=samples, seed=1000 + step).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def optimised_q(model, tiles, known, steps: int, lr: float, samples: int, scale_min: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tile q(z1|x) (mean, scale), started at the encoder's and moved down each tile's -ELBO; scales
    on the model's grid [z_scale_min, z_scale_max] or down to scale_min."""
    cfg = model.cfg
    lo = cfg.z_scale_min if scale_min is None else scale_min
    with torch.no_grad():
        mu0, s0 = amortised_q(model, tiles)
    mu, log_s = mu0.clone().requires_grad_(True), s0.log().clone().requires_grad_(True)
    q1 = lambda: (mu, log_s.exp().clamp(lo, cfg.z_scale_max))  # noqa: E731
    descend(model, tiles, known, [mu, log_s], q1, steps, lr, samples)
    return tuple(t.detach() for t in q1())


def fit_affine(model, tiles, known, steps: int, lr: float, samples: int) -> tuple[torch.Tensor, ...]:
    """One affine correction (a, b, c) of q(z1|x) per latent channel (affine_q), fitted down the tiles'
    -ELBO: shared by tiles of all images here, per image in bench/image_q.py."""
    with torch.no_grad():
        mu0, s0 = amortised_q(model, tiles)
    abc = tuple(torch.zeros(1, mu0.shape[1], 1, 1, requires_grad=True) for _ in range(3))
    descend(model, tiles, known, list(abc), lambda: affine_q(model, mu0, s0, abc), steps, lr, samples)
    return tuple(t.detach() for t in abc)


def affine_q(model, mu: torch.Tensor, s: torch.Tensor, abc) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z1|x) (mean (1 + a) mu + b, scale e^c s on the model's scale grid)."""
    a, b, c = abc
    return mu * (1 + a) + b, (s * c.exp()).clamp(model.cfg.z_scale_min, model.cfg.z_scale_max)


def shared_correction(model, tiles, known, steps: int, lr: float, samples: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z1|x) with one affine correction per latent channel shared by all tiles, fitted on the tiles
    themselves: if the per-tile gap were a global bias of the encoder, this would find it (and a per-image
    header could carry it)."""
    abc = fit_affine(model, tiles, known, steps, lr, samples)
    with torch.no_grad():
        return affine_q(model, *amortised_q(model, tiles), abc)


def iwae_bpd(model, tiles, known, k: int) -> list[tuple[int, float, float]]:
    """(K, mean single-sample -ELBO, K-sample bound) for K = 1, 2, 4, ... k, in bpd."""
    dims = tiles[0, :, :32, :32].numel()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        per = torch.stack([model(tiles, known=known)["bpd_each"] for _ in range(k)], 1).double()  # (N, k)
    nats = per * dims * math.log(2)
    rows, j = [], 1
    while j <= k:
        bound = -(torch.logsumexp(-nats[:, :j], 1) - math.log(j)) / (dims * math.log(2))
        rows.append((j, float(per[:, :j].mean()), float(bound.mean())))
        j *= 2
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("val")
    ap.add_argument("--models", nargs="+", default=["bitswap_core/zoo/default.safetensors"],
                    help="model files (.safetensors) or training checkpoints")
    ap.add_argument("--tiles", type=int, default=64)
    ap.add_argument("--seed", type=int, default=13, help="picks the tiles (a training run's --seed)")
    ap.add_argument("--steps", type=int, default=100, help="Adam steps of the per-tile q (0: skip)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--scale-min", type=float, default=None,
                    help="let the optimised q's scales go below the model's grid (its z_scale_min) down to this")
    ap.add_argument("--shared", action="store_true",
                    help="also fit one correction of q per latent channel shared by all tiles (in-sample)")
    ap.add_argument("--iwae", type=int, default=0, help="largest K of the importance-weighted bound (0: skip)")
    args = ap.parse_args()
    tiles, known = validation_tiles(args.val, args.tiles, seed=args.seed, border=True)
    print(f"{len(tiles)} bordered validation tiles of {args.val}, seed {args.seed}", flush=True)
    for path in args.models:
        model = float_model(path).eval()
        if args.steps:
            with torch.no_grad():
                before, bx, bz = tile_bpd(model, tiles, known, split=True)
            before = before.mean()
            q1 = optimised_q(model, tiles, known, args.steps, args.lr, samples=2, scale_min=args.scale_min)
            with torch.no_grad():
                after, ax, az = tile_bpd(model, tiles, known, q1, split=True)
            after = after.mean()
            floor = f", scales down to {args.scale_min}" if args.scale_min is not None else ""
            print(f"{path}: amortised q {before:.4f} bpd (pixels {bx:.4f} + latents {bz:.4f}), per-tile "
                  f"optimised q ({args.steps} steps{floor}) {after:.4f} (pixels {ax:.4f} + latents {az:.4f}; "
                  f"{100 * (after / before - 1):+.2f}%); its scales' median {q1[1].median():.3f}", flush=True)
            if args.shared:
                q1 = shared_correction(model, tiles, known, args.steps, args.lr, samples=2)
                with torch.no_grad():
                    after = tile_bpd(model, tiles, known, q1).mean()
                print(f"{path}: one correction per latent channel shared by the tiles ({args.steps} steps, "
                      f"in-sample) {after:.4f} ({100 * (after / before - 1):+.2f}%)", flush=True)
        for k, elbo, bound in iwae_bpd(model, tiles, known, args.iwae) if args.iwae else ():
            print(f"{path}: K={k:4d} -ELBO {elbo:.4f}, importance-weighted bound {bound:.4f} "
                  f"({100 * (bound / elbo - 1):+.2f}%)", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
