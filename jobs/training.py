"""Training job: random 32x32 (or 64x64, 128x128) crops streamed from images, quantization-aware Bit-Swap, exact export.

Resume is exact: the crops of step k come from an RNG seeded by (seed, k), and the checkpoint holds the
model, EMA, optimizer and torch RNG state.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import fsspec
import numpy as np
import torch
from PIL import Image

from bitswap_core.model.config import PRESETS, ModelConfig
from bitswap_core.model.float_model import BitSwapModel

IMAGE_EXTS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp", ".jpg", ".jpeg")


def list_images(data: str) -> list[str]:
    """Folder, glob or fsspec URL -> sorted list of image URLs."""
    fs, _, paths = fsspec.get_fs_token_paths(data)
    if len(paths) == 1 and fs.isdir(paths[0]):
        paths = [p for p in fs.find(paths[0]) if p.lower().endswith(IMAGE_EXTS)]
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    return sorted(prefix + p for p in paths)


def load_rgb(url: str, max_pixels: int = 50_000_000, max_side: int | None = None) -> np.ndarray:
    with fsspec.open(url, "rb") as f:
        data = f.read()
    Image.MAX_IMAGE_PIXELS = max_pixels
    img = Image.open(io.BytesIO(data))
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(32, round(img.width * s)), max(32, round(img.height * s))), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


BORDER_MISSING = 0.1  # share of bordered crops without the right column, and (independently) the bottom row


class CropSampler:
    """Random side x side crops (32x32 unless told) with flips, chosen by an RNG seeded by (seed, step):
    resumable exactly.

    border: (side + 1)^2 crops and their known mask instead (the next blocks' first row and column, as
    container v8 codes a block), each border side missing in BORDER_MISSING of the crops, as on an image's
    last block row or column; batch() then returns (crops, known)."""

    def __init__(self, images: list[np.ndarray], seed: int = 0, sensor_noise: float = 0.0, border: bool = False,
                 side: int = 32):
        self.sensor_noise, self.border, self.block = sensor_noise, border, side
        self.side = side + 1 if border else side
        self.images = [im for im in images if im.shape[0] >= self.side and im.shape[1] >= self.side]
        if not self.images:
            raise ValueError(f"no training image is at least {self.side}x{self.side}")
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.p = areas / areas.sum()
        self.seed = seed

    def batch(self, step: int, n: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.choice(len(self.images), size=n, p=self.p)
        side = self.side
        out = np.empty((n, side, side, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            im = self.images[i]
            y = rng.integers(0, im.shape[0] - side + 1)
            x = rng.integers(0, im.shape[1] - side + 1)
            crop = im[y : y + side, x : x + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[j] = crop
        if self.sensor_noise > 0:  # drawn after the crops, so runs without it keep their exact crops
            noisy = np.flatnonzero(rng.random(n) < self.sensor_noise)
            sigma = rng.uniform(0.5, 4.0, (len(noisy), 1, 1, 1))
            noise = rng.normal(0.0, 1.0, (len(noisy), side, side, 3)) * sigma
            out[noisy] = np.clip(np.rint(out[noisy] + noise), 0, 255).astype(np.uint8)
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float()
        if not self.border:
            return x
        known = torch.ones((n, 1, side, side))
        known[torch.from_numpy(rng.random(n) < BORDER_MISSING), :, :, self.block] = 0
        known[torch.from_numpy(rng.random(n) < BORDER_MISSING), :, self.block, :] = 0
        return x * known, known


def tile_blocks(images: list[np.ndarray], border: bool = False, side: int = 32
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """All full side x side tiles of the images (validation: the blocks the codec would see); with border, each
    with the next tiles' first row and column and their known mask (blocks.bordered)."""
    from bitswap_core.blocks import bordered

    tiles, known = [], []
    s = side
    for im in images:
        h, w = im.shape[0] // s * s, im.shape[1] // s * s
        t = im[:h, :w].reshape(h // s, s, w // s, s, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, s, s)
        if border:  # the next tiles' first row and column; the last tile row and column have none
            tb, kb = bordered(t, np.full((len(t), 2), s), w // s, np.arange(len(t)))
            t = tb
            known.append(kb)
        tiles.append(t)
    x = torch.from_numpy(np.concatenate(tiles)).float()
    return (x, torch.from_numpy(np.concatenate(known)).float()) if border else x


@dataclass
class TrainConfig:
    steps: int = 20000
    batch: int = 64
    lr: float = 2e-3
    lr_min: float = 2e-4
    warmup: int = 500
    clip: float = 1.0
    ema: float = 0.999
    free_bits: float = 1.0
    seed: int = 0
    # Seed of the crop stream alone (None: seed). A stage continued from an exported model starts at step 0
    # again; a new crop seed gives it crops the last stage did not see, on the same validation tiles.
    crop_seed: int | None = None
    eval_every: int = 500
    ckpt_every_s: float = 300.0
    val_blocks: int = 1024
    gate_lr_scale: float = 1.0  # learning-rate multiplier for the neighbour predictor's weights (gate_rows)
    # Share of crops given independent per-channel Gaussian noise (sigma uniform in [0.5, 4] per crop): the
    # training photos are downscaled JPEGs whose colour residuals are almost perfectly correlated, unlike
    # scans and sensor data; without noisy examples the colour residual learns h = 1 everywhere.
    sensor_noise: float = 0.0
    # Parameter-name prefixes to train (empty: all). A new part added to a trained model (phase_heads) can be
    # trained alone: the rest's outputs stay exactly as shipped and a step costs little more than a forward.
    trainable: tuple[str, ...] = ()
    block_lr_scale: float = 1.0  # lr multiplier for the phase heads' and the encoder's extra blocks (new parts)
    # Train (and validate) on bordered blocks: the neighbour predictor also reads the next blocks' first row
    # and column, as the codec does from container v8 on (CropSampler, blocks.bordered).
    border: bool = False
    # Side of the training crops and validation tiles: 64 or 128 train the model on the blocks the codec
    # codes from container v15 on (api.side_for), where fewer pixels sit at a block's zero-padded edge.
    # Validation then takes val_blocks * (32 / side)^2 tiles: the same number of pixels.
    crop_side: int = 32
    # Keep the EMA weights of the best validation so far in out_dir/best.pt (export_model reads it like a
    # checkpoint): a run long on little data can start to overfit before its schedule ends.
    keep_best: bool = False
    # n > 0: train on each crop's pixel term at the best of 2n + 1 per-channel scale shifts (BitSwapModel.forward's
    # calibration_shifts), the part of the per-image adaptation that a float loss can mimic; validation stays plain.
    calibration_shifts: int = 0
    # With calibration_shifts: the shift is chosen per (crop, coding step, channel) instead of per (crop, channel),
    # since the codec's per-image scale corrections differ by phase and step too (BitSwapModel.forward).
    calibration_per_step: bool = False
    # Or per (crop, pixel phase, channel, band of the pixel's scale level): the codec's scale-shift grouping.
    calibration_per_band: bool = False

    def __post_init__(self) -> None:
        if (self.calibration_per_step or self.calibration_per_band) and self.calibration_shifts <= 0:
            raise ValueError("calibration_per_step / calibration_per_band choose among calibration shifts: give "
                             "calibration_shifts > 0")
        if self.calibration_per_step and self.calibration_per_band:
            raise ValueError("calibration_per_step and calibration_per_band are two groupings: choose one")


def lr_at(tc: TrainConfig, step: int) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.lr_min + 0.5 * (tc.lr - tc.lr_min) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model: BitSwapModel, blocks: torch.Tensor, batch: int = 256, known: torch.Tensor | None = None
             ) -> dict[str, float]:
    """Mean -ELBO (bits per dimension) of blocks; bordered blocks with their known mask (tile_blocks)."""
    model.eval()
    tot = {"bpd": 0.0, "bpd_x": 0.0, "bpd_z": 0.0}
    with torch.random.fork_rng(devices=[]):  # same latent samples every time; training RNG untouched
        torch.manual_seed(1234)
        for i in range(0, len(blocks), batch):
            out = model(blocks[i : i + batch], known=None if known is None else known[i : i + batch])
            for k in tot:
                tot[k] += float(out[k]) * len(blocks[i : i + batch])
    model.train()
    return {k: v / len(blocks) for k, v in tot.items()}


def save_checkpoint(path: Path, model, ema, opt, step: int, tc: TrainConfig, history: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": model.cfg.to_json(),
            "train_config": json.dumps(tc.__dict__),
            "model": {k: v.cpu() for k, v in model.state_dict().items()},
            "ema": {k: v.cpu() for k, v in ema.state_dict().items()},
            "opt": opt.state_dict() if opt is not None else {},
            "step": step,
            "history": json.dumps(history),
        },
        tmp,
    )
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(path: Path, use_ema: bool = True) -> BitSwapModel:
    ck = load_checkpoint(path)
    model = BitSwapModel(ModelConfig.from_json(ck["config"]))
    model.load_state_dict(ck["ema" if use_ema else "model"])
    return model.eval()


