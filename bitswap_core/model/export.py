"""Float (trained) model -> the integer tensors of the exact model, the act LUT and the CDF tables.

Everything the coder's probabilities depend on is computed here once, in float64, and then shipped:
decoding never recomputes it, so no libm or device difference can change a single probability.
"""

from __future__ import annotations

import numpy as np
import torch

from bitswap_core.coding.tables import x_table, z_table
from bitswap_core.model.float_model import BitSwapModel, Net, QConv
from bitswap_core.model.quant import REQUANT_SHIFT, S_ACT, S_STREAM, act_lut, heads_for, multiplier


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


def _blocks_tensors(out: dict[str, np.ndarray], prefix: str, blocks) -> None:
    """The residual blocks of a network's trunk or a phase head, as {prefix}.blocks.{j}.conv1/2."""
    for j, blk in enumerate(blocks):
        _stream_conv(out, f"{prefix}.blocks.{j}.conv1", blk.conv1)
        _stream_conv(out, f"{prefix}.blocks.{j}.conv2", blk.conv2)


def _net_tensors(prefix: str, net: Net, head_groups: list[tuple[str, int]], heads) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    _stream_conv(out, f"{prefix}.conv_in", net.conv_in)
    _blocks_tensors(out, prefix, net.blocks)
    _output_conv(out, f"{prefix}.conv_out", net.conv_out, head_groups, heads)
    return out


def _head_groups(cfg) -> tuple[list, list, list]:
    """(head name, channels) of each output conv, in channel order: latent networks, p(x|z1), and a later
    pixel phase (p(x|z1)'s groups per colour, then the neighbour predictor's weight and the colour residual's)."""
    zc, xc = cfg.z_channels, cfg.x_channels
    lat = [("z_mean", zc), ("z_scale", zc)]
    px = [("x_mean", xc), ("x_scale", xc)] + ([("coef", xc)] if cfg.channel_conditional else [])
    phase = [(name, cfg.channels) for name, _ in px] + ([("gate", cfg.channels)] if cfg.phase_predictor else [])
    phase += [("rcoef", cfg.channels)] if cfg.colour_residual else []
    return lat, px, phase


def export_tensors(model: BitSwapModel) -> dict[str, np.ndarray]:
    """All integer tensors of the exact model (keys are stable; see exact.py)."""
    cfg = model.cfg
    heads = heads_for(cfg)
    lat, px, phase_groups = _head_groups(cfg)
    tensors: dict[str, np.ndarray] = {}
    for i, net in enumerate(model.q_nets):
        tensors.update(_net_tensors(f"q{i}", net, lat, heads))
    for i, net in enumerate(model.p_nets):
        tensors.update(_net_tensors(f"p{i}", net, lat, heads))
    tensors.update(_net_tensors("px", model.px_net, px, heads))
    for k, head in enumerate(model.phase_heads, start=1):
        _stream_conv(tensors, f"px.phase{k}.ctx_in", head.ctx_in)
        _blocks_tensors(tensors, f"px.phase{k}", head.blocks)
        _output_conv(tensors, f"px.phase{k}.conv_out", head.conv_out, phase_groups, heads)
    tensors["act_lut"] = act_lut().astype(np.int8)
    tensors["table_z"] = z_table(cfg)
    tensors["table_x"] = x_table(cfg)
    assert S_ACT > 0
    return tensors


# ---- the way back: an exact model file -> float weights that export to it (warm starts) ----


def _inverse_head(head, u: np.ndarray) -> np.ndarray:
    """g^-1 of a monotone head at the level boundaries u (pre-activation values)."""
    if head.kind == "logscale":
        return head.a + np.log(np.expm1(u * head.b))
    if head.kind == "tanh":
        return np.arctanh(np.clip(u / head.a - 1.0, -1 + 1e-12, 1 - 1e-12))
    raise ValueError(head.kind)


