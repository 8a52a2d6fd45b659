"""Training job: exact resume, export to an exact model that codes losslessly, float/exact agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bitswap_core
from bitswap_core.registry import load_model
from jobs.training import (
    TrainConfig,
    export_model,
    float_and_exact_bpd,
    load_checkpoint,
    model_from_checkpoint,
    tile_blocks,
    train,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ROOT = SAMPLES.parent
TC = dict(steps=8, batch=8, eval_every=4, val_blocks=16, warmup=2)


def _train(tmp: Path, name: str, **kw) -> Path:
    return train(str(SAMPLES), tmp / name, "tiny", TrainConfig(**TC), max_side=160, log=lambda *_: None, **kw)


def test_resume_continues_exactly(tmp_path):
    straight = load_checkpoint(_train(tmp_path, "a"))
    _train(tmp_path, "b", stop_after=3)
    resumed = load_checkpoint(_train(tmp_path, "b", resume=True))
    assert straight["step"] == resumed["step"] == TC["steps"]
    for key in ("model", "ema"):
        for name, t in straight[key].items():
            assert torch.equal(t, resumed[key][name]), f"{key}.{name} differs after resume"


def test_crop_seed_changes_the_crops_and_keeps_the_validation_tiles(tmp_path):
    """--crop-seed gives a continued stage crops the last one did not see (--seed still picks the validation
    tiles and the latent noise); left out, or equal to --seed, it is the run it was before the option."""
    def run(name: str, **kw) -> dict:
        tc = TrainConfig(**{**TC, "steps": 4, **kw})
        return load_checkpoint(train(str(SAMPLES), tmp_path / name, "tiny", tc, max_side=160, log=lambda *_: None))

    same, plain, other = run("same", crop_seed=0), run("plain"), run("other", crop_seed=7)
    assert all(torch.equal(t, plain["model"][k]) for k, t in same["model"].items())
    assert not all(torch.equal(t, plain["model"][k]) for k, t in other["model"].items())


def test_export_gives_a_lossless_exact_model_close_to_the_float_model(tmp_path):
    ckpt = _train(tmp_path, "c")
    path = tmp_path / "tiny.safetensors"
    mid = export_model(ckpt, path)
    model = load_model(path)
    assert model.id == mid and model.info["step"] == TC["steps"]
    img = Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB").crop((0, 0, 64, 64))
    data = bitswap_core.compress(img, model, smallest=False)
    assert bitswap_core.decompress(data, model).tobytes() == img.tobytes()
    # the exact (integer) model's -ELBO tracks the float model's on the same tiles: what was trained codes
    r = float_and_exact_bpd(ckpt, path, tile_blocks([np.asarray(img)]))
    exact_bpd, float_bpd = r["exact_bpd"], r["float_bpd"]
    assert abs(exact_bpd - float_bpd) / float_bpd < 0.03, (exact_bpd, float_bpd)


def test_export_of_several_runs_is_the_mean_of_their_ema_weights(tmp_path):
    """`bitswap export A B OUT`: two runs continued from one start (other crops) export the mean of their
    EMA weights, a model that codes losslessly; a run of another configuration is refused (exit 2)."""
    from jobs.cli import main

    start = _train(tmp_path, "start")
    tc = TrainConfig(**{**TC, "steps": 3})
    a, b = (train(str(SAMPLES), tmp_path / f"run{s}", "tiny", TrainConfig(**{**tc.__dict__, "crop_seed": s}),
                  max_side=160, init_from=start, log=lambda *_: None) for s in (1, 2))
    out = tmp_path / "soup.safetensors"
    assert main(["export", str(a), str(b), str(out)]) == 0
    soup = model_from_checkpoint(out.with_suffix(".soup.pt")).state_dict()
    ea, eb = load_checkpoint(a)["ema"], load_checkpoint(b)["ema"]
    assert not torch.equal(ea["px_net.conv_in.v"], eb["px_net.conv_in.v"])
    for name, t in soup.items():
        if t.is_floating_point():
            assert torch.allclose(t, (ea[name].double() + eb[name].double()).div(2).float(), atol=1e-7), name
    model = load_model(out)
    assert model.info["soup_of"] == [str(a), str(b)]
    img = Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB").crop((0, 0, 40, 36))
    assert bitswap_core.decompress(bitswap_core.compress(img, model, smallest=False), model).tobytes() == img.tobytes()

    other = train(str(SAMPLES), tmp_path / "other", "tiny-predictor", tc, max_side=160, log=lambda *_: None)
    assert main(["export", str(a), str(other), str(tmp_path / "bad.safetensors")]) == 2
    assert not (tmp_path / "bad.safetensors").exists()


def test_data_parallel_training_with_ddp_on_cpu(tmp_path):
    """torch DDP over two gloo processes (the same code runs NCCL, one process per GPU)."""
    ckpt = train(str(SAMPLES), tmp_path / "ddp", "tiny", TrainConfig(**{**TC, "steps": 3}), max_side=160,
                 device="cpu", world_size=2, log=lambda *_: None)
    ck = load_checkpoint(ckpt)
    assert ck["step"] == 3
    fresh = model_from_checkpoint(ckpt, use_ema=False).state_dict()
    assert all(torch.isfinite(t).all() for t in fresh.values())


def test_cli_extends_a_one_phase_run_to_four_phases(tmp_path):
    """`bitswap train --pixel-phases 4 --init-from CKPT` continues from a 1-phase run; the result codes."""
    from jobs.cli import main

    base = _train(tmp_path, "one")
    out = tmp_path / "four.safetensors"
    rc = main(["train", str(SAMPLES), "--config", "tiny", "--pixel-phases", "4", "--init-from", str(base),
               "--steps", "3", "--batch", "8", "--warmup", "1", "--lr", "1e-12", "--lr-min", "1e-12",
               "--max-side", "160", "--out", str(out)])
    assert rc == 0
    model = load_model(out)
    assert model.cfg.pixel_phases == 4
    ck = load_checkpoint(tmp_path / "four.run" / "checkpoint.pt")
    one = load_checkpoint(base)
    for name in ("px_net.conv_in.v", "q_nets.0.conv_in.g"):  # (almost) no learning: still the 1-phase weights
        assert torch.allclose(ck["model"][name], one["ema"][name], atol=1e-6)
    img = Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB").crop((0, 0, 45, 33))
    assert bitswap_core.decompress(bitswap_core.compress(img, model, smallest=False), model).tobytes() == img.tobytes()


@pytest.mark.parametrize("preset", ["tiny", "tiny-predictor", "tiny-deep"])
def test_a_model_file_turns_back_into_float_weights_that_export_to_it(tmp_path, preset):
    """Checkpoints are not shipped: a run warm-starts from a model file. The imported float model
    re-exports to the same integer weights, and to thresholds at most one accumulator step away."""
    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.export import export_tensors, import_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.registry import save_model

    path = tmp_path / "src.safetensors"
    if preset == "tiny":
        export_model(_train(tmp_path, "src"), path)
    else:  # random weights, with the predictor's rows away from their neutral start
        torch.manual_seed(4)
        src = BitSwapModel(PRESETS[preset])
        with torch.no_grad():
            for head in src.phase_heads:
                head.conv_out.g[-3:].fill_(0.5)
                for blk in head.blocks:  # and the phase blocks away from zero
                    blk.conv2.g.fill_(float(blk.conv1.g.mean()))
        save_model(path, src.cfg, export_tensors(src))
    exact = load_model(path)
    model = BitSwapModel(exact.cfg)  # fresh random weights, then the file's
    import_tensors(model, exact.tensors)
    again = export_tensors(model)
    assert set(again) == set(exact.tensors)
    for name, t in exact.tensors.items():
        diff = np.abs(again[name].astype(np.float64) - t.astype(np.float64))
        if ".thr." in name:
            assert diff.max() <= 1 and (diff > 0).mean() < 0.1, name
        elif ".aff." in name:
            assert np.allclose(again[name], t, rtol=1e-6, atol=1e-6), name
        else:
            assert np.array_equal(again[name], t), name


def test_training_can_start_from_a_model_file(tmp_path):
    """`--init-from MODEL.safetensors`: the new run starts where the model file is (its -ELBO, not a
    random model's), and a file that shares no weights with the run's config is refused."""
    from jobs.training import float_and_exact_bpd

    ckpt = _train(tmp_path, "src")
    path = tmp_path / "src.safetensors"
    export_model(ckpt, path)
    tc = TrainConfig(**{**TC, "steps": 1, "lr": 1e-12, "lr_min": 1e-12, "warmup": 1})
    warm = train(str(SAMPLES), tmp_path / "warm", "tiny", tc, max_side=160, init_from=path, log=lambda *_: None)
    img = np.asarray(Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB").crop((0, 0, 64, 64)))
    tiles = tile_blocks([img])
    src_bpd = float_and_exact_bpd(ckpt, path, tiles)["float_bpd"]
    warm_bpd = float_and_exact_bpd(warm, path, tiles)["float_bpd"]
    assert abs(warm_bpd - src_bpd) / src_bpd < 1e-4, (warm_bpd, src_bpd)  # a fresh init is ~2% away
    with pytest.raises(ValueError, match="shares no weights"):
        train(str(SAMPLES), tmp_path / "other", "imagenet", tc, max_side=160, init_from=path,
              log=lambda *_: None)


@pytest.mark.parametrize("preset, n", [("tiny-predictor", 3), ("tiny-residual", 6)])
def test_gate_lr_scale_multiplies_only_the_predictor_rows_steps(tmp_path, preset, n):
    """One Adam step with gate_lr_scale=10 moves the neighbour predictor's (and colour residual's) rows
    10x as far, nothing else."""
    def one_step(name: str, scale: float) -> dict:
        tc = TrainConfig(**{**TC, "steps": 1, "warmup": 1, "gate_lr_scale": scale})
        return load_checkpoint(train(str(SAMPLES), tmp_path / name, preset, tc, max_side=160,
                                     log=lambda *_: None))["model"]

    init = load_checkpoint(train(str(SAMPLES), tmp_path / "init", preset,
                                 TrainConfig(**{**TC, "steps": 0}), max_side=160, log=lambda *_: None))["model"]
    plain, boosted = one_step("plain", 1.0), one_step("boosted", 10.0)
    moved = 0
    for name, t0 in init.items():
        gate = name.startswith("phase_heads.") and ".conv_out." in name
        if gate:
            rest = slice(None, -n)  # 3 channels: the last 3 rows are the gate's (6: and the residual's)
            assert torch.equal(plain[name][rest], boosted[name][rest]), name
            d1, d10 = plain[name][-n:] - t0[-n:], boosted[name][-n:] - t0[-n:]
            assert torch.allclose(d10, 10 * d1, rtol=1e-3, atol=1e-7), name
            moved += int(d1.abs().max() > 0)
        else:
            assert torch.equal(plain[name], boosted[name]), name
    assert moved == 9  # v, g and bias of each of the three phase heads


def test_sensor_noise_perturbs_a_share_of_crops_and_leaves_the_rest_exact():
    """--sensor-noise adds independent per-channel noise to about that share of crops, the same on every
    call for a step (resumable); at 0 the sampler draws exactly the crops it drew before the option."""
    from jobs.training import CropSampler

    rng = np.random.default_rng(0)
    images = [np.full((64, 80, 3), 120, dtype=np.uint8), rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)]
    clean, noisy = CropSampler(images, seed=3), CropSampler(images, seed=3, sensor_noise=0.5)
    a, b = clean.batch(7, 256), noisy.batch(7, 256)
    assert torch.equal(b, noisy.batch(7, 256))
    changed = (a != b).flatten(1).any(1)
    assert 0.35 < changed.float().mean() < 0.65
    assert torch.equal(a[~changed], b[~changed])
    d = (b - a)[changed]
    assert 0 <= b.min() and b.max() <= 255
    assert not torch.equal(d[:, 0], d[:, 1])  # independent per channel, not a shared luminance shift


def test_train_only_moves_just_the_named_parameters_and_boosts_the_phase_blocks(tmp_path):
    """--train-only phase_heads trains a part added to a model with the rest frozen as it is, and
    --block-lr-scale multiplies the Adam steps of the phase heads' residual blocks alone."""
    def run(name: str, **kw) -> dict:
        tc = TrainConfig(**{**TC, "steps": 1, "warmup": 1, **kw})
        return load_checkpoint(train(str(SAMPLES), tmp_path / name, "tiny-deep", tc, max_side=160,
                                     log=lambda *_: None))["model"]

    init = run("init", steps=0)
    only = run("only", trainable=("phase_heads",))
    boosted = run("boosted", trainable=("phase_heads",), block_lr_scale=10.0)
    assert any(not torch.equal(only[k], init[k]) for k in init if k.startswith("phase_heads."))
    for name, t0 in init.items():
        if not name.startswith("phase_heads."):
            assert torch.equal(only[name], t0), name
        elif ".blocks." in name:
            assert torch.allclose(boosted[name] - t0, 10 * (only[name] - t0), rtol=1e-3, atol=1e-7), name
        else:
            assert torch.equal(boosted[name], only[name]), name
    with pytest.raises(ValueError, match="no parameter"):
        run("none", trainable=("nothing.",))


