"""Per-image adaptation (coding/adapt.py): exact for any scale shifts and spike levels, chosen per image,
stored compactly."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from conftest import photo_crop
from PIL import Image

import bitswap_core
from bitswap_core import container
from bitswap_core.coding import adapt, surprise
from bitswap_core.coding.bitsback import decode_images, elbo_bits, encode_images
from bitswap_core.errors import CorruptPayloadError
from bitswap_core.model import phases
from bitswap_core.registry import resolve


@pytest.fixture(scope="module")
def residual_model(tmp_path_factory):
    """A 4-phase model with the predictor and colour residual (random weights), besides the 1-phase tiny."""
    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.export import export_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.registry import load_model, save_model

    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("models") / "tiny-residual.safetensors"
    save_model(path, PRESETS["tiny-residual"], export_tensors(BitSwapModel(PRESETS["tiny-residual"]).eval()), {})
    return load_model(path)


def _arrays(*imgs):
    return [np.asarray(im, dtype=np.uint8) for im in imgs]


def _same(a: adapt.Adaptation, b: adapt.Adaptation) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
               for x, y in ((a.shifts, b.shifts), (a.spikes, b.spikes), (a.spikes2, b.spikes2), (a.blend, b.blend),
                            (a.colour, b.colour), (a.values, b.values), (a.surprise, b.surprise),
                            (a.surprise_edges, b.surprise_edges), (a.residual, b.residual),
                            (a.residual_edges, b.residual_edges))) and a.latent == b.latent


def _surprise(rng, channels=3, split=phases.SPLIT):
    steps = adapt.spike_shape(4, channels, split)[0]
    s = rng.integers(-surprise.MAX_SHIFT, surprise.MAX_SHIFT + 1, (steps, channels, surprise.CLASSES))
    s[0] = 0  # the first coding step has no decoded neighbours: no row in the header
    return s


def _spikes(rng, channels=3, high=256, split=phases.SPLIT):
    s = rng.integers(0, high, adapt.spike_shape(4, channels, split))
    s[0] = 0  # the first coding step (a quarter of phase 0) has no decoded neighbours
    return s


def _second_spikes(rng, first):
    """Second-spike levels that add up with the first's to at most 255; class 0 (no dissent) has none."""
    s = (rng.random(first.shape) * (256 - first)).astype(np.int64)
    s[0], s[..., 0] = 0, 0
    return s


def _blend(rng, channels=3, later=True, split=phases.SPLIT):
    """Blend weights and scale shifts for phase (0,0)'s sub-phases with decoded neighbours (coding steps 1-3,
    or 1-6 with split 2; weights 0..8) and, with later, phases 1-3 (the last three steps; weights -8..8)."""
    b = np.zeros(adapt.blend_shape(4, channels, split), np.int64)
    n = len(b)
    b[1 : n - 3, ..., 0] = rng.integers(0, adapt.BLEND_ONE + 1, b[1 : n - 3, ..., 0].shape)
    if later:
        b[n - 3 :, ..., 0] = rng.integers(-adapt.BLEND_ONE, adapt.BLEND_ONE + 1, b[n - 3 :, ..., 0].shape)
    rows = slice(1, n if later else n - 3)
    b[rows, ..., 1] = rng.integers(-adapt.MAX_BLEND_SHIFT, adapt.MAX_BLEND_SHIFT + 1, b[rows, ..., 1].shape)
    return b


def _colour(rng, channels=3, later=True, split=phases.SPLIT):
    """Colour blend weights 0..8 and scale shifts for G and B of the blend's steps (phase (0,0)'s sub-phases
    with decoded neighbours and, with later, phases 1-3)."""
    b = np.zeros(adapt.colour_shape(4, channels, split), np.int64)
    rows = slice(1, len(b) if later else len(b) - 3)
    b[rows, ..., 0] = rng.integers(0, adapt.BLEND_ONE + 1, b[rows, ..., 0].shape)
    b[rows, ..., 1] = rng.integers(-adapt.MAX_BLEND_SHIFT, adapt.MAX_BLEND_SHIFT + 1, b[rows, ..., 1].shape)
    return b


def _residual(rng, classes: int, split=phases.SPLIT) -> np.ndarray:
    """Residual feedback weights -8..8 for the steps with decoded neighbours (all but the first)."""
    n = adapt.spike_shape(4, 3, split)[0]
    return np.vstack([np.zeros((1, 3, classes), np.int64), rng.integers(-8, 9, (n - 1, 3, classes))])


