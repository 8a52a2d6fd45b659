"""The exact integer convolution: every path gives the same integers for any batch size."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from bitswap_core.model import exact
from bitswap_core.model.exact import _Conv


@pytest.mark.parametrize("cin,max_in", [(64, 127), (12, 128), (8, 511), (200, 127)])
def test_im2col_and_tapwise_give_the_same_integers(cin, max_in):
    rng = np.random.default_rng(cin)
    w = rng.integers(-127, 128, (16, cin, 3, 3)).astype(np.int8)
    w[:, :, 1, 1] = 127  # worst case magnitudes
    conv = _Conv(w, None, None, max_in, "cpu")
    a = torch.from_numpy(rng.integers(-max_in, max_in + 1, (3, 16, 16, cin)).astype(np.float32))
    a[0] = max_in
    taps = conv._acc_taps(a)
    ref = torch.nn.functional.conv2d(a.double().permute(0, 3, 1, 2), torch.from_numpy(w.astype(np.float64)),
                                     padding=1).permute(0, 2, 3, 1)
    assert torch.equal(taps.double(), ref)  # float64 reference: exact for these magnitudes
    if conv.w_cols is None:  # the reduction would not stay exact in one matmul: only the tap-wise path
        assert 9 * cin * max_in * 127 >= 2**24
    else:
        assert torch.equal(conv._acc_im2col(a), taps)
        assert torch.equal(conv.acc(a[:1]), taps[:1])


@pytest.mark.parametrize("cin,lo,hi", [(64, -16, 127), (12, -128, 127), (27, -128, 127)])
def test_int8_product_gives_the_float_paths_integers(cin, lo, hi):
    """Convolutions whose inputs fit int8 (activations, pixels - 128) may run as one int8 product: the
    same integers as the float paths, for any batch, including every product at its extreme."""
    rng = np.random.default_rng(cin)
    w = rng.integers(-127, 128, (16, cin, 3, 3)).astype(np.int8)
    w[:, :, 1, 1] = 127
    conv = _Conv(w, None, None, max(-lo, hi), "cpu", int8_input=True)
    if conv.w8 is None:
        pytest.skip("this CPU's int8 product did not pass the probe: the float path is used")
    a = torch.from_numpy(rng.integers(lo, hi + 1, (5, 16, 16, cin)).astype(np.float32))
    a[0], a[1] = hi, lo
    int8 = conv.acc(a)
    assert int8.dtype == torch.float32
    assert torch.equal(int8, conv._acc_taps(a))
    assert torch.equal(conv.acc(a[2:3]), int8[2:3])


def test_int8_product_is_off_when_disabled_or_for_wide_inputs(monkeypatch):
    w = np.ones((4, 8, 3, 3), np.int8)
    assert _Conv(w, None, None, 511, "cpu").w8 is None  # latent inputs (2 * bin - bins + 1) do not fit int8
    monkeypatch.setenv(exact.INT8_ENV, "0")
    assert not exact._int8_product_is_exact(72, 4)
    assert _Conv(w, None, None, 127, "cpu", int8_input=True).w8 is None


def test_a_wrong_int8_product_is_caught_by_the_probe(monkeypatch):
    """A kernel that saturates pairs of products in int16 (as int8 GEMMs without dot-product instructions
    may) must never be used: the probe sees it and the float path stays."""
    def saturating(a, b):  # s8 -> u8 (+128), u8 x s8 pairs added in int16 with saturation, compensated
        b64 = b.to(torch.int64)
        prod = (a.to(torch.int64) + 128)[:, :, None] * b64[None]
        k = prod.shape[1] // 2 * 2
        pairs = prod[:, :k:2] + prod[:, 1:k:2]
        out = pairs.clamp(-(2**15), 2**15 - 1).sum(1) + prod[:, k:].sum(1) - 128 * b64.sum(0)
        return out.to(torch.int32)

    a, w = torch.randint(-16, 100, (8, 72), dtype=torch.int8), torch.randint(-60, 60, (72, 4), dtype=torch.int8)
    assert torch.equal(saturating(a, w), a.to(torch.int64) @ w.to(torch.int64))  # exact on small values

    monkeypatch.setattr(torch, "_int_mm", saturating)
    exact._probe_int8_product.cache_clear()  # probed again with this kernel, and after the test
    monkeypatch.setattr(exact, "_probe_int8_product", functools.cache(exact._probe_int8_product.__wrapped__))
    assert not exact._int8_product_is_exact(72, 4)
    assert _Conv(np.full((4, 8, 3, 3), 127, np.int8), None, None, 127, "cpu", int8_input=True).w8 is None
