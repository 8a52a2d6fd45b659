"""Codec throughput per device: compress_batch and decompress_batch of N crops, the pipeline's hot path,
in one process or in K processes at once (as K pipeline actors on one node, sharing its GPU).

    python3 bench/device_speed.py --devices cuda cpu --n 16 --size 256 --json OUT.json   # on a GPU machine
    python3 bench/device_speed.py --devices cuda cpu --procs 1 4 16 --n 8                # K processes
    .venv/bin/python bench/device_speed.py --devices cpu --n 4                           # here

Each process codes the same 256x256 crops of the sample images (bench/codec_speed.crops) in one batch after a
warm-up batch (networks built, coder compiled), then decodes them in one batch; every payload must equal the
first run's and decode to the original pixels. With one process, torch keeps its thread count; with K, each
process runs one thread, so the K processes stand for K one-core actors. Prints KB/s of raw pixels over the
wall time of the K processes together (warm-up excluded). On a GPU the coder's integer work stays on the
CPU (model/exact.py): the H200 run (docs/bench/device_speed_h200.txt) found one process codes about as fast
with CUDA networks as with 16 CPU threads; --procs says whether K processes sharing the GPU scale.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _worker(device: str, n: int, size: int, threads: int | None, start, mid, done) -> None:
    """Warm up; at the common start encode, at the common middle decode; put (payloads, exact)."""
    import torch
    from codec_speed import crops

    from bitswap_core import api, registry

    if threads:
        torch.set_num_threads(threads)
    images = crops(n, size)
    m = registry.resolve(None, device=device)
    api.compress_batch(images[:1], m, smallest=False)  # build, compile
    start.wait()
    payloads = api.compress_batch(images, m, smallest=False)
    mid.wait()
    back = api.decompress_batch(payloads, m)
    done.put((payloads, all(b.tobytes() == im.tobytes() for b, im in zip(back, images))))


def run(device: str, procs: int, n: int, size: int) -> dict:
    ctx = mp.get_context("spawn")
    start, mid, done = ctx.Barrier(procs + 1), ctx.Barrier(procs + 1), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(device, n, size, 1 if procs > 1 else None, start, mid, done))
               for _ in range(procs)]
    for w in workers:
        w.start()
    start.wait()  # every process warmed up
    t0 = time.perf_counter()
    mid.wait()  # every process encoded
    t1 = time.perf_counter()
    results = [done.get() for _ in workers]
    t2 = time.perf_counter()
    for w in workers:
        w.join()
    raw = procs * n * size * size * 3
    return {"device": device, "processes": procs, "images": procs * n, "raw_bytes": raw,
            "encode_s": round(t1 - t0, 2), "decode_s": round(t2 - t1, 2),
            "encode_kb_s": round(raw / 1e3 / (t1 - t0), 1), "decode_kb_s": round(raw / 1e3 / (t2 - t1), 1),
            "payloads": [r[0] for r in results], "exact": all(r[1] for r in results)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--procs", type=int, nargs="+", default=[1], help="processes at once (one thread each if > 1)")
    ap.add_argument("--n", type=int, default=16, help="crops per process")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows, ref, ok = [], None, True
    for d in args.devices:
        for k in args.procs:
            row = run(d, k, args.n, args.size)
            payloads = row.pop("payloads")
            ref = ref or payloads[0]
            row["identical_and_exact"] = same = row.pop("exact") and all(p == ref for p in payloads)
            ok &= same
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