def _fit_thresholds(head, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (accumulator scale, bias integer) that the thresholds came from.

    thr[c, i-1] = ceil(g^-1(i - 0.5) / scale - bias), so a straight line through the finite thresholds
    gives 1/scale and -bias; channels with fewer than two finite thresholds borrow the median scale.
    """
    y = _inverse_head(head, np.arange(1, head.levels, dtype=np.float64) - 0.5)
    thr = thr.astype(np.float64)
    finite = np.abs(thr) < 2.0**37  # the bisection's +-2**38 sentinels mark levels no value reaches
    scales = np.full(thr.shape[0], np.nan)
    biases = np.zeros(thr.shape[0])
    for c in np.flatnonzero(finite.sum(1) >= 2):
        slope, icpt = np.polyfit(y[finite[c]], thr[c, finite[c]] - 0.5, 1)
        if slope > 0:
            scales[c], biases[c] = 1.0 / slope, -icpt
    fallback = np.nanmedian(scales) if np.isfinite(scales).any() else 1e-3
    for c in np.flatnonzero(~np.isfinite(scales)):
        scales[c] = fallback
        if finite[c].any():
            i = np.argmax(finite[c])
            biases[c] = y[i] / fallback - thr[c, i]
    return scales, np.round(biases)


def _set_conv(conv: QConv, w_int: np.ndarray, s_w: np.ndarray, b_int: np.ndarray) -> None:
    w = torch.from_numpy(w_int.astype(np.float64) * s_w[:, None, None, None]).float()
    with torch.no_grad():
        conv.v.copy_(w)
        conv.g.copy_(w.flatten(1).norm(dim=1))
        conv.bias.copy_(torch.from_numpy(b_int * s_w * conv.in_scale).float())


def _load_stream_conv(t: dict[str, np.ndarray], name: str, conv: QConv) -> None:
    s_w = t[f"{name}.m"].astype(np.float64) / 2.0**REQUANT_SHIFT * S_STREAM / conv.in_scale
    _set_conv(conv, t[f"{name}.w"], s_w, t[f"{name}.b"].astype(np.float64))


def _load_output_conv(t: dict[str, np.ndarray], name: str, conv: QConv, head_groups, heads) -> None:
    scales, biases = [], []
    for head_name, _ in head_groups:
        head = heads[head_name]
        aff = t.get(f"{name}.aff.{head_name}")
        if aff is not None:  # alpha = a * scale, beta = alpha * bias + b + 0.5
            alpha, beta = aff[:, 0].astype(np.float64), aff[:, 1].astype(np.float64)
            scales.append(alpha / head.a)
            biases.append(np.round((beta - head.b - 0.5) / alpha))
        else:
            sc, bi = _fit_thresholds(head, t[f"{name}.thr.{head_name}"])
            scales.append(sc)
            biases.append(bi)
    _set_conv(conv, t[f"{name}.w"], np.concatenate(scales) / conv.in_scale, np.concatenate(biases))


def _load_blocks(t: dict[str, np.ndarray], prefix: str, blocks) -> None:
    for j, blk in enumerate(blocks):
        _load_stream_conv(t, f"{prefix}.blocks.{j}.conv1", blk.conv1)
        _load_stream_conv(t, f"{prefix}.blocks.{j}.conv2", blk.conv2)


def _load_net(t: dict[str, np.ndarray], prefix: str, net: Net, head_groups, heads) -> None:
    _load_stream_conv(t, f"{prefix}.conv_in", net.conv_in)
    _load_blocks(t, prefix, net.blocks)
    _load_output_conv(t, f"{prefix}.conv_out", net.conv_out, head_groups, heads)


def import_tensors(model: BitSwapModel, tensors: dict[str, np.ndarray]) -> None:
    """Set a float model's weights from an exact model's tensors (the inverse of export_tensors).

    Training checkpoints are not shipped, so this is how a new run warm-starts from a shipped model: the
    weights come back exactly (int8 times the recovered scale), biases exactly where a mean head stores
    them and within a rounding step where only thresholds do, so the model re-exports to (nearly) itself.
    """
    cfg = model.cfg
    heads = heads_for(cfg)
    lat, px, phase_groups = _head_groups(cfg)
    for i, net in enumerate(model.q_nets):
        _load_net(tensors, f"q{i}", net, lat, heads)
    for i, net in enumerate(model.p_nets):
        _load_net(tensors, f"p{i}", net, lat, heads)
    _load_net(tensors, "px", model.px_net, px, heads)
    for k, head in enumerate(model.phase_heads, start=1):
        _load_stream_conv(tensors, f"px.phase{k}.ctx_in", head.ctx_in)
        _load_blocks(tensors, f"px.phase{k}", head.blocks)
        _load_output_conv(tensors, f"px.phase{k}.conv_out", head.conv_out, phase_groups, heads)
