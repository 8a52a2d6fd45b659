"""Float (trained) model -> the integer tensors of the exact model, the act LUT and the CDF tables.

Everything the coder's probabilities depend on is computed here once, in float64, and then shipped:
decoding never recomputes it, so no libm or device difference can change a single probability.
"""

from __future__ import annotations

import numpy as np
import torch

from bitswap_core.coding.tables import x_table, z_table
from bitswap_core.model.float_model import BitSwapModel, Net, QConv
from bitswap_core.model.quant import S_ACT, S_STREAM, act_lut, heads_for, multiplier


def _conv_tensors(conv: QConv) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    with torch.no_grad():
        w_int, s_w, b_int = conv.quantized()
    w = w_int.double().numpy().astype(np.int64)
    scale = s_w.double().numpy() * conv.in_scale
    b = b_int.double().numpy().astype(np.int64)
    return {"w": w.astype(np.int8), "b": b}, scale, b


def _stream_conv(out: dict[str, np.ndarray], name: str, conv: QConv) -> None:
    """A conv that requantizes into the residual stream: int8 weights, bias, fixed-point multiplier."""
    t, scale, _ = _conv_tensors(conv)
    out[f"{name}.w"] = t["w"]
    out[f"{name}.b"] = t["b"]
    out[f"{name}.m"] = multiplier(scale / S_STREAM)


def _output_conv(out: dict[str, np.ndarray], name: str, conv: QConv, head_groups: list[tuple[str, int]],
                 heads) -> None:
    """An output conv whose accumulators go straight to heads (affine floors or integer thresholds)."""
    t, scale, b = _conv_tensors(conv)
    out[f"{name}.w"] = t["w"]
    c0 = 0
    for head_name, n in head_groups:
        head, sc, bi = heads[head_name], scale[c0 : c0 + n], b[c0 : c0 + n]
        if head.kind == "affine":  # level = floor(acc * alpha + beta), beta includes the +0.5
            alpha = head.a * sc
            aff = np.stack([alpha, alpha * bi + head.b + 0.5], 1)
            out[f"{name}.aff.{head_name}"] = aff.astype(np.float32)
        else:  # any monotone map: integer thresholds, compared exactly
            out[f"{name}.thr.{head_name}"] = head.thresholds(sc, bi).astype(np.int64)
        c0 += n
    assert c0 == conv.v.shape[0]


def _net_tensors(prefix: str, net: Net, head_groups: list[tuple[str, int]], heads) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    _stream_conv(out, f"{prefix}.conv_in", net.conv_in)
    for j, blk in enumerate(net.blocks):
        _stream_conv(out, f"{prefix}.blocks.{j}.conv1", blk.conv1)
        _stream_conv(out, f"{prefix}.blocks.{j}.conv2", blk.conv2)
    _output_conv(out, f"{prefix}.conv_out", net.conv_out, head_groups, heads)
    return out


def export_tensors(model: BitSwapModel) -> dict[str, np.ndarray]:
    """All integer tensors of the exact model (keys are stable; see exact.py)."""
    cfg = model.cfg
    heads = heads_for(cfg)
    zc, xc = cfg.z_channels, cfg.x_channels
    lat = [("z_mean", zc), ("z_scale", zc)]
    px = [("x_mean", xc), ("x_scale", xc)] + ([("coef", xc)] if cfg.channel_conditional else [])
    tensors: dict[str, np.ndarray] = {}
    for i, net in enumerate(model.q_nets):
        tensors.update(_net_tensors(f"q{i}", net, lat, heads))
    for i, net in enumerate(model.p_nets):
        tensors.update(_net_tensors(f"p{i}", net, lat, heads))
    tensors.update(_net_tensors("px", model.px_net, px, heads))
    phase_groups = [(name, cfg.channels) for name, _ in px]
    for k, head in enumerate(model.phase_heads, start=1):
        _stream_conv(tensors, f"px.phase{k}.ctx_in", head.ctx_in)
        _output_conv(tensors, f"px.phase{k}.conv_out", head.conv_out, phase_groups, heads)
    tensors["act_lut"] = act_lut().astype(np.int8)
    tensors["table_z"] = z_table(cfg)
    tensors["table_x"] = x_table(cfg)
    assert S_ACT > 0
    return tensors
