"""Exact integer inference of the Bit-Swap networks: identical outputs for any batch, thread count or device.

Convolutions run as im2col + float32 matmul on integer values whose every partial sum is kept below 2**24
(longer reductions are split and added in int64), so any summation order gives the same exact integer.
Requantization is integer multiply-shift, the nonlinearity a lookup table, and the output heads compare
integers against shipped thresholds. The result of each network is a tensor of integer *levels* that index
the CDF tables.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bitswap_core.model.config import ModelConfig
from bitswap_core.model.quant import (
    ACT_MAX,
    ACT_MIN,
    COEF_LEVELS,
    REQUANT_SHIFT,
    STREAM_MAX,
    reduction_chunk,
    top_prior_levels,
)

_SCALE = 2.0**-REQUANT_SHIFT


def _im2col(a: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H, W, C) -> (B*H*W, k*k*C), zero padded; channels-last so the matmul needs no transposes."""
    b, h, w, c = a.shape
    p = k // 2
    ap = F.pad(a, (0, 0, p, p, p, p))
    cols = torch.cat([ap[:, dy : dy + h, dx : dx + w, :] for dy in range(k) for dx in range(k)], dim=-1)
    return cols.reshape(b * h * w, k * k * c)


class _Conv:
    """One conv layer; activations are channels-last (B, H, W, C) float tensors holding integers."""

    def __init__(self, w: np.ndarray, b: np.ndarray | None, m: np.ndarray | None, max_abs_in: int, device):
        cout, cin, k, _ = w.shape
        self.k, self.cout = k, cout
        # (Cout, Cin, k, k) -> (k*k*Cin, Cout) in the (dy, dx, c) order of _im2col
        wf = torch.from_numpy(w.astype(np.float32).transpose(2, 3, 1, 0).reshape(k * k * cin, cout)).to(device)
        step = reduction_chunk(max_abs_in)
        self.chunks = [(s, min(s + step, wf.shape[0])) for s in range(0, wf.shape[0], step)]
        self.w = [wf[s:e].contiguous() for s, e in self.chunks]
        # Elementwise IEEE float32 ops are correctly rounded on every device, so the requantization below
        # is deterministic; only reductions (the matmul) need the exact-integer guarantee.
        self.b = None if b is None else torch.from_numpy(b.astype(np.float32)).to(device)
        self.m = None if m is None else torch.from_numpy((m.astype(np.float64) * _SCALE).astype(np.float32)).to(device)

    def acc(self, a: torch.Tensor) -> torch.Tensor:
        """Accumulators (B, H, W, Cout): exact integers per chunk, chunks added in float32."""
        bsz, h, w, _ = a.shape
        cols = _im2col(a, self.k)
        acc = None
        for (s, e), wt in zip(self.chunks, self.w):
            # every partial sum of this chunk is an integer below 2**24: exact in float32, in any order
            part = torch.matmul(cols[:, s:e] if len(self.chunks) > 1 else cols, wt)
            acc = part if acc is None else acc + part
        return acc.reshape(bsz, h, w, self.cout)

    def stream(self, a: torch.Tensor) -> torch.Tensor:
        """Requantize to the residual stream: clamp(floor((acc + b) * M / 2**32 + 0.5))."""
        v = torch.floor((self.acc(a) + self.b) * self.m + 0.5)
        return torch.clamp(v, -STREAM_MAX, STREAM_MAX)


class _Head:
    """level = number of thresholds <= acc, per channel, via one bucketize over offset thresholds."""

    _OFF = 1 << 40

    def __init__(self, thr: np.ndarray, device):
        c, n = thr.shape
        self.n = c
        offs = np.arange(c, dtype=np.int64)[:, None] * self._OFF
        self.flat = torch.from_numpy((thr + offs).reshape(-1)).to(device)
        self.off = torch.from_numpy(offs[:, 0]).to(device)
        self.base = torch.arange(c, dtype=torch.int64, device=device) * n

    def __call__(self, acc: torch.Tensor) -> torch.Tensor:
        """acc: (B, H, W, C) float32 integers -> (B, C, H, W) int64 levels."""
        v = (acc.to(torch.int64) + self.off).contiguous()
        return (torch.bucketize(v, self.flat, right=True) - self.base).permute(0, 3, 1, 2).contiguous()


