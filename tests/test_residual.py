"""Residual feedback (coding/residual.py, container v17): a pixel's mean follows its decoded neighbours'
residuals, by a weight per (coding step, channel) the encoder fits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo_crop

import bitswap_core
from bitswap_core import container
from bitswap_core.coding import adapt, first_block, residual
from bitswap_core.coding.bitsback import decode_images, encode_images
from bitswap_core.coding.rans import AnsCoder
from bitswap_core.errors import CorruptPayloadError
from bitswap_core.registry import find_by_id, resolve

FIXTURE = Path(__file__).parent / "data" / "default-3523a0a0-usc-4.2.07-96x96-v16.bsw"
STEPS = adapt.spike_shape(4, 3)[0]  # coding steps of new containers (10 from container v18 on)


def test_residuals_are_the_value_minus_the_coded_mean() -> None:
    mf = 8
    rows = np.array([5 * mf + 3, 7 * mf + 0, 2 * mf + 7])  # scale levels 5, 7, 2; mean fractions 3, 0, 7
    bases = np.array([100, 0, 254])
    assert residual.residuals(np.array([100, 1, 255]), rows, bases, mf).tolist() == [-3, 8, 1]


def test_the_correction_moves_the_mean_by_the_weighted_feedback_rounded_down_within_the_pixel_range() -> None:
    mf = 8
    rows = np.array([5 * mf + 3] * 4 + [2 * mf])
    bases = np.array([100, 100, 100, 0, 255])
    feedback = np.array([10, -10, 3, -40, 40])
    same = residual.corrected(rows, bases, feedback, 0, mf)
    assert same[0].tolist() == rows.tolist() and same[1].tolist() == bases.tolist()
    r, b = residual.corrected(rows, bases, feedback, 5, mf)
    mean = b * mf + r % mf
    # 803 + floor(50 / 8) = 809; 803 + floor(-50 / 8) = 796; 803 + floor(15 / 8) = 804; clamped at 0 and 255 * 8
    assert mean.tolist() == [809, 796, 804, 0, 2040]
    assert (r // mf).tolist() == (rows // mf).tolist()  # the scale level is untouched
    per_block = residual.corrected(rows[None].repeat(2, 0), bases[None].repeat(2, 0), feedback[None].repeat(2, 0),
                                   np.array([[0], [5]]), mf)
    assert per_block[1][0].tolist() == bases.tolist() and per_block[1][1].tolist() == b.tolist()


def test_classes_count_the_edges_the_absolute_feedback_reaches() -> None:
    fb = np.array([[[0, -3, 4], [20, -20, 255]], [[0, 1, 2], [3, 4, 5]]])
    edges = np.array([[3, 4, 20], [1, 1, 5]])
    assert residual.classes(fb, edges).tolist() == [[[0, 1, 2], [3, 3, 3]], [[0, 2, 2], [2, 2, 3]]]
    assert not residual.classes(fb, np.zeros((2, 0), np.int64)).any()  # one class: no edges


def test_the_feedback_is_the_floor_mean_of_the_decoded_in_block_neighbours() -> None:
    res = torch.zeros((1, 3, 4, 4), dtype=torch.int64)
    res[0, 1, 0, 0], res[0, 1, 0, 2], res[0, 1, 2, 0], res[0, 1, 2, 2] = 5, -2, 0, 0  # phase (0,0) pixels
    known = torch.ones((1, 1, 4, 4), dtype=torch.int64)
    fb = residual.neighbour_means(res, known, (1, -1))  # phase (1,1): its four diagonal (0,0) neighbours
    assert fb.shape == (1, 3, 2, 2)
    assert fb[0, 1, 0, 0] == (5 - 2 + 0 + 0) // 4 and fb[0, 0].sum() == 0
    known[0, 0, 2:, :] = 0  # the block's lower half is padding: its residuals do not count
    assert residual.neighbour_means(res, known, (1, -1))[0, 1, 0, 0] == (5 - 2) // 2
    res[0, 1, 0, 2] = -9
    assert residual.neighbour_means(res, known, (1, -1))[0, 1, 0, 0] == -2  # floor(-4 / 2)
    assert not residual.neighbour_means(res, known, (0, 0)).any()  # no decoded neighbour yet


def _weights(rng, classes: int = residual.CLASSES) -> np.ndarray:
    w = rng.integers(-residual.MAX_WEIGHT, residual.MAX_WEIGHT + 1, (STEPS, 3, classes))
    w[0] = 0
    return w


def test_header_section_round_trips_and_malformed_ones_are_corrupt() -> None:
    rng = np.random.default_rng(3)
    a = adapt.Adaptation(residual=_weights(rng), residual_edges=np.array([2, 5, 15]))
    one = adapt.Adaptation(residual=_weights(rng, 1))
    head = adapt.to_bytes(a, 18)
    assert len(head) == len(adapt.to_bytes(adapt.NONE, 18)) + residual.CLASSES - 1 + (STEPS - 1) * 3 * residual.CLASSES
    assert len(adapt.to_bytes(one, 18)) == len(adapt.to_bytes(adapt.NONE, 18)) + (STEPS - 1) * 3
    for x in (a, one):
        back, rest = adapt.from_bytes(adapt.to_bytes(x, 18) + b"tail", 4, 3, 18)
        assert np.array_equal(back.residual, x.residual) and rest == b"tail"
        assert (back.residual_edges is None) == (x.residual_edges is None)
    assert adapt.from_bytes(head, 4, 3, 18)[0].residual_edges.tolist() == [2, 5, 15]
    assert adapt.from_bytes(adapt.to_bytes(replace(a, residual=a.residual * 0), 18), 4, 3, 18)[0].residual is None
    with pytest.raises(ValueError, match="cannot hold a residual"):
        adapt.to_bytes(a, 16)
    with pytest.raises(ValueError, match="must lie in"):
        adapt.to_bytes(replace(a, residual=a.residual * 0 + 9), 18)
    with pytest.raises(ValueError, match="1 or 4 classes"):
        adapt.to_bytes(replace(a, residual=a.residual[..., :2]), 18)
    for edges in (None, np.array([5, 2, 15]), np.array([2, 5]), np.array([2, 5, 300])):
        with pytest.raises(ValueError, match="ordered"):
            adapt.to_bytes(replace(a, residual_edges=edges), 18)
    base = adapt.to_bytes(adapt.NONE, 18)[:-1]
    body = head[len(base):]
    for bad, match in ((base, "residual feedback section is missing"), (base + b"\x02" + body[1:], "declares 2"),
                       (base + body[:-1], "declares 4"),
                       (base + body[:1] + bytes([9, 3, 30]) + body[4:], "not in order"),
                       (base + body[:5] + bytes([247]) + body[6:], "exceeds 8")):
        with pytest.raises(CorruptPayloadError, match=match):
            adapt.from_bytes(bad, 4, 3, 18)
    with pytest.raises(CorruptPayloadError, match="1-phase model"):
        adapt.from_bytes(base + body, 1, 3, 18)


def test_weighted_payloads_decode_exactly_alone_and_batched_with_images_without() -> None:
    """Random weights on every step (most far from any fit) still decode exactly: encoder and decoder track
    the same residuals; an image without the feedback in the same batch codes as alone."""
    bc = resolve(None).block_coder("bitswap")
    imgs = [np.asarray(photo_crop("waterloo-monarch.png", (0, 0, 70, 45))),
            np.asarray(photo_crop("usc-4.2.07.png", (20, 20, 84, 84)))]
    fitted = adapt.choose(bc, imgs, residuals=0, latent=0)
    rng = np.random.default_rng(4)
    adaptations = [replace(fitted[0], residual=_weights(rng), residual_edges=np.array([3, 8, 20])),
                   fitted[1], replace(fitted[0], residual=_weights(rng, 1))]
    imgs.append(imgs[0])
    together = [c.to_bytes() for c in encode_images(bc, imgs, adaptations=adaptations)]
    alone = [encode_images(bc, [im], adaptations=[a])[0].to_bytes() for im, a in zip(imgs, adaptations)]
    assert together == alone
    assert together[0] != encode_images(bc, imgs[:1], adaptations=fitted[:1])[0].to_bytes()
    coders = [AnsCoder.from_bytes(d, bc.bed_words) for d in together]
    back = decode_images(bc, coders, [im.shape for im in imgs], adaptations)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, back))


def test_the_fit_keeps_weights_that_code_a_photo_smaller() -> None:
    arr = np.asarray(photo_crop("usc-4.2.07.png", (100, 100, 196, 196)))
    data = bitswap_core.compress(photo_crop("usc-4.2.07.png", (100, 100, 196, 196)), smallest=False)
    box = container.unpack(data)
    a, _ = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == container.VERSION and a.residual is not None and not a.residual[0].any()
    assert np.array_equal(np.asarray(bitswap_core.decompress(data)), arr)
    bc = resolve(None).block_coder("bitswap", 1)  # as the API codes a 96x96 image (api.phase_split_for)
    (fit,), (plain,) = adapt.choose(bc, [arr]), adapt.choose(bc, [arr], residuals=0)
    assert plain.residual is None and np.array_equal(fit.residual, a.residual)
    sizes = [len(encode_images(bc, [arr], adaptations=[x])[0].to_bytes()) + len(adapt.to_bytes(x))
             for x in (fit, plain)]
    assert sizes[0] < 0.998 * sizes[1]


def test_v16_payload_decodes_and_the_encoder_still_writes_it() -> None:
    """tests/data: the eighth default's container v16 payload of a 96x96 crop (32x32 blocks, no residual
    feedback) decodes exactly, and the encoder without the feedback writes the same
    header (less v17's residual byte) and ANS bytes again."""
    stored = FIXTURE.read_bytes()
    box = container.unpack(stored)
    a, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == 16 and a.residual is None
    img = photo_crop("usc-4.2.07.png", (100, 100, 196, 196))
    assert bitswap_core.decompress(stored).tobytes() == img.tobytes()
    bc = find_by_id(box.model_id).block_coder("bitswap", 1)  # 32x32 blocks, phase (0,0) split as before v18
    arr = np.asarray(img)
    (again,) = adapt.choose(bc, [arr], residuals=0)
    assert adapt.to_bytes(again, 16) == box.payload[: len(box.payload) - len(rest)]
    assert adapt.to_bytes(again, 17) == adapt.to_bytes(again, 16) + b"\0"
    grids = first_block.choose(bc, [arr], [again])
    assert grids == [rest[0]] and rest[1:3] == b"\x00\x01"  # 32x32 blocks, one particle
    assert encode_images(bc, [arr], adaptations=[again], first_grids=grids)[0].to_bytes() == rest[3:]


def test_v17_payload_decodes_and_the_encoder_writes_it_again(monkeypatch) -> None:
    """tests/data: the eighth default's container v17 payload of a 192x192 monarch crop, with four |R|
    classes of residual feedback and a surprise context, decodes exactly, and encoding the crop again with
    the model it names, as container v17 (phase (0,0) split once), gives the same bytes (the fit and the
    coding are deterministic; a change shows here)."""
    stored = (Path(__file__).parent / "data" / "default-3523a0a0-monarch-192x192-v17.bsw").read_bytes()
    box = container.unpack(stored)
    a, _ = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == 17 and a.residual.shape == (7, 3, residual.CLASSES) and a.surprise is not None
    img = photo_crop("waterloo-monarch.png", (200, 100, 392, 292))
    assert bitswap_core.decompress(stored).tobytes() == img.tobytes()
    monkeypatch.setattr(container, "VERSION", 17)
    assert bitswap_core.compress(img, find_by_id(box.model_id), smallest=False) == stored