def model_from_file(path: Path) -> BitSwapModel:
    """An exact model file (.safetensors) turned back into float weights that export to the same model:
    training checkpoints are not shipped, so warm starts and diagnostics of shipped models start here."""
    from bitswap_core.model.export import import_tensors
    from bitswap_core.registry import load_model

    exact = load_model(path)
    model = BitSwapModel(exact.cfg)
    import_tensors(model, exact.tensors)
    return model.eval()


def float_model(path: str | Path) -> BitSwapModel:
    """A model file (.safetensors) or a training checkpoint (its EMA weights) as a float model, for
    diagnostics that compare shipped models with runs."""
    path = Path(path)
    return model_from_file(path) if path.suffix == ".safetensors" else model_from_checkpoint(path)


def train(
    data: str,
    out_dir: Path,
    cfg: ModelConfig | str = "default",
    tc: TrainConfig | None = None,
    val_data: str | None = None,
    resume: bool = False,
    max_side: int | None = None,
    minutes: float | None = None,
    device: str | None = None,
    stop_after: int | None = None,
    world_size: int | None = None,
    init_from: Path | None = None,
    log=print,
) -> Path:
    """Train (or resume) into out_dir/checkpoint.pt; returns the checkpoint path.

    minutes / stop_after end this invocation early (checkpointed) without changing the schedule, so a
    later call with resume=True continues exactly where it stopped. world_size > 1 trains data-parallel
    with torch DDP (one process per GPU with NCCL; gloo processes on CPU); None means one process per
    GPU when there are several, else one. init_from starts a new run from another checkpoint's EMA
    weights (parameters the new config adds keep their initialisation, e.g. 4-phase pixel heads).
    """
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if world_size is None:
        world_size = torch.cuda.device_count() if dev.startswith("cuda") else 1
    args = (data, out_dir, cfg, tc or TrainConfig(), val_data, resume, max_side, minutes, dev, stop_after,
            init_from)
    if world_size <= 1:
        return _train_process(0, 1, 0, args, log)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_train_process, args=(world_size, port, args, None), nprocs=world_size, join=True)
    return out_dir / "checkpoint.pt"