def test_header_round_trip_and_no_adaptation_is_eleven_bytes_in_v17():
    """Container version 17's layouts (phase (0,0) in four sub-phases: seven coding steps) and the older
    versions' prefixes of it; version 18's ten steps: test_v18_headers_hold_rows_for_ten_steps."""
    shifts = np.arange(-18, 18).reshape(4, 3, 3)
    rng = np.random.default_rng(0)
    spikes = _spikes(rng, split=1)
    second = _second_spikes(rng, spikes)
    blend, sub_blend = _blend(rng, split=1), _blend(rng, later=False, split=1)
    colour, sub_colour = _colour(rng, split=1), _colour(rng, later=False, split=1)
    for a in (adapt.Adaptation(shifts, spikes), adapt.Adaptation(shifts), adapt.Adaptation(spikes=spikes),
              adapt.Adaptation(shifts, spikes, second), adapt.Adaptation(spikes2=second),
              adapt.Adaptation(shifts, spikes, second, blend), adapt.Adaptation(blend=blend),
              adapt.Adaptation(blend=sub_blend), adapt.Adaptation(shifts, spikes, second, blend, colour),
              adapt.Adaptation(colour=colour), adapt.Adaptation(blend=sub_blend, colour=sub_colour),
              adapt.Adaptation(latent=5), adapt.Adaptation(shifts, colour=colour, latent=-16),
              adapt.Adaptation(shifts, latent=2, values=rng.random((3, 256)) < 0.5),
              adapt.Adaptation(shifts, spikes, surprise=_surprise(rng, split=1), surprise_edges=np.array([3, 9, 9])),
              adapt.Adaptation(shifts, residual=_residual(rng, 1, split=1)),
              adapt.Adaptation(residual=_residual(rng, 4, split=1), residual_edges=np.array([0, 7, 7]))):
        got, rest = adapt.from_bytes(adapt.to_bytes(a, 17) + b"ans", 4, 3, version=17)
        assert _same(got, a) and rest == b"ans"
    assert adapt.FORMAT == container.VERSION
    assert len(adapt.to_bytes(adapt.Adaptation(shifts, spikes), 17)) == 11 + 36 + 54
    assert len(adapt.to_bytes(adapt.Adaptation(shifts, spikes, second), 17)) == 11 + 36 + 54 + 36
    assert len(adapt.to_bytes(adapt.Adaptation(shifts, spikes, second, blend), 17)) == 11 + 36 + 54 + 36 + 1 + 144
    assert len(adapt.to_bytes(adapt.Adaptation(blend=sub_blend), 17)) == 11 + 1 + 72  # the sub-phases alone
    assert len(adapt.to_bytes(adapt.Adaptation(colour=colour), 17)) == 11 + 1 + 6 * 2 * 6 * 2
    assert len(adapt.to_bytes(adapt.Adaptation(colour=sub_colour), 17)) == 11 + 1 + 3 * 2 * 6 * 2
    with pytest.raises(ValueError, match="split 2 times \\(container version 18\\) is not coded in the \\[7\\] steps"):
        adapt.to_bytes(adapt.Adaptation(spikes=spikes), 18)
    # container version 16: the header ends after the surprise context; 13-15: after the palette; 12: after the
    # value masks; 11: after the latent shift; 9 and 10: after the colour blend; 8: after the blend
    v11 = adapt.Adaptation(shifts, latent=3)
    assert adapt.to_bytes(v11, 16) == adapt.to_bytes(v11, 17)[:-1]
    assert adapt.to_bytes(v11, 15) == adapt.to_bytes(v11, 17)[:-2]
    assert adapt.to_bytes(v11, 12) == adapt.to_bytes(v11, 17)[:-4]
    assert adapt.to_bytes(v11, 11) == adapt.to_bytes(v11, 17)[:-5]
    v9 = adapt.Adaptation(shifts, spikes, second, blend, colour)
    for version in (9, 10):
        got, rest = adapt.from_bytes(adapt.to_bytes(v9, version) + b"ans", 4, 3, version=version)
        assert _same(got, v9) and rest == b"ans" and adapt.to_bytes(v9, version) == adapt.to_bytes(v9, 17)[:-6]
    with pytest.raises(ValueError, match="latent shift"):
        adapt.to_bytes(adapt.Adaptation(latent=2), 10)
    v8 = adapt.Adaptation(shifts, spikes, second, blend)
    got, rest = adapt.from_bytes(adapt.to_bytes(v8, 17)[:-7] + b"ans", 4, 3, version=8)
    assert _same(got, v8) and rest == b"ans"
    # container version 6: the blend section holds the sub-phases, without a step count
    v6 = b"\0\0\0" + bytes([4]) + sub_blend[1:4].astype(np.int8).tobytes()
    got, rest = adapt.from_bytes(v6 + b"ans", 4, 3, version=6)
    assert _same(got, adapt.Adaptation(blend=sub_blend)) and rest == b"ans"
    zero = adapt.Adaptation(np.zeros((4, 3, 3), np.int64), np.zeros((7, 3, 3), np.int64), np.zeros((7, 3, 3), np.int64),
                            np.zeros((7, 3, 4, 2), np.int64), np.zeros((7, 2, 6, 2), np.int64))
    assert adapt.to_bytes(adapt.NONE, 17) == adapt.to_bytes(zero, 17) == bytes(11)
    assert _same(adapt.from_bytes(bytes(11) + b"ans", 4, 3, version=17)[0], adapt.NONE)
    # container version 5: the header ends after the second spikes; 4: after the spikes; 3: after the shifts
    two = adapt.Adaptation(shifts, spikes, second)
    got, rest = adapt.from_bytes(adapt.to_bytes(two, 17)[:-8] + b"ans", 4, 3, version=5)
    assert _same(got, two) and rest == b"ans"
    one = adapt.Adaptation(shifts, spikes)
    got, rest = adapt.from_bytes(adapt.to_bytes(one, 17)[:-9] + b"ans", 4, 3, version=4)
    assert _same(got, one) and rest == b"ans"
    got, rest = adapt.from_bytes(adapt.to_bytes(adapt.Adaptation(shifts), 17)[:-10] + b"ans", 4, 3, version=3)
    assert _same(got, adapt.Adaptation(shifts)) and rest == b"ans"


