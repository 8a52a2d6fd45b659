"""Integer arithmetic shared by the float (training) model and the exact (coding) model.

The float model rounds with straight-through gradients at exactly the places the exact model rounds, so
that what is trained is what codes. Tensors called *_int hold integers (stored as float32 when they feed
a matmul, int64 otherwise).

Value conventions
- residual stream: integer t, real value t * S_STREAM, |t| <= STREAM_MAX
- conv inputs ("activations"): integer a in [ACT_MIN, ACT_MAX], real value a * S_ACT; a = round(elu(t*S_STREAM)/S_ACT)
- pixels enter as x - 128 (scale 1/128); latents as 2*bin - K + 1 (scale delta/2, the bin centre)
- weights: int8-range integers per output channel with a float scale; |w| <= 127
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

S_STREAM = 1.0 / 32.0
STREAM_MAX = 4095
S_ACT = 1.0 / 16.0
ACT_MIN, ACT_MAX = -16, 127
W_MAX = 127
X_IN_SCALE = 1.0 / 128.0
REQUANT_SHIFT = 32
COEF_LEVELS = 129  # channel-conditional mean coefficients in [-1, 1] step 1/64


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q in the forward pass, the gradient of x in the backward pass."""
    return x + (q - x).detach()


def fq_round(x: torch.Tensor) -> torch.Tensor:
    return ste(x, round_half_up(x))


def elu_np(v: np.ndarray) -> np.ndarray:
    return np.where(v > 0, v, np.expm1(np.minimum(v, 0.0)))


def act_lut() -> np.ndarray:
    """a = clamp(round(elu(t * S_STREAM) / S_ACT)) for every stream value t; computed once, shipped."""
    t = np.arange(-STREAM_MAX, STREAM_MAX + 1, dtype=np.float64)
    return np.clip(np.floor(elu_np(t * S_STREAM) / S_ACT + 0.5), ACT_MIN, ACT_MAX).astype(np.int64)


def fq_act(t: torch.Tensor) -> torch.Tensor:
    """Float twin of act_lut (t: integer stream values)."""
    return torch.clamp(fq_round(F.elu(t * S_STREAM) / S_ACT), ACT_MIN, ACT_MAX)


def fq_stream(pre: torch.Tensor) -> torch.Tensor:
    """Real conv output -> integer stream value."""
    return torch.clamp(fq_round(pre / S_STREAM), -STREAM_MAX, STREAM_MAX)


def multiplier(scale: np.ndarray) -> np.ndarray:
    """Fixed-point multipliers M with M / 2**REQUANT_SHIFT ~= scale (scale < 0.5)."""
    if np.any(scale >= 0.5) or np.any(scale <= 0):
        raise ValueError("requantization scale out of range; weights too large for the fixed-point format")
    return np.round(scale * 2.0**REQUANT_SHIFT).astype(np.int64)


# ---- monotone output heads: conv output -> integer level, by thresholds shipped with the model ----


@dataclass(frozen=True)
class Head:
    """level = clamp(floor(g(pre) + 0.5), 0, levels - 1) for a monotone increasing g."""

    kind: str
    levels: int
    a: float = 0.0  # parameters of g, meaning depends on kind
    b: float = 0.0

    def g_torch(self, pre: torch.Tensor) -> torch.Tensor:
        if self.kind == "affine":  # g = a * pre + b
            return pre * self.a + self.b
        if self.kind == "logscale":  # g = softplus(pre - a) / b : smooth floor at log-scale a, step b
            return F.softplus(pre - self.a) / self.b
        if self.kind == "tanh":  # g = a * tanh(pre) + a
            return torch.tanh(pre) * self.a + self.a
        raise ValueError(self.kind)

    def g_np(self, pre: np.ndarray) -> np.ndarray:
        if self.kind == "affine":
            return pre * self.a + self.b
        if self.kind == "logscale":
            return np.logaddexp(0.0, pre - self.a) / self.b
        if self.kind == "tanh":
            return np.tanh(pre) * self.a + self.a
        raise ValueError(self.kind)

    def level(self, pre: torch.Tensor) -> torch.Tensor:
        """Float twin (straight-through) of the exact thresholded level."""
        return torch.clamp(fq_round(self.g_torch(pre)), 0, self.levels - 1)

    def thresholds(self, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Integer thresholds t[c, i-1] = min v such that level((v + bias[c]) * scale[c]) >= i.

        Found by bisection on integers in float64, once at export; the exact model then only compares
        integers (searchsorted), so no transcendental function is evaluated while coding.
        """
        c = scale.shape[0]
        targets = np.arange(1, self.levels, dtype=np.float64) - 0.5  # g(pre) >= i - 0.5
        lo = np.full((c, self.levels - 1), -(2**38), dtype=np.int64)
        hi = np.full((c, self.levels - 1), 2**38, dtype=np.int64)
        sc = scale[:, None].astype(np.float64)
        bi = bias[:, None].astype(np.float64)
        for _ in range(40):
            mid = (lo + hi) // 2
            ok = self.g_np((mid + bi) * sc) >= targets
            hi = np.where(ok, mid, hi)
            lo = np.where(ok, lo, mid)
        return hi  # hi satisfies (or is the +2**38 sentinel), lo does not


def heads_for(cfg) -> dict[str, Head]:
    """The heads of every network output; their parameters are part of the coding format."""
    z_lo, z_step = cfg.z_log_scale_grid()
    x_lo, x_step = cfg.x_log_scale_grid()
    k, f = cfg.z_bins, cfg.mean_frac
    return {
        # latent mean in units of 1/F bin, bins centred at integer positions
        "z_mean": Head("affine", (k - 1) * f + 1, a=f / cfg.z_delta, b=(k / 2 - 0.5) * f),
        "z_scale": Head("logscale", cfg.z_scales, a=z_lo, b=z_step),
        # pixel mean in units of 1/F of a pixel value; pre in [-1, 1] covers [0, 255]
        "x_mean": Head("affine", 255 * f + 1, a=127.5 * f, b=127.5 * f),
        "x_scale": Head("logscale", cfg.x_scales, a=x_lo, b=x_step),
        "coef": Head("tanh", COEF_LEVELS, a=(COEF_LEVELS - 1) / 2),
        "gate": Head("tanh", COEF_LEVELS, a=(COEF_LEVELS - 1) / 2),  # neighbour predictor weight, same grid
        "rcoef": Head("tanh", COEF_LEVELS, a=(COEF_LEVELS - 1) / 2),  # colour residual weights, same grid
    }


def top_prior_levels(cfg) -> tuple[int, int]:
    """(mean level, scale level) of the fixed top prior logistic(0, 1)."""
    z_lo, z_step = cfg.z_log_scale_grid()
    mean = int(round((cfg.z_bins / 2 - 0.5) * cfg.mean_frac))
    scale = int(round((0.0 - z_lo) / z_step))
    return mean, min(max(scale, 0), cfg.z_scales - 1)


def z_scale_value(cfg, level: torch.Tensor) -> torch.Tensor:
    lo, step = cfg.z_log_scale_grid()
    return torch.exp(lo + level * step)


def x_scale_value(cfg, level: torch.Tensor) -> torch.Tensor:
    lo, step = cfg.x_log_scale_grid()
    return torch.exp(lo + level * step)


def reduction_chunk(max_abs_input: int) -> int:
    """Longest dot product whose every partial sum stays an exact float32 integer (< 2**24)."""
    return max(1, (2**24 - 1) // (max_abs_input * W_MAX))
