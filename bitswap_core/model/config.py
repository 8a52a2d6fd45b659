"""Model hyper-parameters. Everything the codec must agree on is here or in the model file's tensors."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 3  # image channels (3 = RGB)
    nz: int = 2  # latent layers
    z_channels: int = 8  # each latent layer is z_channels x 16 x 16
    width: int = 64  # ResNet width
    res_blocks: int = 2  # residual blocks per network (every network: q(z1|x), q(z_i+1|z_i), p(...))
    processing_blocks: int = 0  # extra 5x5 residual blocks at the x<->z1 interface (original: 4)
    channel_conditional: bool = True  # p(x|z1): R, then G|R, then B|R,G with linear mean coefficients
    # p(x|z1) over 1 or 4 spatial phases: with 4, the pixels of each 2x2 cell are coded in the order
    # (0,0), (1,1), (0,1), (1,0), each phase conditioned on z1 and on the already coded phases around it
    # (a 3x3 window in the 16x16 squeezed grid), so decoding stays parallel over 1/4 of the pixels per step.
    pixel_phases: int = 1
    # With 4 phases: each later phase's pixel mean moves by g * (mean of its already coded neighbours - mean),
    # g in [-1, 1] predicted per pixel (like the colour coefficients). The exact linear path lets flat
    # areas and smooth ramps cost almost nothing, which the quantized activations alone cannot express.
    phase_predictor: bool = False
    # With the predictor: G's and B's means on later phases also move by the residuals of the channels coded
    # before them at the same pixel (mean_G += h * (R - mean_R), mean_B += h1 * (R - mean_R) + h2 * (G -
    # mean_G), h in [-1, 1] per pixel): once the predictor interpolates, the colour term on raw values
    # (channel_conditional) no longer carries over, while neighbours' colour differences do.
    colour_residual: bool = False
    # With 4 phases: residual blocks (two 3x3 convs each) in every later phase's head after its pixel context
    # joins the trunk's stream: the context otherwise reaches the outputs through one nonlinearity and a 5x5
    # window of the squeezed grid; each block adds depth and widens the window by 4. Their second convs start
    # at zero, so a model without them warm-starts one with them unchanged.
    phase_blocks: int = 0
    # Extra residual blocks at the end of q(z1|x)'s trunk (the encoder): a per-block optimised q beats the
    # amortised one by about 0.2 bpd (docs/MODEL_CARD.md, "Experiment Q"), an inference gap that only the
    # encoder pays for. It runs once per block when encoding and decoding, unlike the pixel phases. Their
    # second convs start at zero, so a model without them warm-starts one with them unchanged.
    encoder_blocks: int = 0
    # Coding grid (ships with the model; changing it changes the model id).
    z_bins: int = 512  # latent values are bins of width z_range*2/z_bins in [-z_range, z_range)
    z_range: float = 8.0
    mean_frac: int = 8  # distribution means are quantized to 1/mean_frac of a bin
    z_scales: int = 64  # log-uniform latent scale levels in [z_scale_min, z_scale_max]
    z_scale_min: float = 0.1
    z_scale_max: float = 4.0
    x_scales: int = 96  # pixel scale levels (pixel units) in [x_scale_min, x_scale_max]
    x_scale_min: float = 0.12
    x_scale_max: float = 96.0
    precision: int = 24  # ANS probability precision in bits

    block: int = 32  # fixed: blocks are 32x32, squeezed to 16x16

    @property
    def z_delta(self) -> float:
        return 2.0 * self.z_range / self.z_bins

    @property
    def x_channels(self) -> int:
        return self.channels * 4

    @property
    def z_dims(self) -> int:
        return self.z_channels * (self.block // 2) ** 2

    def z_log_scale_grid(self) -> tuple[float, float]:
        lo, hi = math.log(self.z_scale_min), math.log(self.z_scale_max)
        return lo, (hi - lo) / (self.z_scales - 1)

    def x_log_scale_grid(self) -> tuple[float, float]:
        lo, hi = math.log(self.x_scale_min), math.log(self.x_scale_max)
        return lo, (hi - lo) / (self.x_scales - 1)

    def to_json(self) -> str:
        """Canonical JSON (it feeds the model id). Fields added later are left out at their neutral value,
        so the ids of models saved before they existed do not change."""
        data = {k: v for k, v in asdict(self).items() if not (k in _ADDED_FIELDS and v == _ADDED_FIELDS[k])}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**data)

    def validate(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError("channels must be 1 or 3")
        if self.nz < 1 or self.z_channels < 1 or self.width < 8:
            raise ValueError("nz, z_channels must be >= 1 and width >= 8")
        if self.z_bins < 16 or self.z_bins > 4096 or self.z_bins % 2:
            raise ValueError("z_bins must be even, in [16, 4096]")
        if self.mean_frac < 1 or self.mean_frac & (self.mean_frac - 1) or self.mean_frac % 2 and self.mean_frac > 1:
            raise ValueError("mean_frac must be a power of two")
        if not 16 <= self.precision <= 28:
            raise ValueError("precision must be in [16, 28]")
        if self.pixel_phases not in (1, 4):
            raise ValueError("pixel_phases must be 1 or 4")
        if self.phase_predictor and self.pixel_phases != 4:
            raise ValueError("phase_predictor needs pixel_phases = 4")
        if self.colour_residual and not (self.phase_predictor and self.channels == 3):
            raise ValueError("colour_residual needs phase_predictor and 3 channels")
        if self.phase_blocks and (self.pixel_phases != 4 or not 0 <= self.phase_blocks <= 8):
            raise ValueError("phase_blocks needs pixel_phases = 4 and is at most 8")
        if not 0 <= self.encoder_blocks <= 8:
            raise ValueError("encoder_blocks must be in [0, 8]")
        if self.block != 32:
            raise ValueError("block must be 32")


_ADDED_FIELDS = {"pixel_phases": 1, "phase_predictor": False, "colour_residual": False, "phase_blocks": 0,
                 "encoder_blocks": 0}

PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(nz=2, z_channels=4, width=16, res_blocks=1),  # tests only
    "tiny-phases": ModelConfig(nz=2, z_channels=4, width=16, res_blocks=1, pixel_phases=4),  # tests only
    "tiny-predictor": ModelConfig(nz=2, z_channels=4, width=16, res_blocks=1, pixel_phases=4,
                                  phase_predictor=True),  # tests only
    "tiny-residual": ModelConfig(nz=2, z_channels=4, width=16, res_blocks=1, pixel_phases=4,
                                 phase_predictor=True, colour_residual=True),  # tests only
    "tiny-deep": ModelConfig(nz=2, z_channels=4, width=16, res_blocks=1, pixel_phases=4, phase_predictor=True,
                             colour_residual=True, phase_blocks=1),  # tests only
    "tiny-encoder": ModelConfig(nz=2, z_channels=4, width=16, res_blocks=1, pixel_phases=4, phase_predictor=True,
                                colour_residual=True, phase_blocks=1, encoder_blocks=1),  # tests only
    "small": ModelConfig(nz=2, width=64, res_blocks=2),  # the first shipped default (1 pixel phase)
    "phases": ModelConfig(nz=2, width=64, res_blocks=2, pixel_phases=4),  # the second default (v2)
    # the third default: 4 pixel phases plus the neighbour predictor
    "predictor": ModelConfig(nz=2, width=64, res_blocks=2, pixel_phases=4, phase_predictor=True),
    # the fourth and fifth (current) defaults: the third plus the colour residual (docs/MODEL_CARD.md)
    "default": ModelConfig(nz=2, width=64, res_blocks=2, pixel_phases=4, phase_predictor=True,
                           colour_residual=True),
    # the default plus one or two residual blocks in each later phase's head (experiments P1, P2,
    # docs/MODEL_CARD.md)
    "deep-phases": ModelConfig(nz=2, width=64, res_blocks=2, pixel_phases=4, phase_predictor=True,
                               colour_residual=True, phase_blocks=1),
    "deeper-phases": ModelConfig(nz=2, width=64, res_blocks=2, pixel_phases=4, phase_predictor=True,
                                 colour_residual=True, phase_blocks=2),
    "deepest-phases": ModelConfig(nz=2, width=64, res_blocks=2, pixel_phases=4, phase_predictor=True,
                                  colour_residual=True, phase_blocks=3),
    # the shipped default with two more residual blocks in the encoder q(z1|x) (experiment Q)
    "deep-encoder": ModelConfig(nz=2, width=64, res_blocks=2, pixel_phases=4, phase_predictor=True,
                                colour_residual=True, phase_blocks=1, encoder_blocks=2),
    # the shipped default (deep-phases) with a third latent layer: a learned prior for z2 (experiment T)
    "three-layers": ModelConfig(nz=3, width=64, res_blocks=2, pixel_phases=4, phase_predictor=True,
                                colour_residual=True, phase_blocks=1),
    # The published ImageNet configuration (Kingma et al. 2019), expressible but far beyond this CPU.
    "imagenet": ModelConfig(nz=4, width=256, res_blocks=2, processing_blocks=4, channel_conditional=False,
                            z_bins=1024),
}
