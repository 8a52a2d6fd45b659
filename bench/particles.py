"""Importance-sampled bits-back in the coded path (coding/importance.py): each image coded through the public
API's learned path (`smallest=False`, container included) with K = 1 (Bit-Swap as shipped) and more
particles per block, decoded and verified pixel-exact; bits per dimension, the block each image switches
at, and encode / decode KB/s of raw pixels on one thread, the settings alternating image by image.

    .venv/bin/python bench/particles.py ../shared/datasets/val/*.png --particles 1,2,4,8 --out F.json

Runs split across processes (one core each, e.g. `--particles 1,2,4` and `--particles 8`) are put side by
side with `--merge A.json B.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bitswap_core  # noqa: E402
from bench.image_runs import measure_all, merged  # noqa: E402
from bitswap_core import api, container  # noqa: E402
from bitswap_core.blocks import grid  # noqa: E402
from bitswap_core.coding import adapt, importance  # noqa: E402


def measure(path: Path, ks: list[int]) -> dict:
    img = Image.open(path).convert("RGB")
    rows, cols = grid(img.height, img.width)
    out = {"image": path.name, "dims": 3 * img.width * img.height, "blocks": rows * cols, "runs": {}}
    for k in ks:
        t = time.perf_counter()
        data = bitswap_core.compress(img, smallest=False, particles=k)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        back = bitswap_core.decompress(data)
        dec = time.perf_counter() - t
        if back.tobytes() != img.tobytes():
            raise SystemExit(f"{path}: K={k} did not decode exactly")
        box = container.unpack(data)
        _, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
        side, _, rest = api._block_side(rest[1:], box.block_side_byte, img.width, img.height)
        rows, cols = grid(img.height, img.width, side)
        out["blocks"] = rows * cols
        used, starts, _ = importance.from_bytes(rest, out["blocks"])
        out["runs"][str(k)] = {"bytes": len(data), "encode_s": enc, "decode_s": dec, "particles": used,
                               "starts": starts}
        print(f"{path.name:24s} K={k:2d} {8 * len(data) / out['dims']:.4f} bpd, rungs {importance.rungs(used)} "
              f"from blocks {starts} of {out['blocks']}, encode {enc:.1f} s, decode {dec:.1f} s", flush=True)
    return out


def table(results: list[dict]) -> None:
    ks = sorted({int(k) for r in results for k in r["runs"]})
    dims = sum(r["dims"] for r in results)
    base = sum(r["runs"]["1"]["bytes"] for r in results) if all("1" in r["runs"] for r in results) else None
    print(f"\n{len(results)} images, {dims / 3e6:.2f} MP")
    print("| particles | bpd | vs K = 1 | images smaller | blocks with all K | encode KB/s | decode KB/s |")
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        runs = [r["runs"][str(k)] for r in results]
        size = sum(x["bytes"] for x in runs)
        smaller = sum(x["bytes"] < r["runs"]["1"]["bytes"] for x, r in zip(runs, results)) if base else 0
        share = (sum(r["blocks"] - (x["starts"] or [r["blocks"]])[-1] for x, r in zip(runs, results))
                 / sum(r["blocks"] for r in results))
        enc = dims / 1e3 / sum(x["encode_s"] for x in runs)
        dec = dims / 1e3 / sum(x["decode_s"] for x in runs)
        rel = f"{100 * (size / base - 1):+.2f}%" if base else "-"
        print(f"| {k} | {8 * size / dims:.4f} | {rel} | {smaller} of {len(runs)} | {100 * share:.0f}% | "
              f"{enc:.1f} | {dec:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--particles", default="1,2,4,8")
    ap.add_argument("--out", type=Path, default=None, help="write the per-image results as JSON")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="print the table of these JSON runs")
    args = ap.parse_args()
    if args.merge:
        return table(merged(args.merge))
    torch.set_num_threads(1)
    ks = [int(k) for k in args.particles.split(",")]
    table(measure_all(args.images, lambda path: measure(path, ks), args.out))


if __name__ == "__main__":
    main()
