"""Codec throughput with the default model: compress/decompress KB/s of raw pixels per core, the split
between network and coder, and the coder alone (Msymbols/s). Run: .venv/bin/python bench/codec_speed.py
(--models A B ... measures several model files side by side in one run; --adapt-blocks 0 16s 16o 16n 16
measures the codec with the model as is and with parts of the per-image adaptation (bench/adapt_setting.py,
bitswap_core/coding/adapt.py); --matmul int8 float measures the exact networks' int8 product, where this
CPU's passes its probe, and the float path side by side (model/exact.py; same bytes).)

Images: 256x256 crops of the sample photos, coded as one batch (the pipeline's hot path) and one by one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from adapt_setting import parse, parts_of
from PIL import Image

import bitswap_core
from bitswap_core import container
from bitswap_core.coding import adapt
from bitswap_core.coding.rans import AnsCoder, Table
from bitswap_core.model import exact
from bitswap_core.registry import default_model_path, load_model, resolve

ROOT = Path(__file__).resolve().parent.parent


def crops(n: int, size: int) -> list[Image.Image]:
    names = ["usc-4.2.07.png", "waterloo-monarch.png", "waterloo-clegg.png", "usc-4.1.07.png"]
    out = []
    for i in range(n):
        im = Image.open(ROOT / "samples" / names[i % len(names)]).convert("RGB")
        x = (i // len(names)) * size % max(1, im.width - size)
        out.append(im.crop((x, 0, x + size, size)))
    return out


def coder_speed(n: int = 2_000_000, levels: tuple[int, int] | None = None) -> dict:
    """Push / pop of n pixel symbols: rows of every scale level (levels=None) or of scale levels in
    [lo, hi) only (20-50: pixel scales 0.5-4, around the 2.2 of a pixel that costs 4 bits), any mean."""
    m = resolve(None)
    tab = Table(m.tensors["table_x"], 256, m.cfg.precision)
    rng = np.random.default_rng(0)
    if levels is None:
        rows = rng.integers(0, tab.cdf.shape[0], n)
    else:  # table rows are (scale level, mean fraction) pairs
        f = m.cfg.mean_frac
        rows = rng.integers(levels[0], levels[1], n) * f + rng.integers(0, f, n)
    bases = rng.integers(0, 256, n)
    sym = AnsCoder(n).pop(rows, bases, tab)  # samples from the distributions
    for _ in range(2):  # second round is warm (numba compiled)
        c = AnsCoder(64)
        t0 = time.perf_counter()
        c.push(sym, rows, bases, tab)
        te = time.perf_counter() - t0
        d = AnsCoder.from_bytes(c.to_bytes(), 64)
        t0 = time.perf_counter()
        d.pop(rows, bases, tab)
        td = time.perf_counter() - t0
    return {"encode_msym_s": n / te / 1e6, "decode_msym_s": n / td / 1e6}


_LOADED: dict = {}


def with_matmul(model, matmul: str):
    """The model (a path or None) whose exact networks use the int8 product where they can ("int8", the
    codec's default) or never ("float", as before it existed)."""
    key = (str(model), matmul)
    if key not in _LOADED:
        if matmul == "int8":
            _LOADED[key] = resolve(model)
        else:
            os.environ[exact.INT8_ENV] = "0"
            try:
                m = load_model(model or default_model_path())
                _ = m.exact  # built now, under the setting
            finally:
                os.environ.pop(exact.INT8_ENV)
            _LOADED[key] = m
    return _LOADED[key]


def int8_convs(m) -> int:
    """How many of the model's convolutions run as int8 products."""
    e = m.exact
    nets = e.q + e.p + [e.px]
    convs = [c for n in nets for c in [n.conv_in, n.out.conv] + [x for b in n.blocks for x in b]]
    convs += [c for ctx, blocks, head in e.phase_heads for c in [ctx, head.conv] + [x for b in blocks for x in b]]
    return sum(c.w8 is not None for c in convs)


def codec_speed(images: list[Image.Image], codec: str, batch: bool, threads: int, model=None,
                setting: str = str(adapt.SAMPLE_BLOCKS), matmul: str = "int8", side: str = "auto") -> dict:
    with parts_of(setting):
        return _codec_speed(images, codec, batch, threads, model, setting, matmul, side)


def _network_seconds(m, reset: bool = False) -> float:
    """Seconds in the networks of every block coder of model m (each block side has its own)."""
    coders = {id(s): s for bc in m.__dict__.get("_coders", {}).values() for s in bc._sides.values()}
    total = sum(bc.net.seconds for bc in coders.values())
    for bc in coders.values() if reset else ():
        bc.net.seconds = 0.0
    return total


def _codec_speed(images, codec, batch, threads, model, setting, matmul, side) -> dict:
    adapt_blocks = parse(setting)[0]
    torch.set_num_threads(threads)
    m = with_matmul(model, matmul)
    raw = sum(im.width * im.height * 3 for im in images)
    kw = {"adapt_blocks": adapt_blocks, "block_side": None if side == "auto" else int(side)}
    bitswap_core.compress(images[0], m, codec=codec, smallest=False, **kw)  # warm-up (JIT, tables, coders)
    _network_seconds(m, reset=True)
    t0 = time.perf_counter()
    if batch:
        datas = bitswap_core.compress_batch(images, m, codec=codec, smallest=False, **kw)
    else:
        datas = [bitswap_core.compress(im, m, codec=codec, smallest=False, **kw) for im in images]
    te, net_e = time.perf_counter() - t0, _network_seconds(m, reset=True)
    t0 = time.perf_counter()
    if batch:
        outs = bitswap_core.api.decompress_batch(datas, m)
    else:
        outs = [bitswap_core.decompress(d, m) for d in datas]
    td, net_d = time.perf_counter() - t0, _network_seconds(m)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(images, outs))
    assert all(container.unpack(d).codec == codec for d in datas)
    bits = sum(len(container.unpack(d).payload) * 8 for d in datas)
    return {
        "model": m.id[:8], "codec": codec, "batch": batch, "adapt": setting, "matmul": matmul, "side": side,
        "int8_convs": int8_convs(m), "threads": threads,
        "images": len(images),
        "raw_kb": raw / 1000,
        "bpd": bits / raw,
        "encode_kb_s_per_core": raw / 1000 / te / threads, "decode_kb_s_per_core": raw / 1000 / td / threads,
        "decode_over_encode_time": td / te,
        "encode_network_share": net_e / te, "decode_network_share": net_d / td,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--models", nargs="+", default=[None], help="model files (default: the shipped default)")
    ap.add_argument("--coder-only", action="store_true", help="only the coder without the network")
    ap.add_argument("--profile", action="store_true",
                    help="only profile one warm batched compress of the crops (cProfile, cumulative)")
    ap.add_argument("--adapt-blocks", nargs="+", default=[str(adapt.SAMPLE_BLOCKS)],
                    help="adaptation settings to measure: 0 (none), 16s, 16o, 16n, 16 (bench/adapt_setting.py)")
    ap.add_argument("--block-sides", nargs="+", default=["auto"],
                    help="block sides to measure: 32, 64, 128, auto (api.side_for; 64 for 256x256 crops)")
    ap.add_argument("--matmul", nargs="+", default=["int8"], choices=["int8", "float"],
                    help="the exact networks' products: int8 where the CPU passes the probe (default), float")
    args = ap.parse_args()
    if args.profile:
        import cProfile
        import pstats

        torch.set_num_threads(args.threads)
        images = crops(args.images, args.size)
        bitswap_core.compress_batch(images, smallest=False)  # warm-up (JIT, tables)
        prof = cProfile.Profile()
        prof.runcall(bitswap_core.compress_batch, images, smallest=False)
        pstats.Stats(prof).sort_stats("cumulative").print_stats("bitsback.py|adapt.py|phases.py", 16)
        return
    results = {"coder": coder_speed(), "coder_levels_20_50": coder_speed(levels=(20, 50)), "runs": []}
    for key, label in (("coder", "coder alone"), ("coder_levels_20_50", "coder alone, scale levels 20-50")):
        print(f"{label}:", json.dumps({k: round(v, 1) for k, v in results[key].items()}))
    if args.coder_only:
        return
    images = crops(args.images, args.size)
    for model in args.models:
        for codec, batch in (("bitswap", True), ("bitswap", False), ("bbans", True), ("bbans", False)):
            for blocks in args.adapt_blocks if codec == "bitswap" else args.adapt_blocks[-1:]:
                for matmul in args.matmul:
                    for side in args.block_sides:
                        r = codec_speed(images, codec, batch, args.threads, model, blocks, matmul, side)
                        results["runs"].append(r)
                        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