@pytest.mark.parametrize("payload, phases, problem", [
    (b"", 4, "empty"),
    (bytes([3]) + bytes(35), 4, "36 shifts"),  # truncated
    (bytes([17]) + bytes(12 * 17), 4, "17 bands"),  # too many bands
    (bytes([1]) + bytes([25]) + bytes(11), 4, "exceeds"),  # shift out of range
    (b"\0", 4, "before its spike header"),  # version 4 without the spike section
    (b"\0" + bytes([3]) + bytes(53), 4, "3 classes"),  # truncated spike levels
    (b"\0" + bytes([2]) + bytes(36), 4, "2 classes"),  # a class count the decoder does not know
    (b"\0" + bytes([3]) + bytes(54), 1, "1-phase model"),  # spikes need decoded neighbours
    (b"\0\0", 4, "before its second-spike header"),  # version 5 without the second-spike section
    (b"\0\0" + bytes([2]) + bytes(35), 4, "2 classes"),  # truncated second-spike levels
    (b"\0\0" + bytes([3]) + bytes(54), 4, "3 classes"),  # a class count the decoder does not know
    (b"\0" + bytes([3, 0, 200]) + bytes(52) + bytes([2, 56]) + bytes(35) + b"\0", 4,
     "more than 255"),  # step 1, channel 0, class 1: 200 + 56
    (b"\0\0\0", 4, "before its blend header"),  # version 7 without the blend section
    (b"\0\0\0" + bytes([4, 6]) + bytes(143), 4, "4 classes"),  # truncated blend
    (b"\0\0\0" + bytes([3, 3]) + bytes(54), 4, "3 classes"),  # a class count the decoder does not know
    (b"\0\0\0" + bytes([4, 5]) + bytes(120), 4, "5 steps"),  # neither the sub-phases (3) nor all (6)
    (b"\0\0\0" + bytes([4, 3, 9]) + bytes(71), 4, "weight outside"),  # weight 9 of 8
    (b"\0\0\0" + bytes([4, 3, 0xF7]) + bytes(71), 4, "weight outside"),  # weight -9
    (b"\0\0\0" + bytes([4, 3, 0, 13]) + bytes(70), 4, "shift exceeds"),  # scale shift 13
    (b"\0\0\0" + bytes([4, 3]) + bytes(72), 1, "1-phase model"),  # no sub-phases, no later phases
    (b"\0\0\0\0", 4, "before its colour blend header"),  # version 9 without the colour section
    (b"\0\0\0\0" + bytes([6, 6]) + bytes(143), 4, "6 classes"),  # truncated colour blend
    (b"\0\0\0\0" + bytes([4, 6]) + bytes(96), 4, "4 classes"),  # a class count the decoder does not know
    (b"\0\0\0\0" + bytes([6, 4]) + bytes(96), 4, "4 steps"),  # neither the sub-phases (3) nor all (6)
    (b"\0\0\0\0" + bytes([6, 3, 9]) + bytes(71), 4, "colour blend weight outside 0..8"),  # weight 9 of 8
    (b"\0\0\0\0" + bytes([6, 3, 0xFF]) + bytes(71), 4, "colour blend weight outside 0..8"),  # weight -1
    (b"\0\0\0\0" + bytes([6, 3, 0, 0xF3]) + bytes(70), 4, "shift exceeds"),  # scale shift -13
    (b"\0\0\0\0" + bytes([6, 3]) + bytes(72), 1, "1-phase model"),  # no step has decoded neighbours
])
def test_malformed_headers_are_clear_errors(payload, phases, problem):
    """Container version 17's layout (seven coding steps)."""
    with pytest.raises(CorruptPayloadError, match=problem):
        adapt.from_bytes(payload, phases, 3, version=17)


