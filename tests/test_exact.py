"""The exact integer convolution: every path gives the same integers for any batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
