"""Codec throughput per device: compress_batch and decompress_batch of N crops, the pipeline's hot path.

    python3 bench/device_speed.py --devices cuda cpu --n 16 --size 256 --json OUT.json   # on a GPU machine
    .venv/bin/python bench/device_speed.py --devices cpu --n 4                           # here

Each device codes the same 256x256 crops of the sample images (bench/codec_speed.crops) in one batch after a
warm-up batch (networks built, coder compiled), then decodes them in one batch; every payload must equal the
first device's and decode to the original pixels. Prints KB/s of raw pixels per device and torch's thread
count: on a GPU the coder's integer work stays on the CPU (model/exact.py), so the ratio says what the
networks' move to CUDA buys in a batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec_speed import crops  # noqa: E402

from bitswap_core import api, registry  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    images = crops(args.n, args.size)
    raw = sum(im.width * im.height * 3 for im in images)
    rows, ref, ok = [], None, True
    for d in args.devices:
        m = registry.resolve(None, device=d)
        api.compress_batch(images[:1], m, smallest=False)  # warm-up: build, compile
        t0 = time.perf_counter()
        payloads = api.compress_batch(images, m, smallest=False)
        t1 = time.perf_counter()
        back = api.decompress_batch(payloads, m)
        t2 = time.perf_counter()
        ref = ref or payloads
        same = payloads == ref and all(b.tobytes() == im.tobytes() for b, im in zip(back, images))
        ok &= same
        row = {"device": d, "threads": torch.get_num_threads(), "images": len(images), "raw_bytes": raw,
               "encode_s": round(t1 - t0, 2), "decode_s": round(t2 - t1, 2),
               "encode_kb_s": round(raw / 1e3 / (t1 - t0), 1), "decode_kb_s": round(raw / 1e3 / (t2 - t1), 1),
               "identical_and_exact": same}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