def test_v18_headers_hold_rows_for_ten_steps():
    """Container v18's header starts with phase (0,0)'s split, 1 or 2; with 2 (its first sub-phase split
    again) the per-step sections hold nine rows (every step but the first), a blend either phase (0,0)'s six
    or all nine; with 1 they are v17's. The decoder codes with the split the header names."""
    rng = np.random.default_rng(3)
    shifts = np.arange(-18, 18).reshape(4, 3, 3)
    spikes = _spikes(rng)
    second = _second_spikes(rng, spikes)
    blend, sub_blend, colour = _blend(rng), _blend(rng, later=False), _colour(rng)
    for a in (adapt.Adaptation(shifts, spikes, second, blend, colour, surprise=_surprise(rng),
                               surprise_edges=np.array([1, 2, 5]), residual=_residual(rng, 4),
                               residual_edges=np.array([0, 3, 9])),
              adapt.Adaptation(blend=sub_blend), adapt.Adaptation(residual=_residual(rng, 1)),
              adapt.Adaptation(shifts, _spikes(rng, split=1), blend=_blend(rng, split=1), split=1),
              adapt.Adaptation(split=1), adapt.NONE):
        got, rest = adapt.from_bytes(adapt.to_bytes(a, 18) + b"ans", 4, 3, 18)
        assert _same(got, a) and got.split == a.split and rest == b"ans"
    assert len(adapt.to_bytes(adapt.NONE, 18)) == 12 and adapt.to_bytes(adapt.Adaptation(split=1), 18)[0] == 1
    assert len(adapt.to_bytes(adapt.Adaptation(shifts, spikes), 18)) == 12 + 36 + 9 * 3 * 3
    assert len(adapt.to_bytes(adapt.Adaptation(blend=sub_blend), 18)) == 12 + 1 + 6 * 3 * 4 * 2
    assert len(adapt.to_bytes(adapt.Adaptation(blend=blend), 18)) == 12 + 1 + 9 * 3 * 4 * 2
    v17 = adapt.Adaptation(shifts, _spikes(rng, split=1), split=1)
    assert adapt.to_bytes(v17, 18) == b"\1" + adapt.to_bytes(v17, 17)
    for split in (0, 3):
        with pytest.raises(ValueError, match=f"1 to 2 times, not {split}"):
            adapt.to_bytes(adapt.Adaptation(split=split), 18)
    for bad, match in ((b"", "split is missing"), (b"\0" + bytes(11), "split 0 is not 1 to 2"),
                       (b"\3" + bytes(11), "split 3"), (b"\2", "no scale adaptation header"),
                       (b"\2\0" + bytes([3]) + bytes(54), "3 classes"),  # seven steps' spike rows: too few
                       (b"\2\0\0\0" + bytes([4, 3]) + bytes(72), "declares 3 steps")):  # v17's sub-phases
        with pytest.raises(CorruptPayloadError, match=match):
            adapt.from_bytes(bad, 4, 3, 18)
    assert adapt.from_bytes(b"\1\0" + bytes([3]) + bytes(54) + bytes(9), 4, 3, 18)[0].split == 1  # v17's rows


