"""Peak memory (max RSS) to compress and to decompress one large image with the default model.

    .venv/bin/python bench/memory.py --megapixels 24 [--sample waterloo-serrano.png]
    .venv/bin/python bench/memory.py --crops 64 [--root DIR]   # one compress_batch of 64 256x256 crops

--crops N measures the pipeline's path instead: one compress_batch of N 256x256 crops of the sample photos
(bench/codec_speed.py's) and its decompress_batch. --root DIR imports bitswap_core from another checkout
(`git worktree add DIR REV`), to compare a revision's peak with this one's. With --crops the encode's line
also has the peak so far after each stage of compress_batch ("peak_mb_after"; the first call of each).

The image is a sample photo tiled (mirrored) up to the requested size, so it has photo statistics (--sample:
another of samples/, such as the graphic, whose blocks the context model codes: coding/direct.py). Encode
and decode each run in a fresh subprocess so each peak is measured alone; RSS includes Python, torch and
numba themselves (their baseline is printed too).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import resource, sys, time, json
import numpy as np
from PIL import Image
sys.path.insert(0, {root!r})
import bitswap_core
mode, path, mp = sys.argv[1], sys.argv[2], float(sys.argv[3])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "encode" and {crops}:
    sys.path.insert(0, {bench!r})
    from codec_speed import crops
    from bitswap_core import api
    stages = {{}}  # the peak so far after each stage of compress_batch (the first of each)
    def after(name, fn):
        def wrapped(*a, **k):
            out = fn(*a, **k)
            stages.setdefault(name, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            return out
        return wrapped
    api.direct.trace = after("trace", api.direct.trace)
    api.adapt.choose = after("adapt.choose", api.adapt.choose)
    api.first_block.choose = after("first_block.choose", api.first_block.choose)
    api.encode_images = after("encode_images", api.encode_images)
    imgs = crops({crops}, 256)
    stages["images"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    datas = bitswap_core.compress_batch(imgs, smallest=False)
    open(path, "wb").write(json.dumps([d.hex() for d in datas]).encode())
    extra = {{"images": len(imgs), "bytes": sum(map(len, datas)), "peak_mb_after": stages}}
elif {crops}:
    datas = [bytes.fromhex(h) for h in json.loads(open(path, "rb").read())]
    from bitswap_core import api
    imgs = api.decompress_batch(datas)
    extra = {{"images": len(imgs)}}
elif mode == "encode":
    src = np.asarray(Image.open({sample!r}).convert("RGB"))
    w = int((mp * 1e6 * 1.5) ** 0.5); h = int(mp * 1e6 / w)
    reps = (h // src.shape[0] + 1, w // src.shape[1] + 1)
    tile = np.concatenate([src, src[::-1]], 0)
    tile = np.concatenate([tile, tile[:, ::-1]], 1)
    big = np.tile(tile, (reps[0] // 2 + 1, reps[1] // 2 + 1, 1))[:h, :w]
    img = Image.fromarray(np.ascontiguousarray(big))
    del big
    data = bitswap_core.compress(img, smallest=False)
    open(path, "wb").write(data)
    extra = {{"width": w, "height": h, "bytes": len(data)}}
else:
    img = bitswap_core.decompress(open(path, "rb").read())
    extra = {{"width": img.width, "height": img.height}}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"mode": mode, "peak_mb": peak / 1024, "baseline_mb": base / 1024,
                  "seconds": time.perf_counter() - t, **extra}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/bitswap_memory_bench.bsw"))
    ap.add_argument("--sample", default="waterloo-monarch.png", help="the image of samples/ to tile")
    ap.add_argument("--crops", type=int, default=0, help="one batch of this many 256x256 crops instead")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose bitswap_core is measured")
    args = ap.parse_args()
    code = CHILD.format(root=str(args.root.resolve()), sample=str(ROOT / "samples" / args.sample),
                        crops=args.crops, bench=str(ROOT / "bench"))
    results = []
    for mode in ("encode", "decode"):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, mode, str(args.tmp), str(args.megapixels)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["wall_s"] = time.perf_counter() - t
        results.append(r)
        print(json.dumps(r), flush=True)
    what = f"a batch of {args.crops} 256x256 crops" if args.crops else f"{args.megapixels} MP"
    print(f"peak RSS: encode {results[0]['peak_mb']:.0f} MB, decode {results[1]['peak_mb']:.0f} MB "
          f"for {what} (limit 2048 MB), bitswap_core from {args.root}")


if __name__ == "__main__":
    main()