class _Net:
    def __init__(self, prefix: str, t: dict[str, np.ndarray], max_abs_in: int, heads: list[str], device, lut):
        self.lut = lut
        self.conv_in = _Conv(t[f"{prefix}.conv_in.w"], t[f"{prefix}.conv_in.b"], t[f"{prefix}.conv_in.m"],
                             max_abs_in, device)
        self.blocks = []
        j = 0
        while f"{prefix}.blocks.{j}.conv1.w" in t:
            convs = [
                _Conv(t[f"{prefix}.blocks.{j}.{c}.w"], t[f"{prefix}.blocks.{j}.{c}.b"],
                      t[f"{prefix}.blocks.{j}.{c}.m"], max(abs(ACT_MIN), ACT_MAX), device)
                for c in ("conv1", "conv2")
            ]
            self.blocks.append(convs)
            j += 1
        self.conv_out = _Conv(t[f"{prefix}.conv_out.w"], None, None, max(abs(ACT_MIN), ACT_MAX), device)
        self.heads = [(h, _Head(t[f"{prefix}.conv_out.thr.{h}"], device)) for h in heads]

    def act(self, t: torch.Tensor) -> torch.Tensor:
        return self.lut[(t + STREAM_MAX).to(torch.int64)]

    def __call__(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """a: (B, H, W, C) float32 integers."""
        t = self.conv_in.stream(a)
        for c1, c2 in self.blocks:
            h = c1.stream(self.act(t))
            t = torch.clamp(t + c2.stream(self.act(h)), -STREAM_MAX, STREAM_MAX)
        acc = self.conv_out.acc(self.act(t))
        out, c0 = {}, 0
        for name, head in self.heads:
            out[name] = head(acc[..., c0 : c0 + head.n])
            c0 += head.n
        return out


class ExactModel:
    """Integer Bit-Swap networks. Inputs and outputs are int64 tensors of pixels, latent bins and levels."""

    def __init__(self, cfg: ModelConfig, tensors: dict[str, np.ndarray], device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        lut = torch.from_numpy(tensors["act_lut"].astype(np.float32)).to(self.device)
        lat = ["z_mean", "z_scale"]
        px = ["x_mean", "x_scale"] + (["coef"] if cfg.channel_conditional else [])
        zmax = cfg.z_bins - 1  # network input 2*bin - K + 1 lies in [-(K-1), K-1]
        self.q = [_Net("q0", tensors, 128, lat, self.device, lut)]
        self.q += [_Net(f"q{i}", tensors, zmax, lat, self.device, lut) for i in range(1, cfg.nz)]
        self.p = [_Net(f"p{i}", tensors, zmax, lat, self.device, lut) for i in range(cfg.nz - 1)]
        self.px = _Net("px", tensors, zmax, px, self.device, lut)
        self.table_z = tensors["table_z"]
        self.table_x = tensors["table_x"]
        self.top = top_prior_levels(cfg)

    # ---- inputs ----
    def _x_input(self, x: torch.Tensor) -> torch.Tensor:
        a = F.pixel_unshuffle(x.to(self.device, torch.float32) - 128.0, 2)
        return a.permute(0, 2, 3, 1).contiguous()

    def _z_input(self, z: torch.Tensor) -> torch.Tensor:
        a = (2 * z.to(self.device, torch.int64) - self.cfg.z_bins + 1).to(torch.float32)
        return a.permute(0, 2, 3, 1).contiguous()

    # ---- distributions (levels) ----
    @torch.no_grad()
    def q_latent(self, i: int, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_i | x) for i == 0 (inp: pixels (B, C, 32, 32)), else q(z_i | z_{i-1}) (inp: bins)."""
        a = self._x_input(inp) if i == 0 else self._z_input(inp)
        out = self.q[i](a)
        return out["z_mean"], out["z_scale"]

    @torch.no_grad()
    def p_latent(self, i: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_i | z_{i+1}) for i < nz - 1."""
        out = self.p[i](self._z_input(z_above))
        return out["z_mean"], out["z_scale"]

    def top_prior(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (n, self.cfg.z_channels, 16, 16)
        return torch.full(shape, self.top[0], dtype=torch.int64), torch.full(shape, self.top[1], dtype=torch.int64)

    @torch.no_grad()
    def p_pixels(self, z1: torch.Tensor) -> dict[str, torch.Tensor]:
        """p(x | z1): per-subpixel mean level (1/F pixel), scale level and, if channel-conditional, the
        integer coefficients (B, 3, 32, 32) in [-64, 64] for mean_G += a*R and mean_B += b*R + c*G."""
        out = self.px(self._z_input(z1))
        res = {"mean": F.pixel_shuffle(out["x_mean"], 2), "scale": F.pixel_shuffle(out["x_scale"], 2)}
        if "coef" in out:
            res["coef"] = F.pixel_shuffle(out["coef"], 2) - (COEF_LEVELS // 2)
        return res

    def conditional_mean(self, params: dict[str, torch.Tensor], channel: int, x: torch.Tensor) -> torch.Tensor:
        """Mean level of one channel given the already known channels of x (B, C, 32, 32) int64."""
        mean = params["mean"][:, channel]
        if "coef" not in params or channel == 0:
            return mean
        f, hi = self.cfg.mean_frac, 255 * self.cfg.mean_frac
        coef = params["coef"]
        xr = 2 * x[:, 0].to(torch.int64) - 255
        if channel == 1:
            d = coef[:, 0] * xr
        else:
            d = coef[:, 1] * xr + coef[:, 2] * (2 * x[:, 1].to(torch.int64) - 255)
        return torch.clamp(mean + torch.div(d * f + 64, 128, rounding_mode="floor"), 0, hi)
