"""Exact integer inference of the Bit-Swap networks: identical outputs for any batch, thread count or device.

Convolutions are tap-wise float32 matmuls (addmm) on integer values whose every partial sum is kept below
2**24 (longer reductions are split and added in float64), so any summation order gives the same exact
integers. On a CPU whose int8 matrix product (torch._int_mm: int8 x int8 -> int32) passes a probe of
worst-case operands, convolutions whose inputs fit int8 (activations, pixels - 128) use it instead: the
same exact integers, about twice the batched coding speed on a CPU with int8 dot-product instructions
(VNNI; bench/codec_speed.py --matmul int8 float, docs/BENCHMARKS.md).
Requantization is elementwise IEEE float32 (correctly rounded everywhere), the nonlinearity a lookup
table, and the output heads are affine floors (means) or comparisons against shipped integer
thresholds (scales, colour coefficients). The result of each network is a tensor of integer *levels* that
index the CDF tables.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F

from bitswap_core.blocks import block_side
from bitswap_core.model import phases
from bitswap_core.model.config import ModelConfig
from bitswap_core.model.quant import (
    ACT_MAX,
    ACT_MIN,
    COEF_LEVELS,
    REQUANT_SHIFT,
    STREAM_MAX,
    heads_for,
    reduction_chunk,
    top_prior_levels,
)

_SCALE = 2.0**-REQUANT_SHIFT
IM2COL_MAX_ROWS = 4096  # up to 16 blocks of 16x16 positions: one matmul per conv instead of one per tap
INT8_ENV = "BITSWAP_INT8_MATMUL"  # "0": never use the int8 product (benchmarks compare the two paths)


def _int8_product_is_exact(k: int, n: int) -> bool:
    """Whether to use torch._int_mm for (m, k) x (k, n) int8 operands here: not when switched off
    (INT8_ENV), not when an int32 accumulator could overflow, otherwise what the probe says."""
    if os.environ.get(INT8_ENV, "1") == "0" or not hasattr(torch, "_int_mm") or k * 128 * 127 >= 2**31:
        return False
    return _probe_int8_product(k, n)


@functools.cache
def _probe_int8_product(k: int, n: int) -> bool:
    """Whether torch._int_mm gives the exact int32 products for (m, k) x (k, n) int8 operands here
    (probed once per shape and process).

    Integer products are exact by definition, but some int8 GEMM kernels are not: on CPUs without int8
    dot-product instructions, kernels that add pairs of u8 x s8 products in int16 saturate (oneDNN's
    "nuances of int8 computations"), and a wrong accumulator would make a payload undecodable. So each
    (k, n) is probed, at the row counts coding uses (a block is 256 rows), with the operands that would
    expose that: rows of a all 127, all -128, alternating, random, against columns of w all 127, all -127,
    alternating, random, so every combination of extremes and signs meets, compared with float64 products
    (exact at these magnitudes); any difference, or any error, keeps the float path."""
    rng = np.random.default_rng(k * 1000 + n)
    alt = np.resize([1, -1], k)
    try:
        for m in (256, 4096):
            rows = [np.full(k, 127), np.full(k, -128), np.where(alt > 0, 127, -128)]
            a = np.stack([rows[i % 4] if i % 4 < 3 else rng.integers(-128, 128, k) for i in range(m)])
            cols = [np.full(k, 127), np.full(k, -127), 127 * alt]
            w = np.stack([cols[j % 4] if j % 4 < 3 else rng.integers(-127, 128, k) for j in range(n)], 1)
            a8, w8 = torch.from_numpy(a.astype(np.int8)), torch.from_numpy(w.astype(np.int8))
            got = torch._int_mm(a8, w8)
            if got.dtype != torch.int32 or not torch.equal(got.double(), a8.double() @ w8.double()):
                return False
    except (RuntimeError, NotImplementedError):
        return False
    return True


class _Conv:
    """One conv layer; activations are channels-last (B, H, W, C) float tensors holding integers.

    The convolution is a sum over kernel taps of (rows of the padded input, shifted by the tap's offset in
    the flattened image) @ (that tap's Cin x Cout weights), accumulated with addmm in place: no im2col
    copy, and every partial sum is an integer below 2**24, so the result is exact in any summation order.
    Reductions that could exceed that bound are split into groups summed separately in float64.
    """

    def __init__(self, w: np.ndarray, b: np.ndarray | None, m: np.ndarray | None, max_abs_in: int, device,
                 int8_input: bool = False):
        cout, cin, k, _ = w.shape
        self.k, self.cout, self.cin = k, cout, cin
        self.taps = [torch.from_numpy(np.ascontiguousarray(w[:, :, dy, dx].T.astype(np.float32))).to(device)
                     for dy in range(k) for dx in range(k)]
        # groups of (tap, c0, c1) whose total number of terms keeps every partial sum exact
        limit = reduction_chunk(max_abs_in)
        step = min(cin, limit)
        pieces = [(t, c0, min(c0 + step, cin)) for t in range(k * k) for c0 in range(0, cin, step)]
        self.groups, cur, terms = [], [], 0
        for piece in pieces:
            n = piece[2] - piece[1]
            if cur and terms + n > limit:
                self.groups.append(cur)
                cur, terms = [], 0
            cur.append(piece)
            terms += n
        self.groups.append(cur)
        # all taps stacked (tap-major, like the im2col columns) when one reduction stays exact
        self.w_cols = torch.cat(self.taps, 0) if k * k * cin <= limit else None
        # int8_input: the caller's inputs are integers in [-128, 127] (activations, pixels - 128); the
        # int32 accumulators of an int8 product are then exact for any reduction length used here
        self.w8 = None
        if int8_input and torch.device(device).type == "cpu" and _int8_product_is_exact(k * k * cin, cout):
            self.w8 = torch.cat(self.taps, 0).to(torch.int8).contiguous()
        # Elementwise IEEE float32 ops are correctly rounded on every device, so the requantization below
        # is deterministic; only reductions (the matmuls) need the exact-integer guarantee.
        self.b = None if b is None else torch.from_numpy(b.astype(np.float32)).to(device)
        self.m = None if m is None else torch.from_numpy((m.astype(np.float64) * _SCALE).astype(np.float32)).to(device)

    def acc(self, a: torch.Tensor) -> torch.Tensor:
        """Accumulators (B, H, W, Cout) as float32 integers (exact below 2**24); a: float32 or int8 integers."""
        if self.w8 is not None:
            return self._acc_int8(a)
        a = a.to(torch.float32)  # no copy when it already is
        if self.w_cols is not None and a.shape[0] * a.shape[1] * a.shape[2] <= IM2COL_MAX_ROWS:
            return self._acc_im2col(a)
        return self._acc_taps(a)

    def _cols(self, a: torch.Tensor) -> torch.Tensor:
        """im2col of (B, H, W, C) channels-last input: (B*H*W, k*k*C), tap-major like w_cols and w8.

        A strided view of the padded input copied once by reshape: the same values as concatenating the
        k*k shifted windows, in 0.2-0.9 of the time alone on the convs' shapes, a few percent or nothing on whole
        images (bench/act_gather.py --cols, docs/BENCHMARKS.md "Speed")."""
        bsz, h, w, c = a.shape
        k, p = self.k, self.k // 2
        ap = F.pad(a, (0, 0, p, p, p, p))
        sb, sh, sw, sc = ap.stride()
        return ap.as_strided((bsz, h, w, k, k, c), (sb, sh, sw, sh, sw, sc)).reshape(-1, k * k * c)

    def _acc_im2col(self, a: torch.Tensor) -> torch.Tensor:
        """Few blocks (decoding one image): one matmul over all taps beats k*k small ones. The whole
        reduction fits the exact-integer bound, so the result is the same integers as the tap-wise sum."""
        return (self._cols(a) @ self.w_cols).view(*a.shape[:3], self.cout)

    def _acc_int8(self, a: torch.Tensor) -> torch.Tensor:
        """One int8 im2col product (any batch: the columns are a byte each); the int32 accumulators are the
        same integers as the float paths' (|acc| <= k*k*cin * 128 * 127 < 2**24 for every conv of a model
        whose float path runs one reduction, and converted with the same rounding otherwise)."""
        acc = torch._int_mm(self._cols(a.to(torch.int8)), self.w8)
        return acc.to(torch.float32).view(*a.shape[:3], self.cout)

    def _acc_taps(self, a: torch.Tensor) -> torch.Tensor:
        bsz, h, w, c = a.shape
        p = self.k // 2
        hp, wp = h + 2 * p, w + 2 * p
        ap = F.pad(a, (0, 0, p, p, p, p)).reshape(-1, c)
        n = ap.shape[0]
        total = None
        for group in self.groups:
            acc = torch.zeros((n, self.cout), dtype=a.dtype, device=a.device)
            for t, c0, c1 in group:
                off = (t // self.k) * wp + (t % self.k)
                wt = self.taps[t] if (c0, c1) == (0, c) else self.taps[t][c0:c1]
                src = ap[off:] if (c0, c1) == (0, c) else ap[off:, c0:c1]
                acc[: n - off].addmm_(src, wt)
            total = acc if total is None else (total.double() + acc.double())
        return total.to(a.dtype).view(bsz, hp, wp, self.cout)[:, :h, :w]

    def stream(self, a: torch.Tensor) -> torch.Tensor:
        """Requantize to the residual stream: clamp(floor((acc + b) * M / 2**32 + 0.5)), in place on the
        fresh accumulators (the same IEEE float32 operations in the same order, without four temporaries)."""
        return self.acc(a).add_(self.b).mul_(self.m).add_(0.5).floor_().clamp_(-STREAM_MAX, STREAM_MAX)


class _Head:
    """level = number of thresholds <= acc, per channel (batched searchsorted over integer thresholds)."""

    def __init__(self, thr: np.ndarray, device):
        self.n = thr.shape[0]
        self.thr = torch.from_numpy(np.ascontiguousarray(thr, dtype=np.int64)).to(device)

    def __call__(self, acc: torch.Tensor) -> torch.Tensor:
        """acc: (B, H, W, C) float32 integers -> (B, C, H, W) int64 levels."""
        b, h, w, c = acc.shape
        v = acc.to(torch.int64).reshape(-1, c).t().contiguous()  # (C, N)
        lvl = torch.searchsorted(self.thr, v, right=True)
        return lvl.reshape(c, b, h, w).permute(1, 0, 2, 3).contiguous()


class _AffineHead:
    """level = clamp(floor(acc * alpha + beta)) per channel, in float32 (IEEE elementwise: deterministic)."""

    def __init__(self, aff: np.ndarray, levels: int, device):
        self.n, self.levels = aff.shape[0], levels
        self.alpha = torch.from_numpy(np.ascontiguousarray(aff[:, 0])).to(device)
        self.beta = torch.from_numpy(np.ascontiguousarray(aff[:, 1])).to(device)

    def __call__(self, acc: torch.Tensor) -> torch.Tensor:
        lvl = torch.clamp(torch.floor(acc * self.alpha + self.beta), 0, self.levels - 1)
        return lvl.to(torch.int64).permute(0, 3, 1, 2).contiguous()


class _Output:
    """Output conv whose accumulator channels feed heads, in order; returns {head name: levels}."""

    def __init__(self, name: str, t: dict[str, np.ndarray], heads: dict[str, int], device):
        self.conv = _Conv(t[f"{name}.w"], None, None, max(abs(ACT_MIN), ACT_MAX), device, int8_input=True)
        self.heads = [
            (h, _AffineHead(t[f"{name}.aff.{h}"], levels, device) if f"{name}.aff.{h}" in t
             else _Head(t[f"{name}.thr.{h}"], device))
            for h, levels in heads.items()
        ]

    def __call__(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        acc = self.conv.acc(a)
        out, c0 = {}, 0
        for name, head in self.heads:
            out[name] = head(acc[..., c0 : c0 + head.n])
            c0 += head.n
        return out


def _stream_conv(name: str, t: dict[str, np.ndarray], max_abs_in: int, device, int8_input: bool = False) -> _Conv:
    return _Conv(t[f"{name}.w"], t[f"{name}.b"], t[f"{name}.m"], max_abs_in, device, int8_input)


def _res_blocks(prefix: str, t: dict[str, np.ndarray], device) -> list[list[_Conv]]:
    """[conv1, conv2] of each residual block {prefix}.blocks.{j} in the file (a network's trunk or a phase
    head); their inputs are activations, so they take int8."""
    blocks, j = [], 0
    while f"{prefix}.blocks.{j}.conv1.w" in t:
        blocks.append([_stream_conv(f"{prefix}.blocks.{j}.{c}", t, max(abs(ACT_MIN), ACT_MAX), device,
                                    int8_input=True) for c in ("conv1", "conv2")])
        j += 1
    return blocks


class _Net:
    def __init__(self, prefix: str, t: dict[str, np.ndarray], max_abs_in: int, heads: dict[str, int], device, lut):
        self.lut = lut  # float32, or int8 when the convolutions it feeds take int8 (no conversion in between)
        # the pixel network's input is x - 128 (int8); a latent network's is 2 * bin - bins + 1 (wider)
        self.conv_in = _stream_conv(f"{prefix}.conv_in", t, max_abs_in, device, int8_input=max_abs_in <= 128)
        self.blocks = _res_blocks(prefix, t, device)
        self.out = _Output(f"{prefix}.conv_out", t, heads, device)
        if all(c.w8 is not None for b in self.blocks for c in b) and self.out.conv.w8 is not None:
            self.lut = lut.to(torch.int8)

    def act(self, t: torch.Tensor) -> torch.Tensor:
        # index_select with int32 indices: the same gather, 3-4x faster on a CPU than advanced indexing with
        # int64 ones (bench/act_gather.py)
        idx = (t + STREAM_MAX).to(torch.int32).reshape(-1)
        return torch.index_select(self.lut, 0, idx).reshape(t.shape)

    def trunk(self, a: torch.Tensor) -> torch.Tensor:
        """a: (B, H, W, C) float32 integers -> the integer residual stream after the last block."""
        return self.blocks_on(self.conv_in.stream(a), self.blocks)

    def blocks_on(self, t: torch.Tensor, blocks) -> torch.Tensor:
        """The residual stream t after residual blocks [(conv1, conv2), ...] (the trunk's or a phase head's)."""
        for c1, c2 in blocks:
            h = c1.stream(self.act(t))
            t = torch.clamp(t + c2.stream(self.act(h)), -STREAM_MAX, STREAM_MAX)
        return t

    def __call__(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.out(self.act(self.trunk(a)))


def _moved(mean: torch.Tensor, d: torch.Tensor, hi: int) -> torch.Tensor:
    """mean + floor((d + 32) / 64), clamped to [0, hi]: a weight in 1/64 steps (the predictor's g, the
    colour residual's h) times an offset, in 1/F pixel units."""
    return torch.clamp(mean + torch.div(d + 32, 64, rounding_mode="floor"), 0, hi)


class ExactModel:
    """Integer Bit-Swap networks. Inputs and outputs are int64 tensors of pixels, latent bins and levels.

    The networks run on `device`; what the coder reads (levels, coefficients, predictions) comes back on the
    CPU, where the coder does its integer arithmetic, so a CUDA model never meets the coder's CPU tensors.
    Only px_trunk's output stays on the device: it goes straight back into p_pixels."""

    def __init__(self, cfg: ModelConfig, tensors: dict[str, np.ndarray], device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        lut = torch.from_numpy(tensors["act_lut"].astype(np.float32)).to(self.device)
        levels = {name: h.levels for name, h in heads_for(cfg).items()}
        lat = {k: levels[k] for k in ("z_mean", "z_scale")}
        px = {k: levels[k] for k in ("x_mean", "x_scale") + (("coef",) if cfg.channel_conditional else ())}
        zmax = cfg.z_bins - 1  # network input 2*bin - K + 1 lies in [-(K-1), K-1]
        self.q = [_Net("q0", tensors, 128, lat, self.device, lut)]
        self.q += [_Net(f"q{i}", tensors, zmax, lat, self.device, lut) for i in range(1, cfg.nz)]
        self.p = [_Net(f"p{i}", tensors, zmax, lat, self.device, lut) for i in range(cfg.nz - 1)]
        self.px = _Net("px", tensors, zmax, px, self.device, lut)
        phase_px = {**px, "gate": levels["gate"]} if cfg.phase_predictor else px
        if cfg.colour_residual:
            phase_px = {**phase_px, "rcoef": levels["rcoef"]}
        self.phase_heads = [
            (_stream_conv(f"px.phase{k}.ctx_in", tensors, 128, self.device, int8_input=True),  # (x - 128) * known
             _res_blocks(f"px.phase{k}", tensors, self.device),
             _Output(f"px.phase{k}.conv_out", tensors, phase_px, self.device))
            for k in range(1, cfg.pixel_phases)
        ]
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
        """q(z_i | x) for i == 0 (inp: pixels (B, C, s, s)), else q(z_i | z_{i-1}) (inp: bins)."""
        a = self._x_input(inp) if i == 0 else self._z_input(inp)
        out = self.q[i](a)
        return out["z_mean"].cpu(), out["z_scale"].cpu()

    @torch.no_grad()
    def p_latent(self, i: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_i | z_{i+1}) for i < nz - 1."""
        out = self.p[i](self._z_input(z_above))
        return out["z_mean"].cpu(), out["z_scale"].cpu()

    def top_prior(self, n: int, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's prior for n blocks whose latent grids are side x side (a block's side / 2)."""
        shape = (n, self.cfg.z_channels, side, side)
        return torch.full(shape, self.top[0], dtype=torch.int64), torch.full(shape, self.top[1], dtype=torch.int64)

    @torch.no_grad()
    def px_trunk(self, z1: torch.Tensor) -> torch.Tensor:
        """The shared part of p(x|z1): computed once per block, then read by every pixel phase."""
        return self.px.trunk(self._z_input(z1))

    @torch.no_grad()
    def p_pixels(self, trunk: torch.Tensor, phase: int, x: torch.Tensor | None = None,
                 known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """p(x | z1, earlier phases) for the pixels of one phase (phases.view of the block).

        Returns the mean level (1/F pixel), scale level and, if channel-conditional, the integer
        coefficients in [-64, 64] for mean_G += a*R and mean_B += b*R + c*G, each (B, 3, h, w); with the
        neighbour predictor also its weight g in [-64, 64] and the neighbours' mean P (conditional_mean
        applies them).
        x (B, C, 32, 32) holds the decoded pixels and known (B, 1, 32, 32) marks which of them are real
        (not padding): only earlier phases' real pixels are read, so encoder and decoder agree. Bordered
        blocks (B, C, 33, 33) (blocks.bordered) give the neighbour predictor the next blocks' pixels too.
        """
        cfg = self.cfg
        if phase == 0:
            out = self.px.out(self.px.act(trunk))
            if cfg.pixel_phases == 1:
                out = {k: F.pixel_shuffle(v, 2) for k, v in out.items()}
            else:
                rows = phases.squeezed(cfg.channels, 0)
                out = {k: v[:, rows] for k, v in out.items()}
        else:
            ctx_conv, blocks, head = self.phase_heads[phase - 1]
            # the head's pixel context is the block's own; a bordered block's last row and column reach only
            # the neighbour predictor below
            b = block_side(x)
            xs = (x[..., :b, :b].to(self.device, torch.int64) - 128) * known[..., :b, :b].to(self.device)
            ctx = F.pixel_unshuffle(xs.to(torch.float32), 2)[:, phases.context(cfg.channels, phase)]
            s = torch.clamp(trunk + ctx_conv.stream(ctx.permute(0, 2, 3, 1).contiguous()), -STREAM_MAX, STREAM_MAX)
            out = head(self.px.act(self.px.blocks_on(s, blocks)))
        res = {"mean": out["x_mean"], "scale": out["x_scale"]}
        if "coef" in out:
            res["coef"] = out["coef"] - (COEF_LEVELS // 2)
        if "gate" in out:  # conditional_mean moves each channel's mean by g toward its coded neighbours
            res["gate"] = out["gate"] - COEF_LEVELS // 2
            res["pred"] = phases.neighbour_prediction(x.to(self.device, torch.int64), known.to(self.device), phase,
                                                      cfg.mean_frac)
        if "rcoef" in out:  # and the earlier channels' residuals at the same pixel move G's and B's
            res["rcoef"] = out["rcoef"] - COEF_LEVELS // 2
        return {k: v.cpu() for k, v in res.items()}

    def conditional_mean(self, params: dict[str, torch.Tensor], channel: int, x: torch.Tensor,
                         earlier: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Mean level of one channel given the already known channels of x at the same pixels (B, C, h, w),
        then (neighbour predictor) moved by g toward the mean of the coded neighbours, then (colour residual)
        by h times the residuals of the channels before it. earlier: those channels' results, if the caller
        kept them (a coder going through the channels in order), so they are not computed again."""
        mean = params["mean"][:, channel]
        f, hi = self.cfg.mean_frac, 255 * self.cfg.mean_frac
        if "coef" in params and channel > 0:
            coef = params["coef"]
            xr = 2 * x[:, 0].to(torch.int64) - 255
            if channel == 1:
                d = coef[:, 0] * xr
            else:
                d = coef[:, 1] * xr + coef[:, 2] * (2 * x[:, 1].to(torch.int64) - 255)
            mean = torch.clamp(mean + torch.div(d * f + 64, 128, rounding_mode="floor"), 0, hi)
        if "gate" in params:
            d = params["gate"][:, channel] * (params["pred"][:, channel] - mean)
            mean = _moved(mean, d, hi)
        if "rcoef" in params and channel > 0:  # colour residual: h * (F x_j - final mean_j), j < channel
            h = params["rcoef"]
            if earlier is None:
                earlier = []
                for j in range(channel):
                    earlier.append(self.conditional_mean(params, j, x, earlier))
            r0 = f * x[:, 0].to(torch.int64) - earlier[0]
            if channel == 1:
                d = h[:, 0] * r0
            else:
                d = h[:, 1] * r0 + h[:, 2] * (f * x[:, 1].to(torch.int64) - earlier[1])
            mean = _moved(mean, d, hi)
        return mean
