"""The surprise context (container v16): a pixel's scale level moves by its class of the decoded
neighbours' errors; integer scores that encoder and decoder compute alike, a header section that is
checked, exact round trips, and a fit that pays on a photo."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo_crop
from PIL import Image

import bitswap_core
from bitswap_core import container
from bitswap_core.coding import adapt, surprise
from bitswap_core.coding.bitsback import decode_images, encode_images
from bitswap_core.coding.rans import AnsCoder, Table
from bitswap_core.coding.tables import logistic_cdf_table
from bitswap_core.errors import CorruptPayloadError
from bitswap_core.registry import resolve

FIXTURE = Path(__file__).parent / "data" / "default-42aaf5c8-usc-4.2.07-96x96-v15.bsw"


def test_pixel_errors_count_the_scales_the_error_exceeds() -> None:
    """For a logistic row of scale s the count is the number of ERROR_STEPS multiples (0.5 ... 6) of s that
    |x - mean| exceeds, up to the half-bin the CDF midpoint stands for."""
    scales = np.array([0.6, 3.0, 10.0])
    table = Table(logistic_cdf_table(scales, 8, 256, 24), 256, 24)
    mults = np.array([0.5, 1, 1.5, 2, 3, 4, 6])
    for j, s in enumerate(scales):
        for frac in (0, 3):
            mean = 100 + frac / 8
            x = np.arange(256)
            got = surprise.pixel_errors(x, np.full(len(x), j * 8 + frac), np.full(len(x), 100), table)
            err = np.abs(x - mean) / s
            clear = np.all(np.abs(err[:, None] - mults) > 0.6 / s, axis=1)  # away from a step's edge
            assert np.array_equal(got[clear], (err[clear, None] > mults).sum(1))
            assert got.max() == 7 and got[np.argmin(np.abs(x - mean))] <= 1
    assert surprise.pixel_errors(np.array([0, 255]), np.array([16, 16]), np.array([255, 0]), table).tolist() == [7, 7]


def test_scores_average_the_decoded_in_block_neighbours() -> None:
    errors = torch.zeros((1, 1, 8, 8), dtype=torch.int64)
    errors[0, 0, 0::2, 0::2] = torch.arange(16).reshape(4, 4)  # phase (0,0), decoded first
    known = torch.ones_like(errors)
    score = surprise.scores((1, -1), errors, known)  # phase (1,1): its four diagonal (0,0) neighbours
    e = errors[0, 0, 0::2, 0::2].numpy()
    assert score[0, 0, 0] == (e[0, 0] + e[0, 1] + e[1, 0] + e[1, 1]) * 4 // 4
    assert score[0, 3, 3] == e[3, 3] * 4  # the last cell: only its own (0,0) pixel is in the block
    known[0, 0, :, 4:] = 0  # a block of 8 x 4 real pixels: the right half is padding
    assert surprise.scores((1, -1), errors, known)[0, 0, 1] == (e[0, 1] + e[1, 1]) * 4 // 2
    sub = surprise.scores((0, 1), errors, torch.ones_like(errors))  # phase (0,0)'s sub-phase (1,1)
    assert sub.shape == (1, 2, 2) and sub[0, 0, 0] == (e[0, 0] + e[0, 2] + e[2, 0] + e[2, 2])
    assert not surprise.scores((0, 0), errors, known).any()  # no decoded neighbour
    assert surprise.scores((1, -1), errors * 1000, torch.ones_like(errors)).max() == surprise.MAX_SCORE


def _shifts(rng) -> np.ndarray:
    s = rng.integers(-surprise.MAX_SHIFT, surprise.MAX_SHIFT + 1, (adapt.spike_shape(4, 3)[0], 3, surprise.CLASSES))
    s[0] = 0
    return s


def test_header_section_round_trips_and_malformed_ones_are_corrupt() -> None:
    rng = np.random.default_rng(5)
    a = adapt.Adaptation(surprise=_shifts(rng), surprise_edges=np.array([4, 4, 30]))
    head = adapt.to_bytes(a, 18)
    rows = adapt.spike_shape(4, 3)[0] - 1  # every coding step but the first
    assert len(head) == len(adapt.to_bytes(adapt.NONE, 18)) + surprise.CLASSES - 1 + rows * 3 * surprise.CLASSES
    back, rest = adapt.from_bytes(head + b"tail", 4, 3, 18)
    assert np.array_equal(back.surprise, a.surprise) and back.surprise_edges.tolist() == [4, 4, 30]
    assert rest == b"tail"
    assert adapt.from_bytes(adapt.to_bytes(replace(a, surprise=a.surprise * 0), 18), 4, 3, 18)[0].surprise_edges is None
    with pytest.raises(ValueError, match="cannot hold a surprise"):
        adapt.to_bytes(a, 15)
    for edges in (None, np.array([5, 4, 30]), np.array([4, 30]), np.array([1, 2, 300])):
        with pytest.raises(ValueError, match="ordered score edges"):
            adapt.to_bytes(replace(a, surprise_edges=edges), 18)
    base = adapt.to_bytes(adapt.NONE, 18)[:-2]  # less the surprise and residual feedback sections
    body = head[len(base) : -1]
    for bad, match in ((base, "surprise section is missing"), (base + b"\x03" + body[1:], "declares 3 classes"),
                       (base + body[:-1], "declares 4 classes"),
                       (base + body[:1] + bytes([9, 3, 30]) + body[4:], "not in order"),
                       (base + body[:4] + bytes([13]) + body[5:], "exceeds 12")):
        with pytest.raises(CorruptPayloadError, match=match):
            adapt.from_bytes(bad, 4, 3, 18)
    with pytest.raises(CorruptPayloadError, match="1-phase model"):
        adapt.from_bytes(base + body, 1, 3, 18)


def test_shifted_payloads_decode_exactly_alone_and_batched_with_images_without() -> None:
    """Random shifts in every class (most far from any fit) still decode exactly: encoder and decoder score
    the same pixels alike; an image without a surprise context in the same batch codes as alone."""
    bc = resolve(None).block_coder("bitswap")
    imgs = [np.asarray(photo_crop("waterloo-monarch.png", (0, 0, 70, 45))),
            np.asarray(photo_crop("usc-4.2.07.png", (20, 20, 84, 84)))]
    rng = np.random.default_rng(2)
    fitted = adapt.choose(bc, imgs, shock=0, latent=0)
    adaptations = [replace(fitted[0], surprise=_shifts(rng), surprise_edges=np.array([8, 16, 24])), fitted[1]]
    together = [c.to_bytes() for c in encode_images(bc, imgs, adaptations=adaptations)]
    alone = [encode_images(bc, [im], adaptations=[a])[0].to_bytes() for im, a in zip(imgs, adaptations)]
    assert together == alone
    assert together[0] != encode_images(bc, imgs[:1], adaptations=fitted[:1])[0].to_bytes()
    coders = [AnsCoder.from_bytes(d, bc.bed_words) for d in together]
    back = decode_images(bc, coders, [im.shape for im in imgs], adaptations)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, back))


def _half_noisy(size: int = 128) -> np.ndarray:
    """A photo whose right half carries sensor noise: how sure the model may be changes across the image."""
    arr = np.asarray(photo_crop("waterloo-monarch.png", (0, 0, size, size))).astype(np.int64)
    arr[:, size // 2 :] += np.random.default_rng(0).integers(-12, 13, (size, size // 2, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def test_the_fit_keeps_a_context_that_codes_a_photo_smaller() -> None:
    arr = _half_noisy()
    data = bitswap_core.compress(Image.fromarray(arr), smallest=False)
    box = container.unpack(data)
    a, _ = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == container.VERSION and a.surprise is not None
    assert list(a.surprise_edges) == sorted(a.surprise_edges)
    assert np.array_equal(np.asarray(bitswap_core.decompress(data)), arr)
    bc = resolve(None).block_coder("bitswap", 1, side=64)  # as the API codes it (api.phase_split_for, side_for)
    (fit,), (plain,) = adapt.choose(bc, [arr]), adapt.choose(bc, [arr], shock=0)
    assert plain.surprise is None and fit.surprise is not None
    sizes = [len(encode_images(bc, [arr], adaptations=[x])[0].to_bytes()) + len(adapt.to_bytes(x))
             for x in (fit, plain)]
    assert sizes[0] < 0.995 * sizes[1]


def test_v15_payload_decodes() -> None:
    """tests/data: the seventh default's container v15 payload of a 96x96 crop (in 64x64 blocks, no surprise
    section) still decodes exactly."""
    stored = FIXTURE.read_bytes()
    box = container.unpack(stored)
    assert box.version == 15
    img = photo_crop("usc-4.2.07.png", (100, 100, 196, 196))
    assert bitswap_core.decompress(stored).tobytes() == img.tobytes()