def test_train_only_the_encoder_boosts_its_extra_blocks(tmp_path):
    """--train-only q_nets trains the inference networks alone (experiment Q), and --block-lr-scale
    multiplies the steps of the encoder's extra blocks (ModelConfig.encoder_blocks), which start neutral."""
    def run(name: str, **kw) -> dict:
        tc = TrainConfig(**{**TC, "steps": 1, "warmup": 1, "trainable": ("q_nets",), **kw})
        return load_checkpoint(train(str(SAMPLES), tmp_path / name, "tiny-encoder", tc, max_side=160,
                                     log=lambda *_: None))["model"]

    init, only = run("init", steps=0), run("only")
    boosted = run("boosted", block_lr_scale=10.0)
    extra = "q_nets.0.blocks.1."  # tiny-encoder: one trunk block, then the extra one
    assert any(k.startswith(extra) and not torch.equal(only[k], init[k]) for k in init)
    for name, t0 in init.items():
        if not name.startswith("q_nets."):
            assert torch.equal(only[name], t0), name
        elif name.startswith(extra):
            assert torch.allclose(boosted[name] - t0, 10 * (only[name] - t0), rtol=1e-3, atol=1e-7), name
        else:
            assert torch.equal(boosted[name], only[name]), name


def test_bordered_crops_hold_the_next_row_and_column_and_sometimes_miss_them():
    """--border: 33x33 crops of one window of an image (row and column 32 continue the block), each border
    side missing (known 0, pixels 0) in about BORDER_MISSING of the crops; the block itself always known."""
    from jobs.training import BORDER_MISSING, CropSampler

    rows, cols = np.mgrid[0:90, 0:120]
    image = np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.uint8)  # pixel = its coordinates
    x, known = CropSampler([image], seed=2, border=True).batch(5, 400)
    assert x.shape == (400, 3, 33, 33) and known.shape == (400, 1, 33, 33)
    assert (known[:, :, :32, :32] == 1).all()
    assert torch.equal(x * known, x)
    right, below = known[:, 0, 0, 32] == 1, known[:, 0, 32, 0] == 1
    for missing in (~right, ~below):
        assert 0.5 * BORDER_MISSING < missing.float().mean() < 2 * BORDER_MISSING
    step = x[:, 0, 0, 1] - x[:, 0, 0, 0]  # +1, or -1 where the crop was flipped
    assert torch.equal(x[right, 0, :32, 32], x[right, 0, :32, 31] + step[right, None])
    assert torch.equal(x[below, 1, 32, :32], x[below, 1, 31, :32] + 1)