def test_v19_headers_are_v18_headers_deflated_and_a_damaged_stream_is_refused():
    """Container v19 stores the v18 header as one raw deflate stream; the bytes after the stream are the
    rest of the payload. A stream that is cut, not deflate, inflates past HEADER_LIMIT or holds more than
    one header is a clear CorruptPayloadError."""
    rng = np.random.default_rng(5)
    spikes = _spikes(rng)
    a = adapt.Adaptation(np.arange(-18, 18).reshape(4, 3, 3), spikes, _second_spikes(rng, spikes), _blend(rng),
                         _colour(rng), surprise=_surprise(rng), surprise_edges=np.array([1, 2, 5]),
                         residual=_residual(rng, 4), residual_edges=np.array([0, 3, 9]))
    for b in (a, adapt.Adaptation(split=1), adapt.NONE):
        packed = adapt.to_bytes(b)
        assert zlib.decompress(packed, -15) == adapt.to_bytes(b, 18)
        got, rest = adapt.from_bytes(packed + b"ans", 4, 3)
        assert _same(got, b) and got.split == b.split and rest == b"ans"
    assert len(adapt.to_bytes(adapt.NONE)) < len(adapt.to_bytes(adapt.NONE, 18))
    packed = adapt.to_bytes(a)

    def deflated(body: bytes) -> bytes:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        return packer.compress(body) + packer.flush()

    for bad, match in ((b"", "does not end"), (packed[: len(packed) // 2], "does not end"),
                       (b"\xff" * 40, "does not inflate"),
                       (deflated(bytes(adapt.HEADER_LIMIT + 1)), f"more than {adapt.HEADER_LIMIT} bytes"),
                       (deflated(adapt.to_bytes(a, 18) + b"x"), "1 bytes follow it"),
                       (deflated(b"\3" + bytes(11)), "split 3 is not 1 to 2")):
        with pytest.raises(CorruptPayloadError, match=match):
            adapt.from_bytes(bad + b"ans", 4, 3)


def test_a_grey_model_takes_no_colour_blend():
    """One channel has no channel before it: a colour section is malformed, its absence fine."""
    with pytest.raises(CorruptPayloadError, match="colour blend header declares 3 steps"):
        adapt.from_bytes(b"\0\0\0\0" + bytes([6, 3]) + bytes(36), 4, 1, version=17)
    assert adapt.from_bytes(b"\2\0\0\0\0\0\0\0\0\0\0\0ans", 4, 1, 18) == (adapt.NONE, b"ans")


def test_a_latent_shift_outside_its_range_or_missing_is_corrupt():
    for byte, problem in ((bytes([17]), "exceeds 16"), (bytes([256 - 17]), "exceeds 16"), (b"", "missing")):
        with pytest.raises(CorruptPayloadError, match=problem):
            adapt.from_bytes(b"\2\0\0\0\0\0" + byte, 4, 3, 18)  # (v18: the split byte first)
    assert adapt.from_bytes(b"\2\0\0\0\0\0\xf0\0\0\0\0\0ans", 4, 3, 18)[0].latent == -16


def test_a_version_6_blend_holds_only_non_negative_weights():
    with pytest.raises(CorruptPayloadError, match="outside 0..8"):
        adapt.from_bytes(b"\0\0\0" + bytes([4, 0xFF]) + bytes(71), 4, 3, version=6)


def test_level_maps_shift_each_band_and_clamp_at_the_grid_ends():
    s = np.zeros((1, 1, 3), np.int64)
    s[0, 0] = [-5, 0, 7]
    maps = adapt.level_maps([None, s], 1, 1, 96)
    assert maps.shape == (2, 1, 1, 96)
    assert torch.equal(maps[0, 0, 0], torch.arange(96))  # None: the model as is
    m = maps[1, 0, 0]
    assert m[:5].tolist() == [0] * 5 and m[10] == 5  # band 0 (levels 0-31) moves down, clamped at 0
    assert torch.equal(m[32:64], torch.arange(32, 64))  # band 1 unchanged
    assert m[64] == 71 and m[90:].tolist() == [95] * 6  # band 2 moves up, clamped at 95
    assert adapt.level_maps([None, None], 1, 1, 96) is None


@pytest.mark.parametrize("which", ["tiny", "residual"])
def test_any_adaptation_decodes_exactly_and_batches_match_alone(which, tiny_model, residual_model):
    model = tiny_model if which == "tiny" else residual_model
    bc, cfg = model.block_coder("bitswap"), model.cfg
    flat = np.full((40, 50, 3), 90, np.uint8)  # equal neighbours everywhere: every spike class is used
    flat[10:30, 20:45] = (200, 10, 30)
    flat[::7, ::5] = 17
    imgs = _arrays(photo_crop(box=(0, 0, 40, 40)), photo_crop(box=(5, 3, 75, 40)), photo_crop(box=(0, 0, 9, 33)))
    imgs.append(flat)
    rng = np.random.default_rng(0)
    spikes = which == "residual"  # spikes need 4 phases
    adaptations = [
        adapt.Adaptation(rng.integers(-adapt.MAX_SHIFT, adapt.MAX_SHIFT + 1, (cfg.pixel_phases, cfg.channels, 3)),
                         _spikes(rng) if spikes else None),
        adapt.NONE,
        adapt.Adaptation(rng.integers(-3, 4, (cfg.pixel_phases, cfg.channels, 2))),
        adapt.Adaptation(None, _spikes(rng) if spikes else None),
    ]
    if spikes:  # and both spikes and the blend on a photo and the flat image
        first = _spikes(rng)
        adaptations[2] = adapt.Adaptation(adaptations[2].shifts, first, _second_spikes(rng, first), _blend(rng),
                                          _colour(rng))
        imgs.append(flat)
        adaptations.append(adapt.Adaptation(None, *(lambda f: (f, _second_spikes(rng, f)))(_spikes(rng, high=128))))
    together = [c.to_bytes() for c in encode_images(bc, imgs, adaptations=adaptations)]
    alone = [encode_images(bc, [im], adaptations=[a])[0].to_bytes() for im, a in zip(imgs, adaptations)]
    assert together == alone
    assert together[1] == encode_images(bc, [imgs[1]])[0].to_bytes()  # NONE is the model unchanged
    assert together[0] != encode_images(bc, [imgs[0]])[0].to_bytes()  # a shift changes the coding
    if spikes:  # a spike on a flat image changes (and shortens) the coding
        assert len(together[3]) < len(encode_images(bc, [flat])[0].to_bytes())
    from bitswap_core.coding.rans import AnsCoder

    coders = [AnsCoder.from_bytes(d, bc.bed_words) for d in together]
    back = decode_images(bc, coders, [im.shape for im in imgs], adaptations)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, back))