def _train_process(rank: int, world: int, port: int, args: tuple, log) -> Path:
    from tqdm import tqdm

    data, out_dir, cfg, tc, val_data, resume, max_side, minutes, device, stop_after, init_from = args
    lead = rank == 0
    log = log or (print if lead else (lambda *_: None))
    device = torch.device(device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = PRESETS[cfg] if isinstance(cfg, str) else cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.pt"
    urls = list_images(data)
    if not urls:
        raise FileNotFoundError(f"no images found at {data}")
    images = [load_rgb(u, max_side=max_side) for u in urls]
    if val_data:
        val_images = [load_rgb(u) for u in list_images(val_data)]
    else:  # hold out every 10th image
        val_images = images[::10]
        images = [im for i, im in enumerate(images) if i % 10]
    step, history = 0, []
    if resume and ckpt.exists():
        ck = load_checkpoint(ckpt)
        cfg = ModelConfig.from_json(ck["config"])
        tc = replace(TrainConfig(**json.loads(ck["train_config"])), **{
            k: v for k, v in tc.__dict__.items() if k in ("steps", "eval_every", "ckpt_every_s")})
    crop_seed = tc.seed if tc.crop_seed is None else tc.crop_seed
    sampler = CropSampler(images, seed=crop_seed, sensor_noise=tc.sensor_noise, border=tc.border,
                          side=tc.crop_side)
    val = validation_subset(val_images, val_count(tc), tc.seed, tc.border, tc.crop_side)

    torch.manual_seed(tc.seed)  # the same initial weights on every rank and every run
    model = BitSwapModel(cfg).to(device)
    ema = BitSwapModel(cfg).to(device)
    ema.load_state_dict(model.state_dict())
    for name, p in model.named_parameters():
        p.requires_grad_(not tc.trainable or name.startswith(tuple(tc.trainable)))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"no parameter name starts with {list(tc.trainable)}")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr)
    val = tuple(v.to(device) for v in val) if tc.border else val.to(device)
    if resume and ckpt.exists():
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step = int(ck["step"])
        history = json.loads(ck["history"])
        log(f"resumed at step {step}")
    elif init_from is not None:
        warm_start(model, Path(init_from))
        ema.load_state_dict(model.state_dict())
        log(f"initialised from {init_from}")
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    for p in ema.parameters():
        p.requires_grad_(False)
    per_rank = max(1, tc.batch // world)
    boosted = [(p, rows, tc.gate_lr_scale) for p, rows in gate_rows(model)] if tc.gate_lr_scale != 1.0 else []
    if tc.block_lr_scale != 1.0:
        new_blocks = [*(blk for head in model.phase_heads for blk in head.blocks), *model.q_nets[0].extra_blocks()]
        boosted += [(p, slice(None), tc.block_lr_scale) for blk in new_blocks for p in blk.parameters()]
    boosted = [(p, rows, k) for p, rows, k in boosted if p.requires_grad]
    t0, last_ckpt = time.time(), time.time()

    def evaluation(step: int, train_bpd: float | None) -> dict:
        """Validate the EMA weights, and record it in the history, the log and history.jsonl."""
        ev = evaluate(ema, val[0], known=val[1]) if tc.border else evaluate(ema, val)
        rec = {"step": step, "time_s": round(time.time() - t0, 1), "train_bpd": train_bpd,
               **{f"val_{k}": round(v, 4) for k, v in ev.items()}}
        history.append(rec)
        log(json.dumps(rec))
        with open(out_dir / "history.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec

    if lead and step == 0:  # where the run starts, on its own validation tiles
        evaluation(0, None)
    best = min((h["val_bpd"] for h in history), default=math.inf)  # best.pt only when a step beats the start
    cuda = device.type == "cuda"
    crops = _Prefetch(sampler, per_rank, lambda s: s if world == 1 else s * world + rank, tc.steps, pin=cuda)
    bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True, disable=not lead)
    while step < tc.steps:
        if minutes is not None and time.time() - t0 > minutes * 60:
            break
        if stop_after is not None and step >= stop_after:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(tc, step)
        # latent noise and crops are functions of (seed, step, rank): resume is exact, ranks differ
        torch.manual_seed(tc.seed * 1_000_003 + step * 64 + rank)
        x = crops.get(step)
        x, known = ((x[0].to(device, non_blocking=cuda), x[1].to(device, non_blocking=cuda)) if tc.border
                    else (x.to(device, non_blocking=cuda), None))
        out = net(x, free_bits=tc.free_bits, known=known, calibration_shifts=tc.calibration_shifts,
                  calibration_per_step=tc.calibration_per_step, calibration_per_band=tc.calibration_per_band)
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"loss is {out['loss'].item()} at step {step}; lower --lr or resume")
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()  # DDP averages the gradients across ranks here
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
        before = [p.detach()[rows].clone() for p, rows, _ in boosted]
        opt.step()
        with torch.no_grad():  # Adam's step size ignores gradient scale, so scale the step itself
            for (p, rows, k), b in zip(boosted, before):
                p[rows] = b + k * (p[rows] - b)
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - tc.ema)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss'].item():.3f}", bpd=f"{out['bpd'].item():.3f}", refresh=False)
        if lead and (step % tc.eval_every == 0 or step == tc.steps):
            rec = evaluation(step, out["bpd"].item())
            if tc.keep_best and rec["val_bpd"] < best:
                best = rec["val_bpd"]
                save_checkpoint(out_dir / "best.pt", ema, ema, None, step, tc, history)
        if lead and time.time() - last_ckpt > tc.ckpt_every_s:
            save_checkpoint(ckpt, model, ema, opt, step, tc, history)
            last_ckpt = time.time()
    bar.close()
    crops.close()
    if lead:
        save_checkpoint(ckpt, model, ema, opt, step, tc, history)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return ckpt


