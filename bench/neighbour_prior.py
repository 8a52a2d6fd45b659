"""What a prior conditioned on the next blocks' latents could save: a probe before any model change.

    .venv/bin/python bench/neighbour_prior.py ../shared/datasets/val [--model M]

Each block's latents are coded under priors that see that block alone: the top layer under logistic(0, 1),
each lower layer under p(z_i | z_(i+1)). The decoder has already decoded the blocks coded after this one
(its right and lower neighbours, container v8's context), so a prior may read their latents. This probe
draws one posterior sample of every full 32x32 block of every image with the float model, then compares,
per latent layer, the sample's code length (-log2 density; the bins are fine enough for it) under the
model's prior with three per-channel logistic priors fitted by least squares on all images (a few
parameters per channel, so the in-sample fit is a small optimism):
  fitted:   the model's prior's mean and scale, each mapped by a per-channel affine map (what calibration
            alone gives, no context);
  + same:   the mean also moved by the right and lower neighbours' latents at the same position;
  + edge:   and by the neighbours' latents nearest this element across the shared edge.
The saving is reported in bits per dimension of the images (3 per pixel), the unit of the ratio table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.model.export import import_tensors  # noqa: E402
from bitswap_core.model.float_model import BitSwapModel, logistic_logpdf  # noqa: E402
from bitswap_core.model.quant import top_prior_levels, z_scale_value  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402

LN2 = math.log(2.0)


def blocks_of(path: Path) -> np.ndarray:
    """(rows, cols, 3, 32, 32) full blocks of an RGB image."""
    a = np.asarray(Image.open(path).convert("RGB"))
    r, c = a.shape[0] // 32, a.shape[1] // 32
    a = a[: r * 32, : c * 32].reshape(r, 32, c, 32, 3).transpose(0, 2, 4, 1, 3)
    return a


def logistic_fit(t: torch.Tensor, mean: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
    """Bits of t (N,) under logistic(mean', s) with mean' = a mean + b + sum w_k feat_k least squares and s
    from the residuals' spread (logistic: std = s pi / sqrt 3)."""
    x = torch.stack([mean, torch.ones_like(mean)] + feats, 1).double()
    w = torch.linalg.lstsq(x, t.double().unsqueeze(1)).solution
    mu = (x @ w).squeeze(1).float()
    s = (t - mu).std() * math.sqrt(3) / math.pi
    return -logistic_logpdf(t, mu, s) / LN2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    loaded = resolve(args.model)
    cfg = loaded.cfg
    model = BitSwapModel(cfg)
    import_tensors(model, loaded.tensors)
    model.eval()
    zs_all, prior_all, dims = [[] for _ in range(cfg.nz)], [[] for _ in range(cfg.nz)], 0
    mean_lvl, scale_lvl = top_prior_levels(cfg)
    mu_top = (mean_lvl / cfg.mean_frac - (cfg.z_bins / 2 - 0.5)) * cfg.z_delta
    s_top = float(z_scale_value(cfg, torch.tensor(float(scale_lvl))))
    for path in sorted(args.folder.glob("*.png")):
        b = blocks_of(path)
        r, c = b.shape[:2]
        dims += b.size
        x = torch.from_numpy(b.reshape(r * c, 3, 32, 32).astype(np.float32))
        with torch.no_grad():
            zs, _ = model.sample_posterior(x)
            for i in range(cfg.nz):
                if i == cfg.nz - 1:
                    mu, s = torch.full_like(zs[i], mu_top), torch.full_like(zs[i], s_top)
                else:
                    mu, s = model.latent_params(model.p_nets[i](model.z_to_input(zs[i + 1])))
                shape = (r, c) + tuple(zs[i].shape[1:])
                zs_all[i].append(zs[i].reshape(shape))
                prior_all[i].append((mu.reshape(shape), s.reshape(shape)))
        print(f"{path.name}: {r}x{c} blocks", flush=True)
    total = float(dims)
    print(f"\n{len(zs_all[0])} images, {int(dims)} dims in full blocks; bits per dimension of the images")
    print(f"{'layer':8}{'model prior':>13}{'fitted':>10}{'+ same':>10}{'+ edge':>10}")
    for i in range(cfg.nz):
        rows = {k: [] for k in ("t", "mu", "s", "same_r", "same_b", "edge_r", "edge_b", "ch")}
        for z, (mu, s) in zip(zs_all[i], prior_all[i]):
            r, c = z.shape[:2]
            if r < 2 or c < 2:
                continue
            inner = (slice(0, r - 1), slice(0, c - 1))  # blocks with both neighbours
            zr, zb = z[: r - 1, 1:c], z[1:r, : c - 1]
            side = z.shape[-1]
            rows["t"].append(z[inner])
            rows["mu"].append(mu[inner])
            rows["s"].append(s[inner])
            rows["same_r"].append(zr)
            rows["same_b"].append(zb)
            rows["edge_r"].append(zr[..., :, :1].expand(*zr.shape[:-1], side))  # right block's first column
            rows["edge_b"].append(zb[..., :1, :].expand(*zb.shape[:-2], 1, side).expand_as(zb))
            rows["ch"].append(torch.arange(z.shape[2]).view(1, 1, -1, 1, 1).expand_as(z[inner]))
        flat = {k: torch.cat([v.reshape(-1) for v in vs]) for k, vs in rows.items()}
        base = (-logistic_logpdf(flat["t"], flat["mu"], flat["s"]) / LN2)
        # the model's own prior's bits on the blocks without both neighbours are the same under every column
        out = {"model": base.sum(), "fitted": 0.0, "same": 0.0, "edge": 0.0}
        for ch in range(cfg.z_channels):
            sel = flat["ch"] == ch
            t, mu = flat["t"][sel], flat["mu"][sel]
            z_std = (t - mu) / flat["s"][sel]  # fit in the prior's own units: mean and log-scale maps per channel
            f = [flat[k][sel] / flat["s"][sel] for k in ("same_r", "same_b")]
            g = f + [flat[k][sel] / flat["s"][sel] for k in ("edge_r", "edge_b")]
            logs = torch.log2(flat["s"][sel])
            out["fitted"] += (logistic_fit(z_std, torch.zeros_like(z_std), []) + logs).sum()
            out["same"] += (logistic_fit(z_std, torch.zeros_like(z_std), f) + logs).sum()
            out["edge"] += (logistic_fit(z_std, torch.zeros_like(z_std), g) + logs).sum()
        print(f"z{i + 1:<7}" + "".join(f"{float(out[k]) / total:>10.4f}" for k in ("model", "fitted", "same", "edge")),
              "  (blocks with both neighbours only)")


if __name__ == "__main__":
    main()
