"""Block side in the coded path (container v15): each image coded through the public API's learned path
(`smallest=False`, container included) with blocks of 32 (as every earlier container), 64 and 128 pixels a
side, the same model, decoded and verified pixel-exact; bits per dimension and encode / decode KB/s of raw
pixels on one thread, the sides alternating image by image. "auto" is the API's own rule (api.side_for),
which depends on the image's size alone: given every side, the table takes each image's auto side's run.

    .venv/bin/python bench/block_side.py ../shared/datasets/val/*.png --sides 32,64,128 --out F.json

Runs split across processes (one core each, e.g. half the images each) are put together with
`--merge A.json B.json`. Ablations: `--first-part-only` (only the first block in 32x32 parts: the larger
blocks then pop their latents from a shallow stack), `--fit-side 128` (the adaptation fitted on blocks of
the coding side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.image_runs import add_run_arguments, measure_all, merged, setting_row, timed_round_trip  # noqa: E402
from bitswap_core import api  # noqa: E402
from bitswap_core.coding import adapt, importance  # noqa: E402


def measure(path: Path, sides: list[str], particles: int) -> dict:
    img = Image.open(path).convert("RGB")
    auto = api.side_for(img.width, img.height, particles)
    out = {"image": path.name, "dims": 3 * img.width * img.height, "auto": auto, "runs": {}}
    for side in sides:
        data, enc, dec = timed_round_trip(img, f"{path}: side {side}", particles=particles,
                                          block_side=None if side == "auto" else int(side))
        out["runs"][side] = {"bytes": len(data), "encode_s": enc, "decode_s": dec}
        print(f"{path.name:24s} side {side:>4s} {8 * len(data) / out['dims']:.4f} bpd, encode {enc:.1f} s, "
              f"decode {dec:.1f} s", flush=True)
    return out


def table(results: list[dict]) -> None:
    sides = list(dict.fromkeys(s for r in results for s in r["runs"]))
    if "auto" not in sides and all(str(r["auto"]) in r["runs"] for r in results):
        for r in results:  # the API's rule depends on the image's size alone: its side's run is its run
            r["runs"]["auto"] = r["runs"][str(r["auto"])]
        sides.append("auto")
    dims = sum(r["dims"] for r in results)
    print(f"\n{len(results)} images, {dims / 3e6:.2f} MP")
    print("| block side | bpd | vs 32 | images smaller | encode KB/s | decode KB/s |")
    print("|---|---|---|---|---|---|")
    for side in sides:
        bpd, rel, smaller, enc, dec = setting_row(results, side, "32")
        print(f"| {side} | {bpd:.4f} | {rel} | {smaller} of {len(results)} | {enc:.1f} | {dec:.1f} |")
    print("\nper image, bpd:")
    for r in results:
        print(f"  {r['image']:24s} auto={r['auto']:3d} " + " ".join(
            f"{s}: {8 * x['bytes'] / r['dims']:.4f}" for s, x in r["runs"].items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    add_run_arguments(ap)
    ap.add_argument("--sides", default="32,64,128")
    ap.add_argument("--particles", type=int, default=1)
    ap.add_argument("--first-part-only", action="store_true",
                    help="ablation: only each image's first block in 32x32 parts, every later one whole")
    ap.add_argument("--fit-side", type=int, default=None,
                    help="ablation: the largest block side the adaptation is fitted on (adapt.FIT_SIDE)")
    args = ap.parse_args()
    if args.merge:
        return table(merged(args.merge))
    torch.set_num_threads(1)
    if args.first_part_only:
        importance.stack_needed = lambda block_coder, k: 0
    if args.fit_side:
        adapt.FIT_SIDE = args.fit_side
    sides = args.sides.split(",")
    table(measure_all(args.images, lambda path: measure(path, sides, args.particles), args.out))


if __name__ == "__main__":
    main()