def test_the_default_model_widens_its_scales_on_a_noisier_image_and_saves_bits():
    """The shipped model on a photo with added sensor noise: the chosen shifts are mostly wider scales, and
    the adapted payload (header included) is smaller than the unadapted one, by what the ELBO predicts."""
    m = resolve(None)
    bc = m.block_coder("bitswap")
    rng = np.random.default_rng(0)
    clean = np.asarray(photo_crop("usc-4.2.07.png", box=(100, 100, 196, 164)), dtype=np.int64)
    noisy = np.clip(clean + rng.normal(0, 8, clean.shape).round(), 0, 255).astype(np.uint8)
    (adaptation,) = adapt.choose(bc, [noisy])
    shifts = adaptation.shifts
    assert shifts is not None and shifts.shape == (m.cfg.pixel_phases, 3, adapt.BANDS)
    assert shifts.mean() > 1
    image = Image.fromarray(noisy)
    plain = bitswap_core.compress(image, smallest=False, adapt_blocks=0)
    adapted = bitswap_core.compress(image, smallest=False)
    # (the v19 header inflates to v18's: the split byte, then the scale shifts' band count)
    heads = [zlib.decompressobj(-15).decompress(container.unpack(d).payload) for d in (plain, adapted)]
    assert heads[0][1] == 0 and heads[1][1] == adapt.BANDS
    assert len(adapted) < 0.97 * len(plain)
    assert np.array_equal(np.asarray(bitswap_core.decompress(adapted)), noisy)
    assert elbo_bits(bc, [noisy], adaptations=[adaptation])[0] < 0.97 * elbo_bits(bc, [noisy])[0]


def test_the_default_model_puts_spikes_on_a_flat_graphic_and_saves_bits():
    """A drawing with large flat areas (waterloo-serrano's frame): the pixels of every step with decoded
    neighbours mostly equal the value their neighbours agree on, which the smooth logistic alone cannot say;
    the chosen spikes make the payload far smaller and it still decodes exactly. A photo keeps (almost) no
    spikes."""
    m = resolve(None)
    bc = m.block_coder("bitswap")
    graphic = np.asarray(photo_crop("waterloo-serrano.png", box=(0, 0, 128, 96)))
    (a,) = adapt.choose(bc, [graphic], paletted=0)  # (with its palette, G and B need fewer spikes)
    # (phase (0,0)'s steps 1-3 have their neighbours four pixels away, the others two)
    assert a.spikes is not None and a.spikes[4:, :, 0].min() > 128 and not a.spikes[0].any()
    assert a.spikes[1:4, :, 0].mean() > 128
    scales_only = adapt.Adaptation(a.shifts)
    assert elbo_bits(bc, [graphic], adaptations=[a])[0] < 0.75 * elbo_bits(bc, [graphic], adaptations=[scales_only])[0]
    data = bitswap_core.compress(Image.fromarray(graphic), smallest=False)
    assert np.array_equal(np.asarray(bitswap_core.decompress(data)), graphic)
    (photo,) = adapt.choose(bc, [np.asarray(photo_crop("usc-4.2.07.png", box=(100, 100, 196, 164)))])
    assert photo.spikes is None or photo.spikes.mean() < 32


def test_a_tiny_image_keeps_the_model_as_is(tiny_model, residual_model):
    """Too few pixels to pay for the header: no adaptation, two header bytes."""
    for model in (tiny_model, residual_model):
        (a,) = adapt.choose(model.block_coder("bitswap"), _arrays(photo_crop(box=(0, 0, 3, 2))))
        assert _same(a, adapt.NONE)


@pytest.mark.parametrize("which", ["tiny", "residual"])
def test_the_choice_depends_on_the_image_alone_not_on_the_batch(which, tiny_model, residual_model, monkeypatch):
    bc = (tiny_model if which == "tiny" else residual_model).block_coder("bitswap")
    imgs = _arrays(photo_crop(box=(0, 0, 70, 45)), photo_crop(box=(3, 1, 40, 40)), photo_crop(box=(0, 0, 64, 64)),
                   photo_crop("waterloo-serrano.png", box=(0, 0, 96, 64)))
    together = adapt.choose(bc, imgs, sample_blocks=3)
    alone = [adapt.choose(bc, [im], sample_blocks=3)[0] for im in imgs]
    assert sum(a.shifts is not None for a in together) >= 2  # random weights: far from calibrated on photos
    assert (together[3].spikes is not None) == (which == "residual")  # the flat graphic, if 4 phases
    assert all(_same(a, b) for a, b in zip(together, alone))
    monkeypatch.setattr(adapt, "_BATCH_BLOCKS", 4)  # network calls split between images
    assert all(_same(a, b) for a, b in zip(adapt.choose(bc, imgs, sample_blocks=3), alone))


