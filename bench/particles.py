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
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.image_runs import add_run_arguments, measure_all, merged, setting_row, timed_round_trip  # noqa: E402
from bitswap_core import api, container  # noqa: E402
from bitswap_core.blocks import grid  # noqa: E402
from bitswap_core.coding import importance  # noqa: E402
from bitswap_core.registry import find_by_id  # noqa: E402


def measure(path: Path, ks: list[int]) -> dict:
    img = Image.open(path).convert("RGB")
    rows, cols = grid(img.height, img.width)
    out = {"image": path.name, "dims": 3 * img.width * img.height, "blocks": rows * cols, "runs": {}}
    for k in ks:
        data, enc, dec = timed_round_trip(img, f"{path}: K={k}", particles=k)
        box = container.unpack(data)
        sections = api.learned_sections(box, find_by_id(box.model_id))
        rows, cols = grid(img.height, img.width, sections.side)
        out["blocks"] = rows * cols
        used, starts = sections.particles, sections.starts
        out["runs"][str(k)] = {"bytes": len(data), "encode_s": enc, "decode_s": dec, "particles": used,
                               "starts": starts}
        print(f"{path.name:24s} K={k:2d} {8 * len(data) / out['dims']:.4f} bpd, rungs {importance.rungs(used)} "
              f"from blocks {starts} of {out['blocks']}, encode {enc:.1f} s, decode {dec:.1f} s", flush=True)
    return out


def table(results: list[dict]) -> None:
    ks = sorted({int(k) for r in results for k in r["runs"]})
    dims = sum(r["dims"] for r in results)
    print(f"\n{len(results)} images, {dims / 3e6:.2f} MP")
    print("| particles | bpd | vs K = 1 | images smaller | blocks with all K | encode KB/s | decode KB/s |")
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        runs = [r["runs"][str(k)] for r in results]
        share = (sum(r["blocks"] - (x["starts"] or [r["blocks"]])[-1] for x, r in zip(runs, results))
                 / sum(r["blocks"] for r in results))
        bpd, rel, smaller, enc, dec = setting_row(results, str(k), "1")
        print(f"| {k} | {bpd:.4f} | {rel} | {smaller} of {len(runs)} | {100 * share:.0f}% | {enc:.1f} | {dec:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    add_run_arguments(ap)
    ap.add_argument("--particles", default="1,2,4,8")
    args = ap.parse_args()
    if args.merge:
        return table(merged(args.merge))
    torch.set_num_threads(1)
    ks = [int(k) for k in args.particles.split(",")]
    table(measure_all(args.images, lambda path: measure(path, ks), args.out))


if __name__ == "__main__":
    main()
