"""One prepared GPU session: pack the data here, then on the device check exactness and train (issues 3, 4).

A task is lent a GPU only by chance, for 15 minutes in all, so the work it should do is ready beforehand:

    .venv/bin/python scripts/gpu_session.py pack runs/data_photos ../shared/datasets/val   # here, once
    # device tool: run(command="python3 scripts/gpu_session.py run", carry=["runs/gpu_pack"], timeout_s=580)

`pack` writes runs/gpu_pack/{train,val}: training images downscaled to --max-side and stored as lossless
WebP, validation images as they are, under --budget-mb (the device takes at most 64 MiB with the repo).
`run` (there, where python3 has torch with CUDA and $OUT comes back) does, logging to $OUT:
1. bench/device_exactness.py --devices cuda cpu: CUDA-coded payloads must be the CPU's bytes, both ways.
2. times a training step on the GPU of the --init-from model's own configuration (the shipped default's,
   unless --config names a preset), plans a whole cosine schedule that fits --train-minutes, and trains it
   warm-started from that model on bordered blocks (as the codec codes them), then exports the exact
   model and reports float and exact validation bpd. The checkpoint comes back too, so a CPU session can
   resume. The peak learning rate, 1.2e-4, is the CPU stages' 6e-5 scaled by the square root of the 4x
   larger batch: on CPU, warm restarts at 2e-4 and above lost validation bpd for 1000+ steps
   (docs/MODEL_CARD.md, experiments A-E), and the one GPU chance should not be spent recovering.
`tests/test_training.py` runs pack and run end to end on the CPU with a tiny model. How much of the wide
training mix fits (`pack runs/data_wide ../shared/datasets/val --max-side S`, eleventh session): 215 of its
491 images at S = 768, 296 at 512, 448 at 384; the images left out are a random subset.
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
    urls = sorted(list_images(args.train))
    random.Random(0).shuffle(urls)  # over budget, a random subset of every source is left out, not a tail
    n = 0
    for n, url in enumerate(urls):
        im = Image.open(url).convert("RGB")
        if max(im.size) > args.max_side:
            im.thumbnail((args.max_side, args.max_side), Image.LANCZOS)
        dst = out / "train" / (Path(url).stem + ".webp")
        im.save(dst, "WEBP", lossless=True, quality=0, method=0)  # lossless: the pixels trained on
        if total + dst.stat().st_size > args.budget_mb * 2**20:
            dst.unlink()
            print(f"budget reached: left out {len(urls) - n} of {len(urls)} training images")
            break
        total += dst.stat().st_size
    else:
        n = len(urls)
    print(f"wrote {out}: {n} training images, {total / 2**20:.1f} MiB with validation")
    return 0


def step_seconds(cfg, batch: int, device: str, steps: int = 30) -> float:
    """Seconds per training step (forward, backward, Adam) of a fresh model of cfg on random blocks."""
    import torch

    from bitswap_core.model.float_model import BitSwapModel

    model = BitSwapModel(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = torch.randint(0, 256, (batch, 3, 32, 32), device=device).float()
    for i in range(steps + 5):
        if i == 5:  # after warm-up (allocator, kernel selection)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = model(x)["loss"]
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
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                    "torch": torch.__version__}
    t_start = time.time()
    if not args.skip_exactness and device == "cuda":
        bench = [sys.executable, str(ROOT / "bench" / "device_exactness.py"), "--devices", "cuda", "cpu",
                 "--crop", "96", "--json", str(out / "device_exactness.json")]
        r = subprocess.run(bench, capture_output=True, text=True)
        (out / "device_exactness.txt").write_text(r.stdout + r.stderr)
        report["exactness_rc"] = r.returncode
        print(r.stdout[-2000:], flush=True)
    cfg = config_of(args)
    step_s = step_seconds(cfg, args.batch, device)
    budget = args.train_minutes * 60 - (time.time() - t_start)
    steps = max(100, int(0.85 * budget / step_s))  # headroom for data loading, evaluation, checkpoints
    report.update(step_s=round(step_s, 4), planned_steps=steps)
    print(f"{step_s * 1000:.1f} ms a step at batch {args.batch}: planning {steps} steps", flush=True)
    tc = TrainConfig(steps=steps, batch=args.batch, lr=args.lr, lr_min=args.lr_min, warmup=min(500, steps // 10),
                     eval_every=max(100, steps // 10), gate_lr_scale=args.gate_lr_scale,
                     sensor_noise=args.sensor_noise, border=args.border)
    work = out / "run"
    with open(out / "train_log.txt", "w") as log:
        ckpt = train(str(pack_dir / "train"), work, cfg, tc, val_data=str(pack_dir / "val"), device=device,
                     minutes=args.train_minutes * 1.1,
                     init_from=None if args.init_from == "none" else ROOT / args.init_from,
                     log=lambda s: (print(s, flush=True), log.write(s + "\n")))
    model_file = out / "model.safetensors"
    mid = export_model(ckpt, model_file, extra_info={"trained_on": report["device"]})
    tiles = validation_tiles(str(pack_dir / "val"), tc.val_blocks, tc.seed)
    report.update(model_id=mid, **float_and_exact_bpd(ckpt, model_file, tiles),
                  wall_s=round(time.time() - t_start, 1))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("train")
    p.add_argument("val")
    p.add_argument("--max-side", type=int, default=768)
    p.add_argument("--budget-mb", type=float, default=48)
    p.add_argument("--out", default=str(ROOT / "runs" / "gpu_pack"))
    p.set_defaults(func=pack)
    r = sub.add_parser("run")
    r.add_argument("--config", default=None, help="a preset (default: the --init-from model's configuration)")
    r.add_argument("--pack", default=str(ROOT / "runs" / "gpu_pack"), help="what `pack` wrote")
    r.add_argument("--init-from", default="bitswap_core/zoo/default.safetensors", help="or none")
    r.add_argument("--batch", type=int, default=256)
    r.add_argument("--lr", type=float, default=1.2e-4)
    r.add_argument("--lr-min", type=float, default=5e-6)
    r.add_argument("--gate-lr-scale", type=float, default=3.0)
    r.add_argument("--sensor-noise", type=float, default=0.3, help="as the fourth default's last stage")
    r.add_argument("--train-minutes", type=float, default=5.5, help="the device call's limit is 10 min")
    r.add_argument("--skip-exactness", action="store_true")
    r.add_argument("--no-border", dest="border", action="store_false",
                   help="train on bare blocks (default: bordered, as the codec codes from container v8 on)")
    r.set_defaults(func=run)
    args = ap.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