def test_the_default_model_blends_its_means_toward_the_decoded_neighbours_on_a_photo():
    """Phase (0,0)'s distributions see only z1; on a smooth photo the encoder moves the means of its
    sub-phases toward the decoded neighbours two or four pixels away, and corrects the later phases' own
    interpolation, and that lowers the -ELBO (header included) against the same adaptation without it.
    (A 192x192 crop: on the 128x128 one the v18 section, nine steps' rows, no longer pays for itself.)"""
    bc, img, cost = _default_model_on_a_colour_photo(box=(0, 0, 192, 192))
    (with_blend,) = adapt.choose(bc, [img], residuals=0)
    (without,) = adapt.choose(bc, [img], blend=0, residuals=0)
    assert with_blend.blend is not None and without.blend is None
    assert with_blend.blend[1:7, ..., 0].max() > 0 and with_blend.blend[7:].any() and not with_blend.blend[0].any()
    assert cost(with_blend) < cost(without)


def _default_model_on_a_colour_photo(box=(64, 64, 192, 192)):
    """(the default model's block coder, a crop of waterloo-monarch, 128 x 128 unless box says otherwise, the
    -ELBO of an adaptation on it plus its header in bits)."""
    bc = resolve(None).block_coder("bitswap")
    img = np.asarray(photo_crop("waterloo-monarch.png", box=box), dtype=np.uint8)

    def cost(a):
        return elbo_bits(bc, [img], adaptations=[a])[0] + 8 * len(adapt.to_bytes(a))

    return bc, img, cost


def test_the_default_model_moves_g_and_b_toward_the_previous_channel_plus_the_neighbours_difference():
    """On a colour photo (waterloo-monarch) the encoder picks a colour blend for G and B, which lowers the
    -ELBO (header included) against the same adaptation without it; the payload decodes exactly and is
    smaller than container v8's coding (colour=0)."""
    bc, img, cost = _default_model_on_a_colour_photo()
    (coloured,) = adapt.choose(bc, [img])
    (plain,) = adapt.choose(bc, [img], colour=0)
    assert coloured.colour is not None and plain.colour is None
    assert coloured.colour[1:, ..., 0].max() > 0 and not coloured.colour[0].any()
    assert cost(coloured) < 0.995 * cost(plain)  # (0.75% with the fifteenth default, 1%+ with earlier ones)
    data = [encode_images(bc, [img], adaptations=[a])[0].to_bytes() for a in (coloured, plain)]
    assert len(data[0]) + len(adapt.to_bytes(coloured)) < len(data[1]) + len(adapt.to_bytes(plain))
    from bitswap_core.coding.rans import AnsCoder

    (back,) = decode_images(bc, [AnsCoder.from_bytes(data[0], bc.bed_words)], [img.shape], [coloured])
    assert np.array_equal(back, img)
    # a grey photo stored as RGB: G and B equal R exactly, which the blend says with full weight and the
    # narrowest scale it may pick; with the palette (container v13) they are certain and cost nothing
    grey = np.repeat(img[..., 1:2], 3, axis=2)
    (g,) = adapt.choose(bc, [grey], paletted=0)
    assert g.colour is not None and (g.colour[4:, :, 0] == [adapt.BLEND_ONE, -adapt.MAX_BLEND_SHIFT]).all()
    (p,) = adapt.choose(bc, [grey])
    assert p.palette is not None and len(p.palette) == len(np.unique(grey[..., 0])) and p.colour is None
    grey_cost = [elbo_bits(bc, [grey], adaptations=[a])[0] + 8 * len(adapt.to_bytes(a)) for a in (p, g)]
    assert grey_cost[0] < grey_cost[1]


