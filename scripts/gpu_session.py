"""One prepared GPU session: pack the data here, then on the device check exactness and train (issues 3, 4).

A task is lent a GPU only by chance, for 15 minutes in all, so the work it should do is ready beforehand:

    .venv/bin/python scripts/gpu_session.py pack runs/data_wide ../shared/datasets/val --window 320 --budget-mb 46
    # device tool: run(command="PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 python3 scripts/gpu_session.py run
    #   --train-minutes 7.6 --crop-seed 21 --no-exact-check", carry=["runs/gpu_pack"], timeout_s=540)

The run's defaults are the next try that the first GPU run (stage 16) points to: stage 13's 64x64 bordered
crops (the side that gained on the CPU), batch 128 (the pixels of stage 16's 32 crops of 128x128), peak lr
8e-5 (stage 13's 3e-5 scaled by about the square root of its 8x larger batch), gate and block rows at 5x.
The second lent GPU ran them (stage 18, docs/MODEL_CARD.md): -0.5% on tiles and coded as is, but the
per-image adaptation took all of it (+0.04% coded). The next run should add capacity the adaptation
cannot replace, as experiment P3 set up: `run --config deeper-phases --train-only phase_heads
--block-lr-scale 30 --lr 3e-5` (its new blocks start at zero, so step 0 is the default exactly), training
toward the codec's per-image scale shifts, chosen per coding step (`--calibration-shifts 3`, per step
unless `--calibration-per-channel`, now the default: worse on tiles, better coded in CPU pairs of runs;
stages 19 and 20 shipped as the ninth and tenth defaults). Judge it coded (bench/adaptation.py
--blocks "~").

`pack` writes runs/gpu_pack/{train,val}: training images cut into --window x --window windows at their own
scale (or downscaled to --max-side), a random subset of the windows under --budget-mb, stored as lossless
WebP; validation images as they are. The working tree and the pack travel together under 64 MiB; the tree
is 13.9 MiB since the zoo's defaults share their CDF tables (for stage 16 the earlier defaults, then 30 MB,
waited outside the tree). Stage 16 packed one random 320x320 window of each image, 44 MiB: that gave
clip-art the weight of photos (see _pieces). At --window 320 the wide mix is 954 windows, of which a random
425 fit in --budget-mb 52.
`run` (there, where python3 has torch with CUDA and $OUT comes back) does, logging to $OUT:
1. times a training step of the --init-from model's own configuration (the shipped default's, unless
   --config names a preset) on random crops of --crop-side: a smoke test of the training path on the device;
2. bench/device_exactness.py --devices cuda cpu: CUDA-coded payloads must be the CPU's bytes, both ways;
3. plans a whole cosine schedule that fits --train-minutes from the start and trains it warm-started on
   bordered crops (as the codec codes them), evaluating the start itself first and keeping the best EMA
   (run/best.pt), then exports the final model (model.safetensors). run/checkpoint.pt comes back too (under
   the 16 MiB a file), so a CPU session can resume or export. At most 8 files come back; this writes 7.
The first lent GPU (eighteenth session, docs/MODEL_CARD.md "Stage 16") ran 4438 steps of 32 bordered 128x128
crops in 7 minutes (83 ms a step) and found a CUDA device bug the CPU could not show (fixed; then 16 of 16
payloads identical on CUDA and CPU). `tests/test_training.py` runs pack and run end to end on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pack(args: argparse.Namespace) -> int:
    from PIL import Image

    from jobs.training import list_images

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a pack made with other settings must not leave files behind
    (out / "train").mkdir(parents=True)
    (out / "val").mkdir(parents=True)
    total = 0
    for url in list_images(args.val):
        dst = out / "val" / Path(url).name
        dst.write_bytes(Path(url).read_bytes())
        total += dst.stat().st_size
    pieces = [(url, box) for url in sorted(list_images(args.train)) for box in _pieces(url, args.window)]
    random.Random(0).shuffle(pieces)  # over budget, a random subset of every source is left out, not a tail
    n = 0
    for n, (url, box) in enumerate(pieces):
        im = Image.open(url).convert("RGB")
        if box is not None:
            im = im.crop(box)
        elif max(im.size) > args.max_side:
            im.thumbnail((args.max_side, args.max_side), Image.LANCZOS)
        name = Path(url).stem + ("" if box is None else f"-{box[0]}-{box[1]}")
        dst = out / "train" / (name + ".webp")
        im.save(dst, "WEBP", lossless=True, quality=0, method=0)  # lossless: the pixels trained on
        if total + dst.stat().st_size > args.budget_mb * 2**20:
            dst.unlink()
            print(f"budget reached: left out {len(pieces) - n} of {len(pieces)} training pieces")
            break
        total += dst.stat().st_size
    else:
        n = len(pieces)
    print(f"wrote {out}: {n} training pieces, {total / 2**20:.1f} MiB with validation")
    return 0


def _pieces(url: str, window: int) -> list[tuple[int, int, int, int] | None]:
    """What pack keeps of one training image: the whole (None), or with window > 0 its non-overlapping
    window x window windows at the image's own scale (the grid at a random offset; an image smaller than a
    window is one piece). Training draws crops in proportion to area, so a larger image keeps its share only
    as more windows: a random subset of all windows keeps every image's share in expectation, where one
    window an image would have given small clip-art as much weight as a large photo."""
    from PIL import Image

    if not window:
        return [None]
    with Image.open(url) as im:
        w, h = im.size
    ww, wh = min(w, window), min(h, window)
    rng = random.Random(url)
    ox, oy = rng.randrange(w % ww + 1), rng.randrange(h % wh + 1)
    return [(x, y, x + ww, y + wh) for y in range(oy, h - wh + 1, wh) for x in range(ox, w - ww + 1, ww)]


def step_seconds(cfg, batch: int, device: str, steps: int = 30, side: int = 32, border: bool = False) -> float:
    """Seconds per training step (forward, backward, Adam) of a fresh model of cfg on random side x side
    crops (bordered: (side + 1)^2 with their known mask, as training draws them)."""
    import torch

    from bitswap_core.model.float_model import BitSwapModel

    model = BitSwapModel(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    s = side + 1 if border else side
    x = torch.randint(0, 256, (batch, 3, s, s), device=device).float()
    known = torch.ones((batch, 1, s, s), device=device) if border else None
    for i in range(steps + 5):
        if i == 5:  # after warm-up (allocator, kernel selection)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = model(x, known=known)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def config_of(args: argparse.Namespace):
    """The preset named by --config, else the --init-from model's own configuration, as `bitswap train`
    chooses it (jobs.cmd_train.model_config); a run from scratch must name its preset."""
    from jobs.cmd_train import model_config

    if not args.config and args.init_from == "none":
        raise SystemExit("--init-from none needs --config")
    return model_config(args.config or None, None if args.init_from == "none" else ROOT / args.init_from)


def run(args: argparse.Namespace) -> int:
    import torch

    from jobs.training import TrainConfig, export_model, float_and_exact_bpd, train, validation_tiles

    out = Path(os.environ.get("OUT", ROOT / "runs" / "gpu_out"))
    out.mkdir(parents=True, exist_ok=True)
    pack_dir = Path(args.pack)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # training only: the exact model's integers never come from these float products
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                    "torch": torch.__version__, "args": vars(args) | {"func": None}}

    def save_report() -> None:  # after every phase: a run cut short still tells what it did
        (out / "report.json").write_text(json.dumps(report, indent=1))

    t_start = time.time()
    cfg = config_of(args)
    # first, as a smoke test of the training path on this device: seconds a step on random crops
    step_s = step_seconds(cfg, args.batch, device, side=args.crop_side, border=args.border)
    report.update(step_s=round(step_s, 4))
    save_report()
    print(f"{step_s * 1000:.1f} ms a step at batch {args.batch} of {args.crop_side}x{args.crop_side}", flush=True)
    if not args.skip_exactness and device == "cuda":
        bench = [sys.executable, str(ROOT / "bench" / "device_exactness.py"), "--devices", "cuda", "cpu",
                 "--crop", "96"]
        t0 = time.time()
        r = subprocess.run(bench, capture_output=True, text=True)
        (out / "device_exactness.txt").write_text(r.stdout + r.stderr)
        report.update(exactness_rc=r.returncode, exactness_s=round(time.time() - t0, 1))
        save_report()
        print(r.stdout[-2000:], r.stderr[-2000:], flush=True)
    budget = args.train_minutes * 60 - (time.time() - t_start)
    steps = max(100, int(0.85 * budget / step_s))  # headroom for data loading, evaluation, checkpoints
    report.update(planned_steps=steps)
    print(f"planning {steps} steps in {budget:.0f} s", flush=True)
    tc = TrainConfig(steps=steps, batch=args.batch, lr=args.lr, lr_min=args.lr_min,
                     warmup=min(args.warmup, steps // 10), eval_every=max(100, steps // 10),
                     gate_lr_scale=args.gate_lr_scale, block_lr_scale=args.block_lr_scale,
                     sensor_noise=args.sensor_noise, border=args.border,
                     crop_side=args.crop_side, crop_seed=args.crop_seed, keep_best=True,
                     trainable=tuple(args.train_only), calibration_shifts=args.calibration_shifts,
                     calibration_per_step=args.calibration_shifts > 0 and not args.calibration_per_channel)
    work = out / "run"  # checkpoint.pt, history.jsonl, best.pt: what a CPU session resumes or exports
    with open(out / "train_log.txt", "w") as log:
        ckpt = train(str(pack_dir / "train"), work, cfg, tc, val_data=str(pack_dir / "val"), device=device,
                     minutes=(args.train_minutes * 60 - (time.time() - t_start)) / 60 + 0.5,
                     init_from=None if args.init_from == "none" else ROOT / args.init_from,
                     log=lambda s: (print(s, flush=True), log.write(s + "\n"), log.flush()))
    report.update(train_s=round(time.time() - t_start, 1))
    save_report()
    model_file = out / "model.safetensors"
    report["model_id"] = export_model(ckpt, model_file, extra_info={"trained_on": report["device"]})
    if args.exact_check:
        tiles = validation_tiles(str(pack_dir / "val"), tc.val_blocks, tc.seed)
        report.update(**float_and_exact_bpd(ckpt, model_file, tiles))
    report.update(wall_s=round(time.time() - t_start, 1))
    save_report()
    print(json.dumps(report), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("train")
    p.add_argument("val")
    p.add_argument("--max-side", type=int, default=768)
    p.add_argument("--window", type=int, default=0,
                   help="instead of downscaling, cut the images into windows of this side at their own scale")
    p.add_argument("--budget-mb", type=float, default=48)
    p.add_argument("--out", default=str(ROOT / "runs" / "gpu_pack"))
    p.set_defaults(func=pack)
    r = sub.add_parser("run")
    r.add_argument("--config", default=None, help="a preset (default: the --init-from model's configuration)")
    r.add_argument("--pack", default=str(ROOT / "runs" / "gpu_pack"), help="what `pack` wrote")
    r.add_argument("--init-from", default="bitswap_core/zoo/default.safetensors", help="or none")
    r.add_argument("--batch", type=int, default=128)
    r.add_argument("--lr", type=float, default=8e-5)
    r.add_argument("--lr-min", type=float, default=4e-6)
    r.add_argument("--warmup", type=int, default=200, help="at most a tenth of the planned steps")
    r.add_argument("--crop-side", type=int, default=64, choices=(32, 64, 128), help="training crops and val tiles")
    r.add_argument("--crop-seed", type=int, default=None)
    r.add_argument("--no-exact-check", dest="exact_check", action="store_false",
                   help="skip the exported model's exact -ELBO (a CPU session can measure it)")
    r.add_argument("--gate-lr-scale", type=float, default=5.0)
    r.add_argument("--block-lr-scale", type=float, default=5.0, help="the phase heads' residual blocks")
    r.add_argument("--sensor-noise", type=float, default=0.3, help="as the fourth default's last stage")
    r.add_argument("--train-only", nargs="+", default=(), metavar="PREFIX",
                   help="train only parameters under these prefixes (e.g. phase_heads), as bitswap train's")
    r.add_argument("--calibration-shifts", type=int, default=3, metavar="N",
                   help="as bitswap train's: the pixel term at the best of 2N+1 scale shifts "
                        "(default 3, as the ninth and tenth defaults were trained; 0 for the plain -ELBO)")
    r.add_argument("--calibration-per-channel", action="store_true",
                   help="choose the shift per channel over the crop, as the ninth default was trained, instead of "
                        "per coding step and channel (the tenth)")
    r.add_argument("--train-minutes", type=float, default=5.5, help="the device call's limit is 10 min")
    r.add_argument("--skip-exactness", action="store_true")
    r.add_argument("--no-border", dest="border", action="store_false",
                   help="train on bare blocks (default: bordered, as the codec codes from container v8 on)")
    r.set_defaults(func=run)
    args = ap.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
