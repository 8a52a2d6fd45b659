"""The float Bit-Swap model used for training (quantization-aware: it rounds where the exact model rounds).

Networks, as in Kingma et al. 2019: q(z1|x), q(z_{i+1}|z_i) for inference; p(z_i|z_{i+1}) and p(x|z1) for
generation; a fixed logistic(0, 1) top prior. Each network: 3x3 input conv, residual blocks
(pre-activation ELU, two 3x3 convs, skip), optional 5x5 "processing" blocks at the x<->z1 interface,
ELU and a 3x3 output conv whose channels are the distribution parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitswap_core.model import phases
from bitswap_core.model.config import ModelConfig
from bitswap_core.model.quant import (
    S_ACT,
    STREAM_MAX,
    W_MAX,
    X_IN_SCALE,
    Head,
    fq_act,
    fq_round,
    fq_stream,
    heads_for,
    ste,
    top_prior_levels,
    x_scale_value,
    z_scale_value,
)


class QConv(nn.Module):
    """Weight-normalised conv whose weights round to int8 per output channel (and bias to the acc grid)."""

    def __init__(self, cin: int, cout: int, k: int, in_scale: float, init_scale: float = 1.0):
        super().__init__()
        self.k, self.in_scale = k, in_scale
        v = torch.randn(cout, cin, k, k) * math.sqrt(2.0 / (cin * k * k))
        self.v = nn.Parameter(v)
        self.g = nn.Parameter(torch.full((cout,), init_scale) * v.flatten(1).norm(dim=1))
        self.bias = nn.Parameter(torch.zeros(cout))

    def weight(self) -> torch.Tensor:
        v = self.v
        return v * (self.g / v.flatten(1).norm(dim=1).clamp_min(1e-12))[:, None, None, None]

    def quantized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight integers, per-channel weight scale, bias integers) with straight-through rounding."""
        w = self.weight()
        s_w = (w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-8) / W_MAX)
        w_int = torch.clamp(fq_round(w / s_w[:, None, None, None]), -W_MAX, W_MAX)
        b_int = fq_round(self.bias / (s_w * self.in_scale))
        return w_int, s_w, b_int

    def forward(self, a_int: torch.Tensor) -> torch.Tensor:
        """a_int: integer-valued input; returns the real-valued pre-activation."""
        w_int, s_w, b_int = self.quantized()
        scale = s_w * self.in_scale
        w = w_int * scale[:, None, None, None]
        return F.conv2d(a_int, w, b_int * scale, padding=self.k // 2)


class ResBlock(nn.Module):
    def __init__(self, width: int, k: int):
        super().__init__()
        self.conv1 = QConv(width, width, k, S_ACT)
        self.conv2 = QConv(width, width, k, S_ACT, init_scale=0.1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = fq_stream(self.conv1(fq_act(t)))
        return fq_stream_add(t, fq_stream(self.conv2(fq_act(h))))


def fq_stream_add(t: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return torch.clamp(t + d, -STREAM_MAX, STREAM_MAX)


@torch.no_grad()
def init_neutral(blocks) -> None:
    """Each block's second conv starts near zero weight, so its requantized output is exactly 0 and the
    network computes what it did without the blocks (warm starts from models without them are neutral)."""
    for blk in blocks:
        blk.conv2.g.fill_(1e-6)
        blk.conv2.bias.zero_()


class Net(nn.Module):
    """integer input -> real-valued output parameters (pre-heads)."""

    def __init__(self, cin: int, in_scale: float, cout: int, cfg: ModelConfig, processing: int, extra: int = 0):
        super().__init__()
        w = cfg.width
        self.conv_in = QConv(cin, w, 3, in_scale)
        self.blocks = nn.ModuleList(
            [ResBlock(w, 5) for _ in range(processing)] + [ResBlock(w, 3) for _ in range(cfg.res_blocks + extra)]
        )
        self.conv_out = QConv(w, cout, 3, S_ACT, init_scale=0.1)
        self.extra = extra
        init_neutral(self.extra_blocks())

    def extra_blocks(self) -> nn.ModuleList:
        """The blocks beyond cfg.res_blocks (ModelConfig.encoder_blocks), the new part of a grown network."""
        return self.blocks[len(self.blocks) - self.extra :]

    def trunk(self, a_int: torch.Tensor) -> torch.Tensor:
        """Integer residual stream after the last block."""
        t = fq_stream(self.conv_in(a_int))
        for blk in self.blocks:
            t = blk(t)
        return t

    def forward(self, a_int: torch.Tensor) -> torch.Tensor:
        return self.conv_out(fq_act(self.trunk(a_int)))


class PhaseHead(nn.Module):
    """p(x | z1, earlier phases) for one later phase: the pixel context enters the p(x|z1) trunk's stream
    through a 3x3 conv, then cfg.phase_blocks residual blocks, ELU and an output conv give the phase's
    mean / scale / colour parameters."""

    def __init__(self, ctx_channels: int, out_channels: int, cfg: ModelConfig):
        super().__init__()
        self.ctx_in = QConv(ctx_channels, cfg.width, 3, X_IN_SCALE, init_scale=0.1)
        self.blocks = nn.ModuleList([ResBlock(cfg.width, 3) for _ in range(cfg.phase_blocks)])
        self.conv_out = QConv(cfg.width, out_channels, 3, S_ACT, init_scale=0.1)
        init_neutral(self.blocks)

    def forward(self, t: torch.Tensor, ctx_int: torch.Tensor) -> torch.Tensor:
        s = fq_stream_add(t, fq_stream(self.ctx_in(ctx_int)))
        for blk in self.blocks:
            s = blk(s)
        return self.conv_out(fq_act(s))


def fq_div64(d: torch.Tensor) -> torch.Tensor:
    """floor((d + 32) / 64) with a straight-through gradient: a weight in 1/64 steps times a mean offset,
    rounded as the exact model rounds it (the predictor's g, the colour residual's h)."""
    return ste(d / 64.0, torch.floor((d + 32.0) / 64.0))


def logistic_logpdf(z: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    u = (z - mu) / s
    return -u - torch.log(s) - 2.0 * F.softplus(-u)


def discretized_logistic_logp(x: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """log P(x) for x in {0..255} (float), edge bins absorbing the tails; mu, s in pixel units."""
    c_plus = (x + 0.5 - mu) / s
    c_min = (x - 0.5 - mu) / s
    log_cdf_plus = F.logsigmoid(c_plus)
    log_one_minus_cdf_min = F.logsigmoid(-c_min)
    cdf_delta = torch.sigmoid(c_plus) - torch.sigmoid(c_min)
    mid = (x - mu) / s
    log_pdf_mid = -mid - torch.log(s) - 2.0 * F.softplus(-mid)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid)
    return torch.where(x < 0.5, log_cdf_plus, torch.where(x > 254.5, log_one_minus_cdf_min, inner))


def step_onehot(pixel_phases: int, side: int, device=None, dtype=torch.float32, split: int = 1) -> torch.Tensor:
    """(side * side, steps): which coding step (phases.coding_steps with this split; 0: which pixel phase)
    each pixel of a side x side block belongs to, one-hot, to sum a per-pixel term per step. Training's
    per-step calibration keeps split 1, the seven steps of containers v4-v17 that its recipes were run with."""
    steps = phases.coding_steps(pixel_phases, split if pixel_phases > 1 else 0)
    idx = torch.zeros(side, side, dtype=torch.int64)
    for k, (phase, sub) in enumerate(steps):
        phases.step_view(idx, pixel_phases, phase, sub)[...] = k
    return F.one_hot(idx.flatten(), len(steps)).to(device=device, dtype=dtype)


class BitSwapModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        zc, xc = cfg.z_channels, cfg.x_channels
        z_in = cfg.z_delta / 2.0
        self.heads: dict[str, Head] = heads_for(cfg)
        self.q_nets = nn.ModuleList(
            [Net(xc, X_IN_SCALE, 2 * zc, cfg, cfg.processing_blocks, extra=cfg.encoder_blocks)]
            + [Net(zc, z_in, 2 * zc, cfg, 0) for _ in range(cfg.nz - 1)]
        )
        # p_nets[i] models z_{i+1} given z_{i+2} (0-based: p_nets[i] gives layer i from layer i+1)
        self.p_nets = nn.ModuleList([Net(zc, z_in, 2 * zc, cfg, 0) for _ in range(cfg.nz - 1)])
        x_out = 2 * xc + (xc if cfg.channel_conditional else 0)
        self.px_net = Net(zc, z_in, x_out, cfg, cfg.processing_blocks)
        with torch.no_grad():  # start with wide pixel distributions (scale ~30) so early losses are sane
            self.px_net.conv_out.bias[xc : 2 * xc].fill_(math.log(30.0))
        self.phase_heads = nn.ModuleList()
        if cfg.pixel_phases == 4:
            # + the neighbour predictor's weight, + the colour residual's weights
            groups = x_out // xc + (1 if cfg.phase_predictor else 0) + (1 if cfg.colour_residual else 0)
            self.phase_heads.extend(PhaseHead(len(phases.context(cfg.channels, k)), groups * cfg.channels, cfg)
                                    for k in range(1, 4))
            self.init_phase_heads_from_base()

    def phase_rows(self, k: int) -> list[int]:
        """Rows of px_net's output (mean, scale[, coef] groups) that phase k's head replaces."""
        xc = self.cfg.x_channels
        groups = self.px_net.conv_out.v.shape[0] // xc
        return [g * xc + i for g in range(groups) for i in phases.squeezed(self.cfg.channels, k)]

    @torch.no_grad()
    def init_phase_heads_from_base(self) -> None:
        """Start every phase head as a copy of p(x|z1)'s own output for its pixels (context adds to it), so
        a trained 1-phase model can be extended to 4 phases without losing what it learned."""
        src = self.px_net.conv_out
        for k, head in enumerate(self.phase_heads, start=1):
            rows = self.phase_rows(k)
            head.conv_out.v[: len(rows)].copy_(src.v[rows])
            head.conv_out.g[: len(rows)].copy_(src.g[rows])
            head.conv_out.bias[: len(rows)].copy_(src.bias[rows])
            self.init_predictor(head)

    @torch.no_grad()
    def init_new_top_layers(self, first: int) -> None:
        """Latent layers first.. (0-based) were added on top of a trained model with `first` layers: the new
        p(z_first-1 | z_first) starts as the fixed top prior logistic(0, 1) whatever z_first holds (output
        weights near zero, biases on the prior), and each new q starts near that prior too, so the grown
        model starts as the model it came from (plus a small KL for the new layers). Why: the old top layer
        pays its whole KL against a fixed factorised prior; a learned prior for it is Bit-Swap's own lever
        (a deeper hierarchy), trainable alone on top of a frozen model."""
        zc = self.cfg.z_channels
        lo, _ = self.cfg.z_log_scale_grid()
        unit = math.log(math.expm1(-lo)) + lo  # z_scale head: softplus(pre - lo) = -lo, i.e. scale 1
        for i in range(first, self.cfg.nz):
            for conv in (self.p_nets[i - 1].conv_out, self.q_nets[i].conv_out):
                conv.bias[:zc].zero_()
                conv.bias[zc:].fill_(unit)
            self.p_nets[i - 1].conv_out.g.fill_(1e-4)

    def predictor_channels(self) -> int:
        """Output rows of each phase head after p(x|z1)'s groups: the neighbour predictor's weight g and,
        with colour_residual, the residual weights h (C each); see gate_rows in jobs/training.py."""
        return self.cfg.channels * (int(self.cfg.phase_predictor) + int(self.cfg.colour_residual))

    @torch.no_grad()
    def init_predictor(self, head: PhaseHead) -> None:
        """The neighbour predictor's (and colour residual's) weights start at 0 (their rows near zero), so a
        model extended with them starts as the model it came from."""
        n = self.predictor_channels()
        if n:
            head.conv_out.g[-n:].fill_(1e-4)
            head.conv_out.bias[-n:].zero_()

    def pixel_pre(self, z1_in: torch.Tensor, x: torch.Tensor, t: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """px_net's output for all pixels; with 4 phases, later phases' rows come from their heads, which
        see the true pixels of earlier phases (teacher forcing: the coder sees the same decoded values).
        Also returns each later phase's neighbour-predictor weight outputs (B, C, 16, 16), if any.
        t: px_net's trunk output for z1_in, when the caller already has it."""
        t = self.px_net.trunk(z1_in) if t is None else t
        pre = self.px_net.conv_out(fq_act(t))
        if not len(self.phase_heads):
            return pre, []
        xs = F.pixel_unshuffle(x - 128.0, 2)
        pre, gates = pre.clone(), []
        for k, head in enumerate(self.phase_heads, start=1):
            rows = self.phase_rows(k)
            out = head(t, xs[:, phases.context(self.cfg.channels, k)])
            pre[:, rows] = out[:, : len(rows)]
            if self.cfg.phase_predictor:
                gates.append(out[:, len(rows) :])
        return pre, gates

    def neighbour_terms(self, gates: list[torch.Tensor], x: torch.Tensor, mean_lvl: torch.Tensor,
                        ctx: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, C, 32, 32) mean offsets of the neighbour predictor (1/F pixel): floor((g * (pred - mean) + 32)
        / 64) on later-phase pixels, 0 on phase 0 (as the exact model computes them)."""
        f = self.cfg.mean_frac
        terms = torch.zeros_like(x)
        xc, known = ctx if ctx is not None else (x, torch.ones_like(x[:, :1]))
        for k, gate_pre in enumerate(gates, start=1):
            g = self.heads["gate"].level(gate_pre) - (self.heads["gate"].levels // 2)
            d = g * (phases.neighbour_prediction(xc, known, k, f) - phases.view(mean_lvl, 4, k))
            phases.view(terms, 4, k)[:] = fq_div64(d)
        return terms

    def sample_posterior(self, x: torch.Tensor, q1: tuple[torch.Tensor, torch.Tensor] | None = None
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One sample of every latent layer from q (bottom up) for blocks x (B, C, side, side), and the
        log densities log q(z_i | .) per element; q1 replaces q(z1 | x)'s (mean, scale) (forward's q1)."""
        cfg = self.cfg
        a = F.pixel_unshuffle(x - 128.0, 2)
        zs, logq = [], []
        for i, net in enumerate(self.q_nets):
            mu, s = q1 if i == 0 and q1 is not None else self.latent_params(net(a))
            u = torch.rand_like(mu).clamp(1e-6, 1 - 1e-6)
            z = torch.clamp(mu + s * (torch.log(u) - torch.log1p(-u)), -cfg.z_range + 1e-3, cfg.z_range - 1e-3)
            zs.append(z)
            logq.append(logistic_logpdf(z, mu, s))
            a = self.z_to_input(z)
        return zs, logq

    # ---- conversions between real latents, bins and network inputs ----
    def z_to_input(self, z: torch.Tensor) -> torch.Tensor:
        """Real latent -> integer network input 2*bin - K + 1 (straight-through)."""
        k = self.cfg.z_bins
        b = torch.clamp(torch.floor(z / self.cfg.z_delta + k / 2), 0, k - 1)
        return ste(z * (2.0 / self.cfg.z_delta), 2.0 * b - k + 1)

    def latent_params(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output -> (real mean, real scale) on the quantized grid."""
        cfg, zc = self.cfg, self.cfg.z_channels
        mean_lvl = self.heads["z_mean"].level(pre[:, :zc])
        scale_lvl = self.heads["z_scale"].level(pre[:, zc:])
        mu = (mean_lvl / cfg.mean_frac - (cfg.z_bins / 2 - 0.5)) * cfg.z_delta
        return mu, z_scale_value(cfg, scale_lvl)

    def phase_band_onehot(self, pre: torch.Tensor, side: int) -> torch.Tensor:
        """(B, C, side * side, phases * BANDS) one-hot of each subpixel's (pixel phase, band of its own scale
        level), band = level * BANDS // x_scales as coding/adapt.py groups its scale shifts."""
        from bitswap_core.coding.adapt import BANDS

        cfg, xc = self.cfg, self.cfg.x_channels
        lvl = F.pixel_shuffle(self.heads["x_scale"].level(pre[:, xc : 2 * xc]), 2).detach().flatten(2)
        band = torch.clamp(torch.div(lvl.long() * BANDS, cfg.x_scales, rounding_mode="floor"), 0, BANDS - 1)
        phase = step_onehot(cfg.pixel_phases, side, pre.device, pre.dtype, split=0)  # (HW, phases)
        return (phase[None, None, :, :, None] * F.one_hot(band, BANDS).to(pre.dtype)[:, :, :, None, :]).flatten(3)

    def pixel_logp(self, pre: torch.Tensor, x: torch.Tensor, gates: list[torch.Tensor] = (),
                   ctx: tuple[torch.Tensor, torch.Tensor] | None = None, log_scale_shift: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """log P(x | z1) per subpixel; x: (B, C, 32, 32) float in 0..255; ctx: the blocks with their border
        and its known mask (forward), which the neighbour predictor reads; log_scale_shift: added to every
        pixel's log scale (broadcast to x), a float stand-in for the codec's per-image scale shifts."""
        cfg, xc, f = self.cfg, self.cfg.x_channels, self.cfg.mean_frac
        mean_lvl = F.pixel_shuffle(self.heads["x_mean"].level(pre[:, :xc]), 2)
        scale = x_scale_value(cfg, F.pixel_shuffle(self.heads["x_scale"].level(pre[:, xc : 2 * xc]), 2))
        if cfg.channel_conditional and cfg.channels == 3:
            coef = F.pixel_shuffle(self.heads["coef"].level(pre[:, 2 * xc :]), 2) - (self.heads["coef"].levels // 2)
            xr, xg = 2.0 * x[:, 0] - 255.0, 2.0 * x[:, 1] - 255.0
            dg = ste(coef[:, 0] * xr * f / 128.0, torch.floor((coef[:, 0] * xr * f + 64.0) / 128.0))
            db = ste(
                (coef[:, 1] * xr + coef[:, 2] * xg) * f / 128.0,
                torch.floor(((coef[:, 1] * xr + coef[:, 2] * xg) * f + 64.0) / 128.0),
            )
            hi = 255 * f
            mean_lvl = torch.stack(
                [mean_lvl[:, 0], torch.clamp(mean_lvl[:, 1] + dg, 0, hi), torch.clamp(mean_lvl[:, 2] + db, 0, hi)],
                dim=1,
            )
        if len(gates):  # last: the neighbour predictor moves the final (colour-conditioned) mean
            c = cfg.channels
            moved = self.neighbour_terms([g[:, :c] for g in gates], x, mean_lvl, ctx)
            mean_lvl = torch.clamp(mean_lvl + moved, 0, 255 * f)
            if cfg.colour_residual:
                mean_lvl = self.colour_residual_means([g[:, c:] for g in gates], x, mean_lvl)
        if log_scale_shift is not None:
            scale = scale * log_scale_shift.exp()
        return discretized_logistic_logp(x, mean_lvl / f, scale)

    def colour_residual_means(self, pre: list[torch.Tensor], x: torch.Tensor, mean_lvl: torch.Tensor) -> torch.Tensor:
        """Final means (1/F pixel) after the colour residual, as the exact model computes them channel by
        channel: G += floor((h0 (F R - mean_R) + 32) / 64), then B += floor((h1 (F R - mean_R) + h2 (F G -
        mean_G) + 32) / 64) with G's final mean; h = 0 on phase 0."""
        f, hi = self.cfg.mean_frac, 255 * self.cfg.mean_frac
        h = torch.zeros_like(x)
        head = self.heads["rcoef"]
        for k, p in enumerate(pre, start=1):
            phases.view(h, 4, k)[:] = head.level(p) - (head.levels // 2)
        r0 = x[:, 0] * f - mean_lvl[:, 0]
        d = h[:, 0] * r0
        mg = torch.clamp(mean_lvl[:, 1] + fq_div64(d), 0, hi)
        d = h[:, 1] * r0 + h[:, 2] * (x[:, 1] * f - mg)
        mb = torch.clamp(mean_lvl[:, 2] + fq_div64(d), 0, hi)
        return torch.stack([mean_lvl[:, 0], mg, mb], dim=1)

    def forward(self, x: torch.Tensor, free_bits: float = 0.0, known: torch.Tensor | None = None,
                q1: tuple[torch.Tensor, torch.Tensor] | None = None, log_scale_shift: torch.Tensor | None = None,
                calibration_shifts: int = 0, calibration_per_step: bool = False, calibration_per_band: bool = False
                ) -> dict[str, torch.Tensor]:
        """Negative ELBO of a batch of 32x32 blocks x (B, C, 32, 32), pixel values 0..255 as float; or of
        bordered blocks (B, C, 33, 33) with known (B, 1, 33, 33) (blocks.bordered: the next blocks' first row
        and column, 1 where they exist), whose border only the neighbour predictor reads, as the codec's
        container v8 does. The networks are convolutional, so 64x64 and 128x128 blocks (65x65, 129x129
        bordered) work the same way, as the codec codes them from container v15 on.

        q1: (mean, scale) of q(z1|x) to use instead of the encoder's, e.g. optimised per block to measure
        what the amortised encoder leaves (bench/inference_gap.py).
        calibration_shifts: n > 0 trains toward the coded objective: each block's pixel term is taken at the
        best of 2n + 1 scale shifts per channel (-n..n of the coding grid's scale levels, as the codec's
        per-image shifts, coding/adapt.py), chosen without gradient; 'loss' uses it, 'bpd' stays the plain
        -ELBO. The codec fits such shifts to every image, so a model trained without them spends capacity on
        the global calibration that the shifts give for free (docs/MODEL_CARD.md, stage 18).
        calibration_per_step: choose the shift per (block, coding step, channel) instead of per (block, channel):
        the codec's per-image scale correction differs by step too (its scale shifts are per phase, channel and
        band of scale level; its blends and surprise context add scale shifts per step, channel and class).
        calibration_per_band: choose it per (block, pixel phase, channel, third of the scale grid that the
        pixel's own scale level falls in): the grouping of the codec's scale shifts (coding/adapt.py).

        Returns bits per dimension: 'loss' (with free bits, for training), 'bpd' (the true -ELBO) and
        'bpd_each' (the -ELBO of each block, for importance-weighted bounds).
        """
        cfg = self.cfg
        side = x.shape[-1] // 2 * 2  # blocks of any even side; an odd side is a block with its border
        ctx = (x, known if known is not None else torch.ones_like(x[:, :1])) if x.shape[-1] > side else None
        x = x[..., :side, :side]
        n, dims = x.shape[0], x[0].numel()
        zs, logq = self.sample_posterior(x, q1)
        kls = []
        # priors: top is logistic(0, 1) on the quantized grid
        mean_lvl, scale_lvl = top_prior_levels(cfg)
        mu_top = (mean_lvl / cfg.mean_frac - (cfg.z_bins / 2 - 0.5)) * cfg.z_delta
        s_top = z_scale_value(cfg, torch.tensor(float(scale_lvl)))
        logp = [None] * cfg.nz
        logp[-1] = logistic_logpdf(zs[-1], torch.tensor(mu_top), s_top)
        for i in range(cfg.nz - 1):
            mu, s = self.latent_params(self.p_nets[i](self.z_to_input(zs[i + 1])))
            logp[i] = logistic_logpdf(zs[i], mu, s)
        pre, gates = self.pixel_pre(self.z_to_input(zs[0]), x)
        if calibration_shifts > 0:  # the middle shift is the plain term: one pixel_logp gives both
            step = cfg.x_log_scale_grid()[1]
            grid = torch.arange(-calibration_shifts, calibration_shifts + 1, device=x.device, dtype=x.dtype) * step
            shifts = grid.view(-1, 1, 1, 1, 1) + (0.0 if log_scale_shift is None else log_scale_shift)
            lp = self.pixel_logp(pre, x, gates, ctx, shifts)  # (S, B, C, H, W)
            logpx = lp[calibration_shifts].flatten(1).sum(1)
            if calibration_per_band:  # each: (S, B, C, groups), the pixel term per shift and group
                each = torch.einsum("sbch,bchg->sbcg", lp.flatten(3), self.phase_band_onehot(pre, side))
            elif calibration_per_step:
                each = lp.flatten(3) @ step_onehot(cfg.pixel_phases, side, x.device, x.dtype)
            else:
                each = lp.flatten(3).sum(3, keepdim=True)
            logpx_fit = each.gather(0, each.detach().argmax(0, keepdim=True))[0].sum((1, 2))
        else:
            logpx = logpx_fit = self.pixel_logp(pre, x, gates, ctx, log_scale_shift).flatten(1).sum(1)
        for i in range(cfg.nz):
            kls.append((logq[i] - logp[i]).sum(dim=(2, 3)))  # (B, channels) nats
        kl = torch.stack(kls, 1)  # (B, nz, zc)
        nelbo = -logpx + kl.sum(dim=(1, 2))
        scale = 1.0 / (dims * math.log(2.0))
        kl_mean = kl.mean(0)
        if free_bits > 0:
            kl_term = torch.clamp(kl_mean, min=free_bits * math.log(2.0)).sum()
        else:
            kl_term = kl_mean.sum()
        loss = (-logpx_fit.mean() + kl_term) * scale
        return {
            "loss": loss,
            "bpd": nelbo.mean() * scale,
            "bpd_each": nelbo * scale,
            "bpd_x": -logpx.mean() * scale,
            "bpd_z": kl.sum(dim=(1, 2)).mean() * scale,
            "n": torch.tensor(n),
        }