class _Prefetch:
    """The crops of the next steps, drawn in a background thread while the device computes this one.
    A batch is a function of its step alone (CropSampler), so prefetching changes no crop."""

    def __init__(self, sampler: CropSampler, n: int, key, steps: int, pin: bool, ahead: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self.sampler, self.n, self.key, self.steps, self.pin, self.ahead = sampler, n, key, steps, pin, ahead
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: dict = {}

    def get(self, step: int):
        for s in range(step, min(step + self.ahead + 1, self.steps)):
            if s not in self.pending:
                self.pending[s] = self.pool.submit(self.sampler.batch, self.key(s), self.n)
        batch = self.pending.pop(step).result()
        if not self.pin:
            return batch
        return tuple(t.pin_memory() for t in batch) if isinstance(batch, tuple) else batch.pin_memory()

    def close(self) -> None:
        for f in self.pending.values():
            f.cancel()
        self.pool.shutdown(wait=True)


def gate_rows(model: BitSwapModel) -> list[tuple[torch.nn.Parameter, slice]]:
    """(parameter, rows) of the neighbour predictor's weight g (and the colour residual's h) in each phase
    head: the last C (2C) output rows.

    A warm start from a trained model adds these rows at zero weight. At the small learning rate that
    suits the trained rest (<= 5e-5), Adam grows them by about lr a step, too slowly to matter within a
    CPU run; TrainConfig.gate_lr_scale multiplies their steps alone."""
    n = model.predictor_channels()
    if not n:
        return []
    rows = slice(-n, None)
    return [(p, rows) for head in model.phase_heads
            for p in (head.conv_out.v, head.conv_out.g, head.conv_out.bias)]


def warm_start(model: BitSwapModel, checkpoint: Path) -> None:
    """Load another run's EMA weights wherever names and shapes match; re-derive the phase heads.

    A model file (.safetensors, e.g. the shipped default) works too: its exact tensors are turned back
    into float weights that export to the same model, since training checkpoints are not shipped. Phase
    heads that grew output rows (the neighbour predictor's weights) keep the source's rows and start
    the new ones at zero weight; latent layers added on top start as the source's fixed top prior
    (BitSwapModel.init_new_top_layers)."""
    if checkpoint.suffix == ".safetensors":
        src = model_from_file(checkpoint).state_dict()
    else:
        src = load_checkpoint(checkpoint)["ema"]
    own = model.state_dict()
    same = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not same:
        raise ValueError(f"{checkpoint} shares no weights with this model configuration")
    model.load_state_dict(same, strict=False)
    grown = {k: v for k, v in src.items() if k.startswith("phase_heads.") and k in own and k not in same
             and own[k].shape[1:] == v.shape[1:] and own[k].shape[0] > v.shape[0]}
    with torch.no_grad():
        for k, v in grown.items():
            own[k][: v.shape[0]].copy_(v)  # state_dict tensors share storage with the parameters
    if len(model.phase_heads) and not any(k.startswith("phase_heads.") for k in same):
        model.init_phase_heads_from_base()
    layers = sum(1 for k in same if k.startswith("q_nets.") and k.endswith(".conv_out.bias"))
    if layers < model.cfg.nz:
        model.init_new_top_layers(layers)


def average_checkpoints(paths: list[Path], out: Path) -> Path:
    """A uniform "soup" of runs continued from one start (Wortsman et al. 2022): the mean of their EMA
    weights, written as a checkpoint that export_model and the diagnostics read. Runs from one warm start
    at a small learning rate stay in one basin, so the mean is a model (on stage 20's pair it coded larger
    than either run, docs/MODEL_CARD.md stage 22); runs with other configurations, or other non-float
    tensors, are refused."""
    if len(paths) < 2:
        raise ValueError("averaging needs two or more checkpoints")
    cks = [load_checkpoint(p) for p in paths]
    first = cks[0]
    for p, ck in zip(paths[1:], cks[1:]):
        if ck["config"] != first["config"]:
            raise ValueError(f"{p}: another model configuration than {paths[0]}'s; only runs of one model average")

    def mean(key: str) -> dict:
        avg = {}
        for name, t in first[key].items():
            ts = [ck[key][name] for ck in cks]
            if t.is_floating_point():
                avg[name] = torch.stack([x.double() for x in ts]).mean(0).to(t.dtype)
            elif all(torch.equal(x, t) for x in ts):
                avg[name] = t
            else:
                raise ValueError(f"{name}: integer tensor differs between the runs; cannot average it")
        return avg

    history = json.loads(first["history"])
    soup = {**first, "model": mean("model"), "ema": mean("ema"), "opt": {},
            "history": json.dumps(history[-1:]), "soup_of": json.dumps([str(p) for p in paths])}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(soup, tmp)
    os.replace(tmp, out)
    return out


def export_model(checkpoint: Path, out: Path, use_ema: bool = True, extra_info: dict | None = None) -> str:
    """Checkpoint -> exact model file (safetensors) with the training record in its metadata."""
    from bitswap_core.model.export import export_tensors
    from bitswap_core.registry import save_model

    ck = load_checkpoint(checkpoint)
    model = model_from_checkpoint(checkpoint, use_ema=use_ema)
    history = json.loads(ck["history"])
    info = {"step": int(ck["step"]), "train_config": json.loads(ck["train_config"]),
            "last_eval": history[-1] if history else None, **(extra_info or {})}
    if "soup_of" in ck:
        info["soup_of"] = json.loads(ck["soup_of"])
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_model(out, model.cfg, export_tensors(model), info)


def val_count(tc: TrainConfig) -> int:
    """How many validation tiles a run evaluates: val_blocks 32x32 tiles' worth of pixels."""
    return max(1, tc.val_blocks * 32 * 32 // tc.crop_side**2)


def validation_subset(images: list[np.ndarray], n: int, seed: int = 0, border: bool = False, side: int = 32):
    """A fixed, seeded subset of n tiles of the images: what train() evaluates on (with border: (bordered
    tiles, known), the same tiles)."""
    val = tile_blocks(images, border, side)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(val[0] if border else val), generator=g)[:n]
    return (val[0][pick], val[1][pick]) if border else val[pick]


def validation_tiles(val_data: str, n: int, seed: int = 0, border: bool = False, side: int = 32):
    """The fixed validation tiles of a run with val_data (the same subset train() evaluates on)."""
    return validation_subset([load_rgb(u) for u in list_images(val_data)], n, seed, border, side)


def float_and_exact_bpd(checkpoint: Path, model_file: Path, tiles: torch.Tensor) -> dict[str, float]:
    """-ELBO in bits per dimension of the float (EMA) model and of the exported exact model on the same
    tiles: the cost of making the model integer-exact, measured."""
    from bitswap_core.coding.bitsback import elbo_bits
    from bitswap_core.registry import load_model

    float_bpd = evaluate(model_from_checkpoint(checkpoint), tiles)["bpd"]
    mosaic = tiles.to(torch.uint8).permute(0, 2, 3, 1).reshape(-1, 32, 3).numpy()  # tiles stacked vertically
    exact = load_model(model_file)
    # unrelated tiles: none is the others' border (the float model has none either)
    exact_bpd = elbo_bits(exact.block_coder("bitswap", border=False), [mosaic])[0] / mosaic.size
    return {"float_bpd": float_bpd, "exact_bpd": exact_bpd}