@pytest.mark.parametrize("scheme", ["bitswap", "bbans"])
def test_latent_shifts_decode_exactly_in_mixed_batches(tiny_model, scheme):
    """Each image's latent shift widens or narrows its latents' distributions, q and p alike, in every block
    of a batch of images of different sizes (first blocks on the coarse grid or not)."""
    from dataclasses import replace

    from bitswap_core.coding.rans import AnsCoder

    bc = tiny_model.block_coder(scheme)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 50), (64, 64), (33, 97))]
    ads = [replace(adapt.NONE, latent=t) for t in (5, -16, 16)]
    for grids in (None, [32, 0, 16]):
        coders = encode_images(bc, images, adaptations=ads, first_grids=grids)
        back = decode_images(bc, [AnsCoder.from_bytes(c.to_bytes(), bc.bed_words) for c in coders],
                             [im.shape for im in images], ads, grids)
        assert all(np.array_equal(a, b) for a, b in zip(back, images))
    plain = encode_images(bc, images[:1], adaptations=[adapt.NONE])[0].to_bytes()
    assert encode_images(bc, images[:1], adaptations=ads[:1])[0].to_bytes() != plain


def test_a_flat_graphic_takes_a_latent_shift_and_small_images_none(monkeypatch):
    """The default model on a 512x256 crop of the bundled flat graphic (128 blocks): the fit widens its
    latents (bench/latent_shift.py: -3% on the whole image) and the payload decodes exactly; a crop below
    LATENT_MIN_BLOCKS keeps the model's latents. (Written as container v20: v21 codes this graphic's blocks
    directly, coding/direct.py, and keeps no adaptation.)"""
    from dataclasses import replace

    monkeypatch.setattr(container, "VERSION", 20)

    bc = resolve(None).block_coder("bitswap")
    graphic = np.asarray(photo_crop("waterloo-serrano.png", box=(0, 0, 512, 256)), dtype=np.uint8)
    (a,) = adapt.choose(bc, [graphic], latent=0)
    (fitted,) = adapt.fit_latent(bc, [graphic], [a])
    assert fitted.latent in adapt.LATENT_SHIFTS and fitted.latent > 0
    assert _same(replace(fitted, latent=0), a)
    (small,) = adapt.fit_latent(bc, [graphic[:128, :256]], [a])
    assert small.latent == 0
    img = Image.fromarray(graphic)
    data = bitswap_core.compress(img, smallest=False)
    assert adapt.from_bytes(container.unpack(data).payload, 4, 3)[0].latent == fitted.latent
    assert bitswap_core.decompress(data).tobytes() == graphic.tobytes()


def test_the_sample_grows_with_the_image_within_its_bounds():
    """One block in SAMPLE_SHARE, at least SAMPLE_BLOCKS and at most MAX_SAMPLE_BLOCKS (never more than the
    image has); an explicit count is taken as it is."""
    assert [adapt.sample_size(n) for n in (1, 9, 16, 64, 128, 256, 384, 1000, 10**6)] == [
        1, 9, 16, 16, 16, 32, 48, 64, 64]
    assert adapt.sample_size(384, 16) == 16 and adapt.sample_size(9, 16) == 9 and adapt.sample_size(10**6, 10**9) == 256
    # the fast effort samples half the rule's blocks (rounded up), never more; an explicit count stays as it is
    assert [adapt.sample_size(n, effort=1) for n in (1, 9, 16, 64, 384, 10**6)] == [1, 8, 8, 8, 24, 32]
    assert adapt.sample_size(16, None, 64, effort=1) == 4 and adapt.sample_size(16, None, 64) == 8
    assert adapt.sample_size(384, 16, effort=1) == 16


def test_the_fast_effort_fits_half_the_sample_without_the_latent_shift_and_decodes_exactly(monkeypatch):
    """effort=1: choose samples half the blocks and never calls fit_latent; the payload decodes exactly with
    the one decoder; an effort outside adapt.EFFORTS is refused by name."""
    img = photo_crop(box=(0, 0, 128, 96))
    arr = np.asarray(img)
    bc = resolve(None).block_coder("bitswap")
    calls, sampled = [], []
    fit_latent, sample = adapt.fit_latent, adapt._sample
    monkeypatch.setattr(adapt, "fit_latent", lambda *a, **k: calls.append(1) or fit_latent(*a, **k))
    monkeypatch.setattr(adapt, "_sample", lambda *a: sampled.append(n := list(sample(*a))) or iter(n))
    adapt.choose(bc, [arr])
    adapt.choose(bc, [arr], effort=1)
    # 12 blocks: the full fit samples all 12 (its rule's 16, capped), and fit_latent samples them again;
    # the fast fit samples 8 (half of 16) and fits no latent shift
    assert calls == [1] and [len(s[0][1]) for s in sampled] == [12, 12, 8]
    for effort in (1, 2):
        data = bitswap_core.compress(img, smallest=False, effort=effort)
        assert bitswap_core.decompress(data).tobytes() == img.tobytes()
    for bad in (0, 3, "fast", True):
        with pytest.raises(ValueError, match="effort"):
            bitswap_core.compress(img, smallest=False, effort=bad)
        with pytest.raises(ValueError, match="effort"):
            adapt.choose(bc, [arr], effort=bad)