def test_the_float_model_reads_the_border_only_where_it_is_known(tmp_path):
    """A bordered block whose border is unknown costs exactly what the bare block does; a known border
    changes the neighbour predictor's mean of the later phases' edge cells, so the cost; training with
    --border runs and validates on bordered tiles."""
    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.float_model import BitSwapModel

    torch.manual_seed(0)
    model = BitSwapModel(PRESETS["tiny-predictor"]).eval()
    with torch.no_grad():
        for head in model.phase_heads:  # the predictor's weights far from their neutral start
            head.conv_out.g[-3:].fill_(head.conv_out.g[:-3].mean() * 3.0)
            head.conv_out.bias[-3:].fill_(0.5)
    img = np.asarray(Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB"))[:65, :65]
    x = torch.from_numpy(img.transpose(2, 0, 1)[None, :, :33, :33].copy()).float()
    known = torch.ones((1, 1, 33, 33))

    def cost(inp, kn=None):
        torch.manual_seed(1)
        with torch.no_grad():
            return model(inp, known=kn)["bpd"].item()

    bare = cost(x[..., :32, :32])
    unknown = known.clone()
    unknown[..., 32, :] = 0
    unknown[..., :, 32] = 0
    assert cost(x * unknown, unknown) == bare
    assert cost(x, known) != bare
    ckpt = train(
        str(SAMPLES), tmp_path / "border", "tiny-predictor", TrainConfig(**{**TC, "steps": 4}, border=True),
        max_side=160, log=lambda *_: None)
    history = load_checkpoint(ckpt)["history"]
    assert load_checkpoint(ckpt)["step"] == 4 and "val_bpd" in history


def test_larger_crops_train_the_blocks_the_codec_codes_larger_images_in(tmp_path):
    """--crop-side 64: 64x64 crops (65x65 bordered, the border in row and column 64), validation on 64x64
    tiles of the same pixel count as the 32x32 ones, and the float model's -ELBO of a 64x64 block is the one
    of the same pixels as a block, not of its top-left 32x32 corner."""
    import json

    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.float_model import BitSwapModel
    from jobs.training import CropSampler, val_count

    rows, cols = np.mgrid[0:90, 0:120]
    image = np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.uint8)
    x, known = CropSampler([image], seed=2, border=True, side=64).batch(1, 50)
    assert x.shape == (50, 3, 65, 65) and (known[:, :, :64, :64] == 1).all()
    below = known[:, 0, 64, 0] == 1
    assert below.any() and torch.equal(x[below, 1, 64, :64], x[below, 1, 63, :64] + 1)
    assert val_count(TrainConfig(val_blocks=1024, crop_side=64)) == 256
    torch.manual_seed(0)
    model = BitSwapModel(PRESETS["tiny-predictor"]).eval()
    block = torch.from_numpy(np.asarray(Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB"))[:64, :64].copy())
    block = block.permute(2, 0, 1)[None].float()
    with torch.no_grad():
        torch.manual_seed(1)
        whole = model(block)["bpd"].item()
        torch.manual_seed(1)
        corner = model(block[..., :32, :32])["bpd"].item()
    assert whole != corner
    ckpt = train(str(SAMPLES), tmp_path / "c64", "tiny-predictor",
                 TrainConfig(**{**TC, "steps": 4, "batch": 2}, border=True, crop_side=64), max_side=160,
                 log=lambda *_: None)
    ck = load_checkpoint(ckpt)
    assert ck["step"] == 4 and json.loads(ck["train_config"])["crop_side"] == 64 and "val_bpd" in ck["history"]


def test_gpu_session_script_packs_trains_and_reports_on_cpu(tmp_path):
    """scripts/gpu_session.py is what a lent GPU runs, once, unattended: the same pack and run on the CPU,
    with a tiny model and a few seconds of training, must end in an exported model and a report."""
    import json
    import os
    import subprocess
    import sys

    script = [sys.executable, str(ROOT / "scripts" / "gpu_session.py")]
    pack = tmp_path / "pack"
    subprocess.run(script + ["pack", str(SAMPLES), str(SAMPLES), "--max-side", "96", "--out", str(pack)],
                   check=True, capture_output=True)
    packed = list((pack / "train").iterdir())
    assert packed and all(p.suffix == ".webp" for p in packed)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(script + ["run", "--pack", str(pack), "--config", "tiny-deep", "--init-from", "none",
                                 "--batch", "8", "--train-minutes", "0.05"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["device"] == "cpu" and report["exact_bpd"] > 0 and report["float_bpd"] > 0
    assert load_model(tmp_path / "out" / "model.safetensors").id == report["model_id"]


def test_gpu_session_trains_the_warm_start_models_own_configuration():
    """Without --config the GPU run keeps every part of the model it starts from (the shipped default's
    phase blocks); the preset called "default" lacks them."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_session", ROOT / "scripts" / "gpu_session.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = argparse.Namespace(config=None, init_from="bitswap_core/zoo/default.safetensors")
    assert mod.config_of(args) == load_model(ROOT / args.init_from).cfg
    assert mod.config_of(args).phase_blocks == 1


def test_train_command_keeps_the_configuration_of_the_model_it_starts_from(tmp_path):
    """`bitswap train --init-from M` without --config trains M's own configuration (the preset called
    "default" lacks the shipped model's phase blocks); a resumed run keeps its checkpoint's."""
    from bitswap_core.model.config import PRESETS
    from jobs.cmd_train import model_config

    shipped = ROOT / "bitswap_core" / "zoo" / "default.safetensors"
    assert model_config(None, shipped) == load_model(shipped).cfg and model_config(None, shipped).phase_blocks == 1
    assert model_config(None) == PRESETS["deep-phases"]
    assert model_config("tiny", shipped) == PRESETS["tiny"]
    with pytest.raises(SystemExit, match="presets"):
        model_config("no-such-preset")
    ckpt = _train(tmp_path, "run", stop_after=2)
    assert model_config(None, shipped, resumed=ckpt) == PRESETS["tiny"]
    assert model_config(None, ckpt) == PRESETS["tiny"]


def test_history_starts_where_the_run_starts_and_best_keeps_the_best_ema(tmp_path):
    """The first record is the start's own validation (step 0); with keep_best, best.pt holds the EMA of the
    best later evaluation, and only if one beat the start (a GPU run long on little data can overfit)."""
    import json

    ckpt = train(str(SAMPLES), tmp_path / "k", "tiny", TrainConfig(**{**TC, "steps": 12}, keep_best=True),
                 max_side=160, log=lambda *_: None)
    history = json.loads(load_checkpoint(ckpt)["history"])
    assert [h["step"] for h in history] == [0, 4, 8, 12] and history[0]["train_bpd"] is None
    best = tmp_path / "k" / "best.pt"
    later = min(history[1:], key=lambda h: h["val_bpd"])
    assert best.exists() == (later["val_bpd"] < history[0]["val_bpd"])
    if best.exists():
        ck = load_checkpoint(best)
        assert ck["step"] == later["step"]
        model = model_from_checkpoint(best)  # exportable like a checkpoint, the EMA weights
        assert model_from_checkpoint(ckpt).cfg == model.cfg


def test_prefetched_crops_are_the_samplers_crops():
    """Crops drawn ahead in a thread are the batches of their own steps: prefetching changes no crop."""
    from jobs.training import CropSampler, _Prefetch, load_rgb

    images = [load_rgb(str(p), max_side=160) for p in sorted(SAMPLES.glob("*.png"))[:3]]
    sampler = CropSampler(images, seed=3, sensor_noise=0.5, border=True)
    ahead = _Prefetch(sampler, 4, lambda s: s, steps=6, pin=False)
    try:
        for step in range(6):
            got, want = ahead.get(step), sampler.batch(step, 4)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
    finally:
        ahead.close()


def test_gpu_pack_windows_keep_pixels_at_their_own_scale(tmp_path):
    """`pack --window S` keeps S x S windows of the training images, pixel for pixel (no resampling), as
    many of a larger image as its area holds."""
    import subprocess
    import sys

    pack = tmp_path / "pack"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_session.py"), "pack", str(SAMPLES), str(SAMPLES),
                    "--window", "100", "--out", str(pack)], check=True, capture_output=True)
    packed_all = sorted((pack / "train").iterdir())
    for src_path in SAMPLES.glob("*.png"):
        with Image.open(src_path) as im:
            expect = (im.width // min(100, im.width)) * (im.height // min(100, im.height))
        assert sum(p.stem.rsplit("-", 2)[0] == src_path.stem for p in packed_all) == expect, src_path.name
    for packed in packed_all:
        win = np.asarray(Image.open(packed).convert("RGB"))
        src = np.asarray(Image.open(SAMPLES / (packed.stem.rsplit("-", 2)[0] + ".png")).convert("RGB"))
        assert win.shape[:2] == (min(100, src.shape[0]), min(100, src.shape[1]))
        h, w = win.shape[:2]
        ys, xs = np.nonzero((src[: src.shape[0] - h + 1, : src.shape[1] - w + 1] == win[0, 0]).all(-1))
        assert any(np.array_equal(src[y : y + h, x : x + w], win) for y, x in zip(ys, xs)), packed.name


def test_calibration_shifts_train_on_the_best_per_channel_scale_shift(tmp_path):
    """forward(calibration_shifts=n): the loss takes each block's pixel term at the best of 2n + 1 scale
    shifts per channel (the codec's per-image shifts, mimicked), so it is never above the plain loss and is
    clearly below it for a model whose scales are off by a few grid levels; 'bpd' stays the plain -ELBO and
    the gradient reaches the networks; a training run with the option runs and validates plainly."""
    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.float_model import BitSwapModel

    torch.manual_seed(0)
    model = BitSwapModel(PRESETS["tiny-phases"]).eval()
    img = np.asarray(Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB"))[:64, :64]
    t = torch.from_numpy(img.copy()).permute(2, 0, 1).float()
    x = t.unfold(1, 32, 32).unfold(2, 32, 32).permute(1, 2, 0, 3, 4).reshape(-1, 3, 32, 32)  # four blocks

    def run(n, shift=None):
        torch.manual_seed(1)
        return model(x, calibration_shifts=n, log_scale_shift=shift)

    plain, fit = run(0), run(3)
    assert fit["bpd"].item() == plain["bpd"].item() and fit["loss"].item() <= plain["loss"].item()
    off = torch.tensor(2.5 * model.cfg.x_log_scale_grid()[1])  # every scale 2.5 grid levels too wide
    plain_off, fit_off = run(0, off), run(3, off)
    assert fit_off["loss"].item() < plain_off["loss"].item() - 0.01
    fit_off["loss"].backward()
    assert sum(p.grad.abs().sum().item() for p in model.parameters() if p.grad is not None) > 0
    ckpt = train(str(SAMPLES), tmp_path / "cal", "tiny", TrainConfig(**{**TC, "steps": 4}, calibration_shifts=2),
                 max_side=160, log=lambda *_: None)
    assert load_checkpoint(ckpt)["step"] == 4 and "val_bpd" in load_checkpoint(ckpt)["history"]


def test_calibration_per_step_chooses_each_coding_steps_shift_apart(capsys):
    """forward(calibration_per_step=True): the shift is chosen per (block, coding step, channel), as the codec's
    per-image scale corrections differ by step, so its loss is never above the per-channel choice while 'bpd'
    stays plain; step_onehot gives every pixel exactly one of the codec's coding steps, a quarter to each later
    phase and a sixteenth to each sub-phase of the first."""
    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.float_model import BitSwapModel, step_onehot

    onehot = step_onehot(4, 64)
    assert onehot.shape == (64 * 64, 7) and torch.equal(onehot.sum(1), torch.ones(64 * 64))
    assert onehot.sum(0).tolist() == [256.0] * 4 + [1024.0] * 3
    assert step_onehot(4, 32)[0].argmax().item() == 0 and step_onehot(4, 32)[1].argmax().item() == 5  # (0,0) / (0,1)
    torch.manual_seed(0)
    model = BitSwapModel(PRESETS["tiny-phases"]).eval()
    img = np.asarray(Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB"))[:64, :64]
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None]
    off = torch.tensor(2.5 * model.cfg.x_log_scale_grid()[1])

    def run(per_step, n=3):
        torch.manual_seed(1)
        return model(x, calibration_shifts=n, calibration_per_step=per_step, log_scale_shift=off)

    channel, step, plain = run(False), run(True), run(False, n=0)
    with pytest.raises(ValueError, match="calibration_shifts > 0"):
        TrainConfig(calibration_per_step=True)
    from jobs.cli import main

    assert main(["train", str(SAMPLES), "--out", "unused.safetensors", "--calibration-per-step"]) == 2
    assert "calibration_shifts > 0" in capsys.readouterr().err
    assert step["bpd"].item() == plain["bpd"].item()
    assert step["loss"].item() <= channel["loss"].item() + 1e-6 < plain["loss"].item()


def test_calibration_per_band_groups_by_phase_and_the_pixels_own_scale_band(capsys, tmp_path):
    """forward(calibration_per_band=True): the shift is chosen per (block, pixel phase, channel, third of the
    scale grid the pixel's own level falls in), the grouping of the codec's scale shifts (adapt.BANDS,
    band = level * BANDS // x_scales): every subpixel in exactly one group, the loss never above the plain
    one and 'bpd' unchanged; a training run with it runs; the two groupings together are refused."""
    from bitswap_core.coding.adapt import BANDS
    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.float_model import BitSwapModel

    torch.manual_seed(0)
    model = BitSwapModel(PRESETS["tiny-phases"]).eval()
    img = np.asarray(Image.open(SAMPLES / "usc-4.1.07.png").convert("RGB"))[:64, :64]
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None]
    off = torch.tensor(2.5 * model.cfg.x_log_scale_grid()[1])

    def run(n, **kw):
        torch.manual_seed(1)
        return model(x, calibration_shifts=n, log_scale_shift=off, **kw)

    band, plain = run(3, calibration_per_band=True), run(0)
    assert band["bpd"].item() == plain["bpd"].item() and band["loss"].item() < plain["loss"].item()
    with torch.no_grad():
        pre, _ = model.pixel_pre(torch.zeros(1, model.cfg.z_channels, 32, 32), x)
        groups = model.phase_band_onehot(pre, 64)
    assert groups.shape == (1, 3, 64 * 64, 4 * BANDS) and torch.equal(groups.sum(3), torch.ones(1, 3, 64 * 64))
    assert groups.sum((0, 1, 2)).reshape(4, BANDS).sum(1).tolist() == [3 * 1024.0] * 4  # a quarter per phase
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(calibration_shifts=3, calibration_per_step=True, calibration_per_band=True)
    from jobs.cli import main

    assert main(["train", str(SAMPLES), "--out", "unused.safetensors", "--calibration-per-band"]) == 2
    assert "calibration_shifts > 0" in capsys.readouterr().err
    tc = TrainConfig(**{**TC, "steps": 2}, calibration_shifts=2, calibration_per_band=True)
    ckpt = train(str(SAMPLES), tmp_path / "band", "tiny-phases", tc, max_side=160, log=lambda *_: None)
    assert load_checkpoint(ckpt)["step"] == 2
