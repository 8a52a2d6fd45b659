"""`bitswap train` and `bitswap export`: train a model, turn a checkpoint into an exact model file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Bit-Swap model on a folder, glob or fsspec URL of images")
    p.add_argument("data", help="training images: folder, glob or fsspec URL")
    p.add_argument("--config", default=None,
                   help="preset name of bitswap_core/model/config.py's PRESETS (a wrong name lists them all); "
                        "default: the --init-from model's (or the resumed run's) own configuration, else "
                        "deep-phases, the shipped default's; three-layers adds a latent layer")
    p.add_argument("--pixel-phases", type=int, choices=(1, 4), default=None,
                   help="override the preset: code each 2x2 cell's pixels in 1 or 4 steps")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from another run's checkpoint (matching weights; e.g. 1-phase -> 4-phase) "
                        "or from a model file (e.g. the shipped default), turned back into float weights")
    p.add_argument("--out", required=True, type=Path, help="exact model file to write (.safetensors)")
    p.add_argument("--workdir", type=Path, default=None, help="checkpoints and logs (default: OUT's stem + .run)")
    p.add_argument("--val", default=None, help="validation images (default: every 10th training image)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-min", type=float, default=2e-4, help="end of the cosine schedule")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--free-bits", type=float, default=1.0)
    p.add_argument("--calibration-shifts", type=int, default=0, metavar="N",
                   help="train each crop's pixel term at the best of 2N+1 per-channel scale shifts, as the codec's "
                        "per-image adaptation fits them (0: off; validation stays the plain -ELBO)")
    grouping = p.add_mutually_exclusive_group()
    grouping.add_argument("--calibration-per-step", action="store_true",
                          help="with --calibration-shifts: choose the shift per coding step and channel (the codec's "
                               "scale corrections differ by phase and step) instead of per channel")
    grouping.add_argument("--calibration-per-band", action="store_true",
                          help="with --calibration-shifts: choose the shift per pixel phase, channel and third of the "
                               "scale grid, the grouping of the codec's per-image scale shifts")
    p.add_argument("--sensor-noise", type=float, default=0.0,
                   help="share of training crops given independent per-channel noise (sigma 0.5-4)")
    p.add_argument("--gate-lr-scale", type=float, default=1.0,
                   help="learning-rate multiplier for the neighbour predictor's weights (predictor configs), "
                        "e.g. 20 when they start at zero on a trained model continued at a small lr")
    p.add_argument("--train-only", nargs="+", default=(), metavar="PREFIX",
                   help="train only parameters whose names start with a prefix (e.g. phase_heads: a part added "
                        "to a model file, the rest frozen as shipped)")
    p.add_argument("--block-lr-scale", type=float, default=1.0,
                   help="learning-rate multiplier for the phase heads' and the encoder's extra residual blocks "
                        "(new, starting at zero)")
    p.add_argument("--border", action="store_true",
                   help="train on bordered blocks (the next blocks' first row and column), as container v8 codes")
    p.add_argument("--crop-side", type=int, choices=(32, 64, 128), default=32,
                   help="side of the training crops and validation tiles: 64 or 128 train on the blocks the "
                        "codec codes larger images in (container v15); validation keeps the same pixel count")
    p.add_argument("--minutes", type=float, default=None, help="stop after this wall time (checkpointed)")
    p.add_argument("--eval-every", type=int, default=500, help="validation every this many steps (and at step 0)")
    p.add_argument("--keep-best", action="store_true",
                   help="keep the EMA weights of the best validation in WORKDIR/best.pt (bitswap export reads it)")
    p.add_argument("--max-side", type=int, default=None, help="downscale training images to this size")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir exactly")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--world-size", type=int, default=None,
                   help="data-parallel processes (torch DDP); default: one per GPU, 1 on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop-seed", type=int, default=None,
                   help="seed of the training crops alone (default: --seed); the validation tiles stay --seed's")
    p.set_defaults(func=_train)

    e = sub.add_parser("export", help="turn a training checkpoint (or the mean of several) into an exact model file")
    e.add_argument("checkpoint", type=Path, nargs="+",
                   help="one checkpoint; several runs of one model (continued from one start) export the "
                        "mean of their EMA weights, kept as OUT's stem + .soup.pt (docs/MODEL_CARD.md, stage "
                        "22: it coded larger than either run)")
    e.add_argument("out", type=Path)
    e.add_argument("--no-ema", action="store_true")
    e.set_defaults(func=_export)


def model_config(name: str | None, init_from: Path | None = None, resumed: Path | None = None):
    """The preset called name; without one, the configuration of the model the run starts from (a warm
    start into a smaller preset would silently drop the parts it lacks, e.g. the shipped default's phase
    blocks), else the shipped default's preset."""
    from bitswap_core.model.config import PRESETS, ModelConfig

    if name is not None:
        if name not in PRESETS:
            raise SystemExit(f"unknown --config {name!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[name]
    if resumed is not None and resumed.exists():
        init_from = resumed
    if init_from is not None:
        if init_from.suffix == ".safetensors":
            from bitswap_core.registry import load_model

            return load_model(init_from).cfg
        from jobs.training import load_checkpoint

        return ModelConfig.from_json(load_checkpoint(init_from)["config"])
    return PRESETS["deep-phases"]


def _train(args) -> int:
    from dataclasses import replace

    from jobs.training import TrainConfig, export_model, train

    try:  # TrainConfig owns the rules on its options (the calibration groupings need shifts, ...)
        tc = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, lr_min=args.lr_min, warmup=args.warmup,
                         free_bits=args.free_bits, seed=args.seed, crop_seed=args.crop_seed,
                         gate_lr_scale=args.gate_lr_scale,
                         sensor_noise=args.sensor_noise, trainable=tuple(args.train_only),
                         block_lr_scale=args.block_lr_scale, border=args.border, crop_side=args.crop_side,
                         eval_every=args.eval_every, keep_best=args.keep_best,
                         calibration_shifts=args.calibration_shifts,
                         calibration_per_step=args.calibration_per_step,
                         calibration_per_band=args.calibration_per_band)
    except ValueError as e:
        print(f"bitswap train: {e}", file=sys.stderr)
        return 2
    workdir = args.workdir or args.out.with_suffix(".run")
    cfg = model_config(args.config, args.init_from, workdir / "checkpoint.pt" if args.resume else None)
    if args.pixel_phases is not None:
        cfg = replace(cfg, pixel_phases=args.pixel_phases)
    ckpt = train(args.data, workdir, cfg, tc, val_data=args.val, resume=args.resume, max_side=args.max_side,
                 minutes=args.minutes, device=args.device, world_size=args.world_size, init_from=args.init_from)
    mid = export_model(ckpt, args.out)
    print(f"wrote {args.out} (model id {mid})")
    if args.val:
        from jobs.training import float_and_exact_bpd, validation_tiles

        r = float_and_exact_bpd(ckpt, args.out, validation_tiles(args.val, tc.val_blocks, tc.seed))
        print(f"validation -ELBO: float model {r['float_bpd']:.4f} bpd, exact model {r['exact_bpd']:.4f} bpd")
    return 0


def _export(args) -> int:
    from jobs.training import export_model

    ckpt = args.checkpoint[0]
    if len(args.checkpoint) > 1:
        from jobs.training import average_checkpoints

        if args.no_ema:
            print("bitswap export: --no-ema with several checkpoints (the mean is of EMA weights)", file=sys.stderr)
            return 2
        try:
            ckpt = average_checkpoints(args.checkpoint, args.out.with_suffix(".soup.pt"))
        except ValueError as e:
            print(f"bitswap export: {e}", file=sys.stderr)
            return 2
    mid = export_model(ckpt, args.out, use_ema=not args.no_ema)
    print(f"wrote {args.out} (model id {mid})")
    return 0
