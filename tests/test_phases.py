"""4-phase p(x|z1): each 2x2 cell's pixels are coded in four steps, later ones conditioned on earlier ones.

The coder must feed every phase the same context the encoder used (earlier phases only, padding never),
so these tests use random weights with a strong context path: any mismatch breaks the round trip.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import noise_image, photo_crop

import bitswap_core
from bitswap_core.model import phases
from bitswap_core.model.config import PRESETS, ModelConfig


@pytest.fixture(scope="module", params=["tiny-phases", "tiny-predictor", "tiny-residual", "tiny-deep"])
def phase_model_path(tmp_path_factory, request):
    from bitswap_core.model.export import export_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.registry import save_model

    torch.manual_seed(1)
    model = BitSwapModel(PRESETS[request.param]).eval()
    with torch.no_grad():  # make the pixel context matter a lot, so that a wrong context cannot decode
        for head in model.phase_heads:
            head.ctx_in.g.mul_(20.0)
            for blk in head.blocks:  # and the phase blocks far from their neutral start
                blk.conv2.g.fill_(float(blk.conv1.g.mean()))
            n = model.predictor_channels()
            if n:  # and the neighbour predictor's (and colour residual's) weights far from zero
                head.conv_out.g[-n:].fill_(head.conv_out.g[:-n].mean() * 3.0)
                head.conv_out.bias[-n:].fill_(0.5)
    path = tmp_path_factory.mktemp("models") / f"{request.param}.safetensors"
    save_model(path, model.cfg, export_tensors(model), {"purpose": "tests"})
    return path, model


def same(a, b) -> bool:
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("codec", ["bitswap", "bbans"])
@pytest.mark.parametrize("size", [(1, 1), (2, 1), (5, 3), (33, 65), (31, 64)])
def test_phase_model_round_trips_any_size(phase_model_path, codec, size):
    img = noise_image(size[1], size[0], seed=size[0] + 7)
    data = bitswap_core.compress(img, phase_model_path[0], codec=codec, smallest=False)
    assert same(bitswap_core.decompress(data, phase_model_path[0]), img)


def test_phase_model_batch_gives_the_same_bytes_and_decodes_in_any_batch(phase_model_path):
    path = phase_model_path[0]
    imgs = [photo_crop(box=(0, 0, 40, 40)), noise_image(21, 70, 1), photo_crop(box=(10, 10, 75, 43))]
    together = bitswap_core.compress_batch(imgs, path, smallest=False)
    assert together == [bitswap_core.compress(im, path, smallest=False) for im in imgs]
    back = bitswap_core.api.decompress_batch(together[::-1], path)[::-1]
    assert all(same(a, b) for a, b in zip(imgs, back))


def test_exact_cost_matches_the_float_model(phase_model_path):
    """The exact coder's -ELBO of photo tiles is the float (training) model's, up to latent sampling."""
    from bitswap_core.coding.bitsback import elbo_bits
    from bitswap_core.registry import load_model

    path, model = phase_model_path
    img = np.asarray(photo_crop(box=(0, 0, 128, 96)))
    tiles = torch.from_numpy(img.reshape(3, 32, 4, 32, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, 32, 32).copy())
    exact = load_model(path)
    mosaic = tiles.permute(0, 2, 3, 1).reshape(-1, 32, 3).numpy()
    exact_bpd = elbo_bits(exact.block_coder("bitswap", border=False), [mosaic])[0] / mosaic.size
    with torch.no_grad():
        torch.manual_seed(0)
        float_bpd = float(np.mean([model(tiles.float())["bpd"].item() for _ in range(8)]))
    assert abs(exact_bpd - float_bpd) < 0.03 * float_bpd, (exact_bpd, float_bpd)


def test_context_reads_earlier_phases_only():
    """Phase k's context channels are exactly the colours of phases 0..k-1; each phase is a disjoint
    quarter of the cell and the valid extents cover exactly the real pixels of an odd-sized block."""
    seen: set[int] = set()
    for k in range(4):
        assert set(phases.context(3, k)) == seen
        seen |= set(phases.squeezed(3, k))
    assert seen == set(range(12))
    grid = np.zeros((32, 32), dtype=int)
    for k, (dy, dx) in enumerate(phases.offsets(4)):
        r, c = phases.valid_extent(31, 5, dy, dx)
        phases.view(grid, 4, k)[:r, :c] += 1
    assert grid[:31, :5].min() == 1 and grid.sum() == 31 * 5


def test_warm_start_extends_a_one_phase_model(tmp_path):
    """A 1-phase checkpoint warm-starts a 4-phase model: shared weights copied, phase heads derived."""
    from bitswap_core.model.float_model import BitSwapModel
    from jobs.training import TrainConfig, save_checkpoint, warm_start

    torch.manual_seed(0)
    base = BitSwapModel(PRESETS["tiny"])
    opt = torch.optim.Adam(base.parameters())
    save_checkpoint(tmp_path / "c.pt", base, base, opt, 0, TrainConfig(), [])
    ext = BitSwapModel(replace(PRESETS["tiny"], pixel_phases=4))
    warm_start(ext, tmp_path / "c.pt")
    assert torch.equal(ext.px_net.conv_in.v, base.px_net.conv_in.v)
    rows = ext.phase_rows(2)
    assert torch.equal(ext.phase_heads[1].conv_out.v, base.px_net.conv_out.v[rows])


def test_models_saved_before_phases_keep_their_id():
    """pixel_phases=1 is left out of the canonical config, so older model ids (and payloads) still match:
    every shipped model loads, and loading checks the id recorded in the file against its contents."""
    from bitswap_core.registry import load_model, zoo_models

    assert "pixel_phases" not in ModelConfig().to_json()
    assert '"pixel_phases": 4' in replace(ModelConfig(), pixel_phases=4).to_json()
    assert zoo_models()
    for path in zoo_models():
        load_model(path)


def test_phase_parameters_depend_on_earlier_real_pixels_only(phase_model_path):
    from bitswap_core.registry import load_model

    m = load_model(phase_model_path[0]).exact
    rng = np.random.default_rng(0)
    z1 = torch.from_numpy(rng.integers(0, m.cfg.z_bins, (2, m.cfg.z_channels, 16, 16)))
    trunk = m.px_trunk(z1)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 32, 32)))
    known = torch.ones((2, 1, 32, 32), dtype=torch.int64)
    known[1, :, 29:] = 0  # block 1 has 29 real rows
    ref = m.p_pixels(trunk, 2, x, known)
    later = x.clone()
    phases.view(later, 4, 2)[:] = 0  # this phase and later ones: not read
    phases.view(later, 4, 3)[:] = 0
    later[1, :, 29:] = 7  # padding: not read
    got = m.p_pixels(trunk, 2, later, known)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    earlier = x.clone()
    phases.view(earlier, 4, 1)[:] = 255 - phases.view(earlier, 4, 1)
    got = m.p_pixels(trunk, 2, earlier, known)
    assert not torch.equal(ref["mean"], got["mean"])


def _bordered_known(side: int, rows: int, cols: int) -> torch.Tensor:
    """Known masks of two (side x side) blocks: block 0 all real but for part of a border row (side 33:
    the next blocks' first row and column, blocks.bordered), block 1 rows x cols real pixels."""
    known = torch.ones((2, 1, side, side), dtype=torch.int64)
    known[0, :, 32:, 20:] = 0
    known[1, :, rows:] = 0
    known[1, :, :, cols:] = 0
    return known


@pytest.mark.parametrize("side", [32, 33])
def test_neighbour_prediction_is_the_floor_mean_of_real_earlier_neighbours(side):
    """Reference loop over pixels: the later phases' predictor reads only neighbours of earlier phases
    that are real pixels inside the block (or its border, on bordered blocks), and rounds their mean down
    in 1/F pixel units."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, side, side)))
    known = _bordered_known(side, 23, 30)  # block 1: 23 x 30 real pixels
    phase_of = np.zeros((side, side), dtype=int)
    for k in range(4):
        phases.view(phase_of, 4, k)[:] = k
    for k in range(1, 4):
        got = phases.neighbour_prediction(x, known, k, 8)
        dy, dx = phases.offsets(4)[k]
        steps = ((-1, -1), (-1, 1), (1, -1), (1, 1)) if k == 1 else ((0, -1), (0, 1), (-1, 0), (1, 0))
        for b in range(2):
            for i in range(16):
                for j in range(16):
                    r, c = 2 * i + dy, 2 * j + dx
                    if not known[b, 0, r, c]:
                        continue
                    nb = [(r + a, c + e) for a, e in steps if 0 <= r + a < side and 0 <= c + e < side
                          and known[b, 0, r + a, c + e] and phase_of[r + a, c + e] < k]
                    assert nb, (k, r, c)
                    total = sum(x[b, :, p, q] for p, q in nb)
                    assert torch.equal(got[b, :, i, j], torch.div(total * 8, len(nb), rounding_mode="floor"))


# NEIGHBOURS_4 as offsets in the pixel grid, in their order (the spikes' and blend's tie-breaking reads it)
_ORDER = {1: ((-1, -1), (-1, 1), (1, -1), (1, 1)), 2: ((0, -1), (0, 1), (-1, 0), (1, 0)),
          3: ((-1, 0), (1, 0), (0, -1), (0, 1))}


def _real_neighbours(x, known, phase: int):
    """Reference loop: (block, channel, i, j, the values of its real neighbours in order) for every real
    pixel of a phase of a (B, C, S, S) grid (the block, or phase (0,0)'s grid for its sub-phases)."""
    size = x.shape[-1]
    dy, dx = phases.offsets(4)[phase]
    for b in range(x.shape[0]):
        for i in range(size // 2):
            for j in range(size // 2):
                r, c = 2 * i + dy, 2 * j + dx
                if known[b, 0, r, c]:
                    for ch in range(x.shape[1]):
                        yield b, ch, i, j, [int(x[b, ch, r + a, c + e]) for a, e in _ORDER[phase]
                                            if 0 <= r + a < size and 0 <= c + e < size and known[b, 0, r + a, c + e]]


@pytest.mark.parametrize("side", [32, 33])
def test_neighbour_spikes_name_the_value_most_real_earlier_neighbours_share(side):
    """The spike value is the first neighbour (in NEIGHBOURS_4 order) whose value the most real earlier
    neighbours share, its class the number of real neighbours that differ, -1 below two; the runner-up
    likewise among the neighbours that differ from it, -1 where none do or there is no spike."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.integers(0, 3, (2, 3, side, side)))  # few values: agreements of every kind
    known = _bordered_known(side, 21, 27)
    seen = set()
    for k in range(1, 4):
        value, cls, runner_up = phases.neighbour_spikes(x, known, k)
        for b, ch, i, j, nb in _real_neighbours(x, known, k):
            counts = [nb.count(v) for v in nb]
            best = nb[counts.index(max(counts))]
            want = len(nb) - max(counts) if max(counts) >= 2 else -1
            assert int(cls[b, ch, i, j]) == want, (k, b, ch, i, j)
            if want >= 0:
                assert int(value[b, ch, i, j]) == best
            rest = [v for v in nb if v != best]
            second = max(rest, key=lambda v: (rest.count(v), -rest.index(v))) if rest else -1
            assert int(runner_up[b, ch, i, j]) == (second if want >= 0 else -1), (k, b, ch, i, j)
            seen.add((want, second >= 0 and want >= 0))
    assert seen == {(-1, False), (0, False), (1, True), (2, True)}


@pytest.mark.parametrize("side", [32, 33])
def test_sub_phase_context_is_the_neighbour_mean_and_the_class_of_their_range(side):
    """On phase (0,0)'s grid (its first sub-phase's, for sub-phases 5-7): the floored mean (in 1/8 units) of
    the real neighbours of a sub-phase pixel and the class of their max - min (0-1, 2-5, 6-15, 16+; 0 without
    neighbours)."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.integers(0, 40, (2, 3, side, side)))
    x[0, :, :8, :8] = 5  # a flat patch: neighbours that agree (class 0)
    known = _bordered_known(side, 13, 22)
    seen = set()
    for sub in (1, 2, 3, 5, 6, 7):  # 5-7: sub-phase 0's own, on its grid (container v18)
        pred, cls = phases.step_context((0, sub), x, known, 8)
        gx, gk = phases.view(x, 4, 0), phases.view(known, 4, 0)
        if sub > 4:
            gx, gk = phases.view(gx, 4, 0), phases.view(gk, 4, 0)
        assert pred.shape[-1] == (gx.shape[-1] // 2) and pred.shape[-1] > 0
        for b, ch, i, j, nb in _real_neighbours(gx, gk, sub % 4):
            spread = max(nb) - min(nb)
            want = 0 if spread < 2 else 1 if spread < 6 else 2 if spread < 16 else 3
            assert int(pred[b, ch, i, j]) == sum(nb) * 8 // len(nb), (sub, b, ch, i, j)
            assert int(cls[b, ch, i, j]) == want, (sub, b, ch, i, j)
            seen.add(want)
    assert seen == {0, 1, 2, 3}
    # a later phase's context is the same in the block's grid, and the first sub-phase has none
    pred, cls = phases.step_context((2, -1), x, known, 8)
    for b, ch, i, j, nb in _real_neighbours(x, known, 2):
        assert int(pred[b, ch, i, j]) == sum(nb) * 8 // len(nb)
    for first in ((0, 0), (0, 4)):
        with pytest.raises(ValueError, match="no decoded neighbours"):
            phases.step_context(first, x, known, 8)


@pytest.mark.parametrize("side", [32, 33])
def test_colour_context_is_the_neighbours_mean_difference_to_the_previous_channel_and_its_range_class(side):
    """For each step with decoded neighbours and channel c >= 1: the floored mean (1/8 units) of x_c - x_(c-1)
    over the real neighbours (negative differences included) and the class of its max - min (0-1, 2-3,
    4-7, 8-15, 16-31, 32+; 0 without neighbours)."""
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.integers(0, 80, (2, 3, side, side)))
    x[0, :, :8, :8] = 5  # a grey patch: differences that agree (class 0)
    x[1, 1, :12, :12] = x[1, 0, :12, :12] + 3  # G follows R: agreeing differences on a varied patch
    x[1, 2, :12, :12] = x[1, 1, :12, :12] + torch.from_numpy(rng.integers(0, 4, (12, 12)))  # and B nearly follows G
    known = _bordered_known(side, 13, 22)
    seen = set()
    for step in ((0, 1), (0, 2), (0, 3), (1, -1), (2, -1), (3, -1)):
        pred, cls = phases.colour_context(step, x, known, 8)
        assert pred.shape == cls.shape == (2, 2) + ((8, 8) if step[0] == 0 else (16, 16))
        xs, ks, k = (phases.view(x, 4, 0), phases.view(known, 4, 0), step[1]) if step[0] == 0 else (x, known, step[0])
        diff = xs[:, 1:] - xs[:, :-1]
        for b, ch, i, j, nb in _real_neighbours(diff, ks, k):
            spread = max(nb) - min(nb)
            want = sum(e <= spread for e in (2, 4, 8, 16, 32))
            assert int(pred[b, ch, i, j]) == sum(nb) * 8 // len(nb), (step, b, ch, i, j)
            assert int(cls[b, ch, i, j]) == want, (step, b, ch, i, j)
            seen.add(want)
    assert seen == set(range(6))
    with pytest.raises(ValueError, match="no decoded neighbours"):
        phases.colour_context((0, 0), x, known, 8)


@pytest.mark.parametrize("before, after", [("tiny-phases", "tiny-predictor"), ("tiny-predictor", "tiny-residual"),
                                           ("tiny-residual", "tiny-deep")])
def test_predictor_starts_neutral_when_a_model_is_extended_with_it(tmp_path, before, after):
    """Warm-starting a predictor (colour residual) model from a model file without one gives the same
    -ELBO: the new weights start at zero, so a shipped model can be extended and trained on."""
    from bitswap_core.model.export import export_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.registry import save_model
    from jobs.training import warm_start

    torch.manual_seed(2)
    base = BitSwapModel(PRESETS[before]).eval()
    with torch.no_grad():  # a source whose own predictor is far from neutral
        for head in base.phase_heads:
            head.conv_out.g.mul_(3.0)
    path = tmp_path / "base.safetensors"
    save_model(path, base.cfg, export_tensors(base))
    ext = BitSwapModel(PRESETS[after]).eval()
    warm_start(ext, path)
    src = BitSwapModel(PRESETS[before]).eval()
    warm_start(src, path)
    x = torch.from_numpy(np.array(photo_crop(box=(0, 0, 64, 32)))).permute(2, 0, 1).float()
    x = torch.stack([x[:, :, :32], x[:, :, 32:]])
    with torch.no_grad():
        torch.manual_seed(0)
        a = ext(x)["bpd"]
        torch.manual_seed(0)
        b = src(x)["bpd"]
    assert torch.equal(a, b)


def test_colour_residual_with_full_weights_predicts_neighbour_colour_differences(phase_model_path):
    """g = 1 and h = 1 give the classical interpolation of colour differences: mean_G = P_G + (R - P_R)
    and mean_B = P_B + (G - mean_G), in 1/F pixel units and clamped to [0, 255 F]; the raw-value colour
    coefficients then no longer matter. h = 0 leaves the predictor's means unchanged."""
    from bitswap_core.registry import load_model

    path, _ = phase_model_path
    m = load_model(path).exact
    if not m.cfg.colour_residual:
        pytest.skip("no colour residual")
    f, hi = m.cfg.mean_frac, 255 * m.cfg.mean_frac
    rng = np.random.default_rng(5)
    shape = (2, 3, 16, 16)
    x = torch.from_numpy(rng.integers(0, 256, shape))
    pred = torch.from_numpy(rng.integers(0, hi + 1, shape))
    full = torch.full(shape, 64, dtype=torch.int64)
    params = {"mean": torch.from_numpy(rng.integers(0, hi + 1, shape)), "scale": torch.zeros(shape, dtype=torch.int64),
              "coef": torch.from_numpy(rng.integers(-64, 65, shape)), "gate": full, "pred": pred,
              "rcoef": torch.stack([full[:, 0], torch.zeros_like(full[:, 0]), full[:, 0]], 1)}
    r = m.conditional_mean(params, 0, x)
    g = m.conditional_mean(params, 1, x)
    b = m.conditional_mean(params, 2, x)
    assert torch.equal(r, pred[:, 0])
    assert torch.equal(g, torch.clamp(pred[:, 1] + f * x[:, 0] - pred[:, 0], 0, hi))
    assert torch.equal(b, torch.clamp(pred[:, 2] + f * x[:, 1] - g, 0, hi))
    params["rcoef"] = torch.zeros(shape, dtype=torch.int64)
    assert torch.equal(m.conditional_mean(params, 2, x), pred[:, 2])


@pytest.mark.parametrize("split", [3, 2, 1, 0])
def test_coding_steps_visit_every_real_pixel_once(phase_model_path, split):
    """The steps' views and extents partition each block's real pixels (any valid size): nothing is coded
    twice or left out, with phase (0,0) whole (container v1-v3), in sub-phases (v4-v17), with its first
    sub-phase split again (v18) or once more (split 3, bench/split_depth.py's probe)."""
    from bitswap_core.registry import load_model

    bc = load_model(phase_model_path[0]).block_coder("bitswap", split)
    assert len(bc.steps) == 4 + 3 * split
    valid = np.array([(32, 32), (1, 1), (7, 32), (32, 5), (3, 2), (17, 30)])
    seen = np.zeros((len(valid), 32, 32), dtype=int)
    for step in range(len(bc.steps)):
        for i, (r, c) in enumerate(bc._extents(step, valid)):
            bc.step_view(seen, step)[i, :r, :c] += 1
    for i, (r, c) in enumerate(valid):
        assert (seen[i, :r, :c] == 1).all() and seen[i].sum() == r * c


def test_the_order_inside_phase_0_does_not_change_the_model_cost(phase_model_path):
    """Phase (0,0)'s distributions depend on z1 alone, so coding it in sub-phases is free: the same -ELBO
    (up to float summation order) without spikes."""
    from bitswap_core.coding.bitsback import elbo_bits
    from bitswap_core.registry import load_model

    m = load_model(phase_model_path[0])
    img = [np.asarray(photo_crop(box=(0, 0, 45, 37)))]
    whole, split, deeper = (elbo_bits(m.block_coder("bitswap", s, border=False), img)[0] for s in (0, 1, 2))
    assert abs(whole - split) < 1e-6 * whole and abs(whole - deeper) < 1e-6 * whole


def test_bordered_blocks_hold_the_next_blocks_first_row_and_column():
    """blocks.bordered: row 32 and column 32 are the image's pixels just below and to the right of the
    block where the image has them (known 1), 0 and unknown beyond the image; the block's padding is
    unknown too. Checked against the image itself for a 3 x 3 grid with a partial last row and column."""
    from bitswap_core.blocks import bordered, grid, to_blocks, valid_sizes

    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (70, 75, 3), dtype=np.uint8)
    blocks, valid = to_blocks(img), valid_sizes(70, 75)
    gh, gw = grid(70, 75)
    x, known = bordered(blocks, valid, gw, np.arange(gh * gw))
    assert x.shape == (9, 3, 33, 33) and known.shape == (9, 1, 33, 33)
    for t in range(gh * gw):
        a, b = divmod(t, gw)
        for r in range(33):
            for c in range(33):
                inside = 32 * a + r < 70 and 32 * b + c < 75
                assert known[t, 0, r, c] == inside, (t, r, c)
                if inside:
                    assert (x[t, :, r, c] == img[32 * a + r, 32 * b + c]).all(), (t, r, c)
                elif r == 32 or c == 32:
                    assert not x[t, :, r, c].any()


def test_v8_coding_reads_the_next_blocks_and_v7_coding_stays_available(phase_model_path):
    """A bordered coder (container v8) and an unbordered one (v4-v7) both round-trip an image of several
    block rows and columns, with different bytes (the border feeds the neighbour predictor, spikes and
    blend); the v8 bytes do not decode as v7 (the decoder must use the container's version)."""
    from bitswap_core.coding import adapt
    from bitswap_core.coding.bitsback import decode_images, encode_images
    from bitswap_core.errors import CorruptPayloadError
    from bitswap_core.registry import load_model

    model = load_model(phase_model_path[0])
    img = np.asarray(photo_crop(box=(0, 0, 75, 70)), dtype=np.uint8)
    out = {}
    for border in (True, False):
        bc = model.block_coder("bitswap", border=border)
        assert bc.border == border
        ads = adapt.choose(bc, [img])
        coders = encode_images(bc, [img], adaptations=ads)
        out[border] = (coders[0].to_bytes(), ads)
        assert (decode_images(bc, coders, [img.shape], ads)[0] == img).all()
    assert out[True][0] != out[False][0]
    from bitswap_core.coding.rans import AnsCoder

    v7 = model.block_coder("bitswap", border=False)
    try:
        wrong = decode_images(v7, [AnsCoder.from_bytes(out[True][0], v7.bed_words, True)], [img.shape], out[True][1])
        assert not (wrong[0] == img).all()
    except CorruptPayloadError:
        pass


def test_exact_cost_with_the_border_matches_the_float_model_on_bordered_blocks(phase_model_path):
    """Container v8's coder and the float model trained with --border agree: the exact -ELBO of an image
    coded with the next blocks' border is the float model's on the same blocks bordered (blocks.bordered),
    up to latent sampling; and with a predictor the border changes the cost (edge cells average more
    neighbours; whether that pays depends on the weights, which here are random)."""
    from bitswap_core.blocks import bordered, grid, to_blocks, valid_sizes
    from bitswap_core.coding.bitsback import elbo_bits
    from bitswap_core.registry import load_model

    path, model = phase_model_path
    img = np.asarray(photo_crop(box=(0, 0, 128, 96)))
    exact = load_model(path)
    exact_bpd = {b: elbo_bits(exact.block_coder("bitswap", border=b), [img])[0] / img.size for b in (False, True)}
    blocks, valid = to_blocks(img), valid_sizes(96, 128)
    x, known = bordered(blocks, valid, grid(96, 128)[1], np.arange(len(blocks)))
    x, known = torch.from_numpy(x).float(), torch.from_numpy(known).float()
    with torch.no_grad():
        torch.manual_seed(0)
        float_bpd = float(np.mean([model(x, known=known)["bpd"].item() for _ in range(8)]))
    assert abs(exact_bpd[True] - float_bpd) < 0.03 * float_bpd, (exact_bpd, float_bpd)
    if model.cfg.phase_predictor:
        assert exact_bpd[True] != exact_bpd[False]


def test_a_latent_layer_grown_on_top_starts_as_the_fixed_prior_and_codes_exactly(tmp_path):
    """Warm-starting a three-layer model from a two-layer file (BitSwapModel.init_new_top_layers): the new
    p(z2 | z3) gives the old top prior's levels exactly, whatever z3 holds, in the float model and in the
    exported exact one, and the grown model codes images losslessly with both codecs."""
    import bitswap_core
    from bitswap_core.model.export import export_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.model.quant import top_prior_levels
    from bitswap_core.registry import load_model, save_model
    from jobs.training import model_from_file, warm_start

    torch.manual_seed(3)
    base = BitSwapModel(PRESETS["tiny-deep"]).eval()
    path = tmp_path / "base.safetensors"
    save_model(path, base.cfg, export_tensors(base))
    grown = BitSwapModel(replace(PRESETS["tiny-deep"], nz=3)).eval()
    warm_start(grown, path)
    assert torch.equal(grown.q_nets[1].conv_out.v, model_from_file(path).q_nets[1].conv_out.v)
    mean_lvl, scale_lvl = top_prior_levels(grown.cfg)
    z3 = torch.randn(4, grown.cfg.z_channels, 16, 16) * 3
    with torch.no_grad():
        pre = grown.p_nets[1](grown.z_to_input(z3))
    zc = grown.cfg.z_channels
    assert (grown.heads["z_mean"].level(pre[:, :zc]) == mean_lvl).all()
    assert (grown.heads["z_scale"].level(pre[:, zc:]) == scale_lvl).all()

    out = tmp_path / "grown.safetensors"
    save_model(out, grown.cfg, export_tensors(grown))
    exact = load_model(out)
    bins = torch.randint(0, grown.cfg.z_bins, (4, zc, 16, 16))
    means, scales = exact.exact.p_latent(1, bins)
    top_means, top_scales = exact.exact.top_prior(4)
    assert torch.equal(means.cpu(), top_means) and torch.equal(scales.cpu(), top_scales)
    img = photo_crop(box=(0, 0, 70, 45))
    for codec in ("bitswap", "bbans"):
        data = bitswap_core.compress(img, exact, codec=codec, smallest=False)
        assert np.array_equal(np.asarray(bitswap_core.decompress(data, exact)), np.asarray(img))


def test_encoder_blocks_start_neutral_and_a_model_with_them_codes_exactly(tmp_path):
    """Warm-starting a model with extra encoder blocks (ModelConfig.encoder_blocks) from one without: the
    exported tensors are the old model's plus the new blocks, q(z1|x) gives the same outputs, and once the
    blocks hold weights the model still codes losslessly; a file that lacks the blocks is refused."""
    import bitswap_core
    from bitswap_core.errors import UnsupportedFormatError
    from bitswap_core.model.export import export_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.registry import load_model, save_model
    from jobs.training import model_from_file, warm_start

    torch.manual_seed(5)
    base = BitSwapModel(PRESETS["tiny-deep"]).eval()
    path = tmp_path / "base.safetensors"
    save_model(path, base.cfg, export_tensors(base))
    base = model_from_file(path)  # what the warm start reads (an exact file's float weights)
    grown = BitSwapModel(replace(PRESETS["tiny-deep"], encoder_blocks=2)).eval()
    warm_start(grown, path)
    before, after = export_tensors(base), export_tensors(grown)
    assert sorted(set(after) - set(before)) == [f"q0.blocks.{j}.conv{c}.{t}" for j in (1, 2) for c in (1, 2)
                                                 for t in "bmw"]
    assert all(np.array_equal(before[k], after[k]) for k in before)
    x = torch.randint(0, 256, (3, 3, 32, 32)).float()
    a = torch.nn.functional.pixel_unshuffle(x - 128.0, 2)
    with torch.no_grad():
        assert torch.equal(grown.q_nets[0](a), base.q_nets[0](a))
        for blk in grown.q_nets[0].extra_blocks():
            blk.conv2.g.fill_(0.5)
        assert not torch.equal(grown.q_nets[0](a), base.q_nets[0](a))

    out = tmp_path / "grown.safetensors"
    save_model(out, grown.cfg, export_tensors(grown))
    exact = load_model(out)
    img = photo_crop(box=(0, 0, 70, 45))
    for codec in ("bitswap", "bbans"):
        data = bitswap_core.compress(img, exact, codec=codec, smallest=False)
        assert np.array_equal(np.asarray(bitswap_core.decompress(data, exact)), np.asarray(img))
    assert bitswap_core.compress(img, exact, smallest=False) != bitswap_core.compress(img, load_model(path),
                                                                                       smallest=False)
    lacking = tmp_path / "lacking.safetensors"
    save_model(lacking, grown.cfg, {k: v for k, v in export_tensors(grown).items() if not k.startswith("q0.blocks.2")})
    with pytest.raises(UnsupportedFormatError, match="q0.blocks.2"):
        load_model(lacking)
