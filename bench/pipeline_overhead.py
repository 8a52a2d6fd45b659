"""Pipeline throughput with 1 and 2 actors, and its overhead over calling compress_batch directly.

Why: the pipeline adds listing, reading, Parquet writing, Ray scheduling and actor start-up around the
codec; this measures how much, on the same images and in the same run, so the ratios are comparable.
Target (issue 5): the pipeline's overhead under 15% of the codec's own time.

    .venv/bin/python bench/pipeline_overhead.py [--images samples] [--shard-size 2] [--limit N] [--unverified]
        [--threads-per-actor 1,2] [--busy N]

Rows: `direct` = compress_batch on the decoded images, in shard-sized batches, in this process (model
loaded before timing); `pipeline k actor(s)` = `pipeline.driver.compress` into a fresh folder. Columns:
wall time, time after the actors were ready (start-up excluded), images/s, MB/s of input files, and the
overhead ratio (pipeline time / direct time - 1), with and without start-up. The pipeline decodes every
learned payload before writing it (verify_writes); --unverified adds rows without that.
--threads-per-actor T,... runs each actor count once per thread count (pipeline.driver's
threads_per_actor); --busy N keeps N other processes busy (one core each) for the whole run, the shared
node that setting is for (bench/thread_contention.py measures the codec alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from thread_contention import busy_processes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _crop(src: Path, dst: Path, n: int) -> None:
    from PIL import Image

    im = Image.open(src)
    w, h = im.size
    left, top = max(0, (w - n) // 2), max(0, (h - n) // 2)
    im.crop((left, top, min(w, left + n), min(h, top + n))).save(dst, im.format)


def _direct(paths: list[Path], shard_size: int, codec: str) -> dict[str, float]:
    """compress_batch on the same images, same batches, no pipeline around it."""
    from PIL import Image

    import bitswap_core

    t0 = time.perf_counter()
    bitswap_core.compress_batch([Image.new("RGB", (32, 32))], codec=codec)  # loads the model once
    warm = time.perf_counter() - t0
    images = []
    for p in paths:
        im = Image.open(p)
        im.load()
        images.append(im)
    t0 = time.perf_counter()
    out_bytes = 0
    for i in range(0, len(images), shard_size):
        out_bytes += sum(len(b) for b in bitswap_core.compress_batch(images[i : i + shard_size], codec=codec))
    return {"seconds": time.perf_counter() - t0, "warmup_seconds": warm, "bytes_out": out_bytes}


def _pipeline(src: Path, actors: int, shard_size: int, codec: str, verify_writes: bool = True,
              threads: int | None = None) -> dict[str, float]:
    from pipeline.driver import compress

    dst = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        s = compress(str(src), str(dst), actors=actors, shard_size=shard_size, codec=codec, progress=False,
                     verify_writes=verify_writes, threads_per_actor=threads)
        return {
            "seconds": s.seconds,
            "startup_seconds": s.startup_seconds,
            "bytes_out": s.stats.compressed_bytes,
            "failed": s.stats.error + len(s.shards_failed),
        }
    finally:
        shutil.rmtree(dst, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=str(REPO / "samples"), help="folder of lossless images (default samples/)")
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images")
    ap.add_argument("--crop", type=int, default=0, help="centre-crop each image to at most NxN (quick runs)")
    ap.add_argument("--codec", default="bitswap", choices=("bitswap", "bbans"))
    ap.add_argument("--actors", default="1,2", help="actor counts to run (default 1,2)")
    ap.add_argument("--unverified", action="store_true",
                    help="also run each actor count without verify_writes (what decoding every payload costs)")
    ap.add_argument("--threads-per-actor", default="", help="thread counts per actor to run, e.g. 1,2")
    ap.add_argument("--busy", type=int, default=0, help="other processes kept busy during the run")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)

    from pipeline.sources import list_sources

    listed = list_sources(args.images, include=["*.png", "*.bmp", "*.tif", "*.tiff", "*.ppm", "*.webp"])
    files = listed.files[: args.limit] if args.limit else listed.files
    if not files:
        print(f"no lossless images under {args.images}", file=sys.stderr)
        return 2
    # The pipeline gets a folder with exactly these files, so both sides code the same images. Files the
    # pipeline would store as bytes (e.g. colour-key transparency) are left out: the codec never sees them.
    from pipeline.actors import DEFAULT_MAX_PIXELS, classify

    work = Path(tempfile.mkdtemp(prefix="bench-src-"))
    kept = []
    for f in files:
        (work / f.key).parent.mkdir(parents=True, exist_ok=True)
        if args.crop:
            _crop(Path(f.path), work / f.key, args.crop)
        else:
            shutil.copyfile(f.path, work / f.key)
        row, image = classify(f.key, (work / f.key).read_bytes(), DEFAULT_MAX_PIXELS)
        if image is None:
            print(f"left out {f.key}: {row['status']} ({row['error']})")
            (work / f.key).unlink()
        else:
            kept.append(f)
    files = kept
    in_bytes = sum((work / f.key).stat().st_size for f in files)
    import torch

    print(f"{len(files)} images, {in_bytes / 1e6:.2f} MB of files, shard size {args.shard_size}, "
          f"{os.cpu_count()} CPUs, codec {args.codec}, {args.busy} busy process(es), "
          f"direct with {torch.get_num_threads()} torch threads")  # fmt: skip

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(logging_level=logging.ERROR, include_dashboard=False, log_to_driver=False)
    results: dict[str, dict[str, float]] = {}
    thread_counts = [int(t) for t in args.threads_per_actor.split(",") if t] or [None]
    try:
        with busy_processes(args.busy):
            results["direct"] = _direct([work / f.key for f in files], args.shard_size, args.codec)
            for k in (int(x) for x in args.actors.split(",")):
                for t in thread_counts:
                    name = f"pipeline {k} actor{'s' if k > 1 else ''}"
                    name += f", {t} thread{'s' if t > 1 else ''}" if t else ""
                    results[name] = _pipeline(work, k, args.shard_size, args.codec, threads=t)
                    if args.unverified:
                        results[name + ", unverified"] = _pipeline(work, k, args.shard_size, args.codec, False, t)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    base = results["direct"]["seconds"]
    header = ("run", "wall s", "ready s", "img/s", "MB/s", "overhead", "excl.start")
    print("\n{:<32} {:>8} {:>8} {:>7} {:>7} {:>9} {:>10}".format(*header))
    for name, r in results.items():
        wall = r["seconds"]
        steady = wall - r.get("startup_seconds", 0.0)
        over = f"{wall / base - 1:+.1%}" if name != "direct" else "-"
        over_steady = f"{steady / base - 1:+.1%}" if name != "direct" else "-"
        rate, mbs = len(files) / steady, in_bytes / 1e6 / steady
        print(f"{name:<32} {wall:8.2f} {steady:8.2f} {rate:7.2f} {mbs:7.3f} {over:>9} {over_steady:>10}")
    print(f"\nmodel warm-up (direct, not timed above): {results['direct']['warmup_seconds']:.2f} s;"
          " 'ready s' excludes the pipeline's actor start-up (model load in each actor).")  # fmt: skip
    if any(r.get("failed") for r in results.values()):
        print("WARNING: some images or shards failed in a pipeline run", file=sys.stderr)
    if args.json:
        print(json.dumps({"images": len(files), "bytes_in": in_bytes, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
