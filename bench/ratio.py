"""Ratio benchmark: every codec on a dataset in one run, plus the model's negative ELBO.

    .venv/bin/python bench/ratio.py ../shared/datasets/val --out docs/ratio_val.json

Prints total bits per dimension and percent of raw for gzip, bzip2, LZMA, PNG, WebP lossless, JPEG-XL
lossless, BB-ANS and Bit-Swap (each decoded and verified), and the exact model's negative ELBO, so the
coding overhead (Bit-Swap size / ELBO - 1) is measured on the same images (those without direct blocks,
coding/direct.py, which the context model codes instead). The ELBO is given twice: for the
model as is, and with each image's adaptation (bitswap_core/coding/adapt.py) as the codec chooses it;
the overhead is measured against the latter, which is what the codec codes with.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.api import side_for  # noqa: E402
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402
from jobs.compare import ALL_CODECS, LABELS, compare, totals  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="folder of images")
    ap.add_argument("--model", default=None, help="model file (default: the shipped default model)")
    ap.add_argument("--codecs", default=",".join(ALL_CODECS))
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".png", ".ppm", ".bmp", ".tif", ".tiff"))
    paths = paths[: args.limit] if args.limit else paths
    images = [(p.name, Image.open(p).convert("RGB")) for p in paths]
    model = resolve(args.model)
    t0 = time.perf_counter()
    rows = compare(images, args.codecs.split(","), model=model,
                   progress=lambda r: print(f"  {r.image:<28} {LABELS.get(r.codec, r.codec):<20} "
                                            f"{r.bpd if r.bpd is None else round(r.bpd, 3)}", flush=True))
    tot = totals(rows)
    dims = sum(im.width * im.height * 3 for _, im in images)
    elbo_plain = elbo = 0.0
    adapted = {}  # per image, its adapted -ELBO in bits
    for name, im in images:  # in the blocks the codec cuts each image into (api.side_for)
        bc, arrays = model.block_coder("bitswap", side=side_for(im.width, im.height)), [np.asarray(im)]
        elbo_plain += sum(elbo_bits(bc, arrays))
        adapted[name] = sum(elbo_bits(bc, arrays, adaptations=adapt.choose(bc, arrays)))
        elbo += adapted[name]
    print(f"\n{len(images)} images, {dims / 3e6:.2f} MP, model {model.id} ({time.perf_counter() - t0:.0f} s)")
    print(f"{'codec':<22} {'bpd':>7} {'% of raw':>9} {'enc s':>8} {'dec s':>8}")
    table = []
    for r in tot:
        bpd = r.bpd
        line = {"codec": LABELS.get(r.codec, r.codec), "bpd": bpd,
                "percent_raw": None if bpd is None else bpd / 8 * 100,
                "encode_s": r.encode_s, "decode_s": r.decode_s, "status": r.status}
        table.append(line)
        if bpd is None:
            print(f"{line['codec']:<22} {r.status}")
        else:
            print(f"{line['codec']:<22} {bpd:7.3f} {bpd / 8 * 100:8.1f}% {r.encode_s:8.1f} {r.decode_s:8.1f}")
    elbo_bpd, plain_bpd = elbo / dims, elbo_plain / dims
    print(f"{'-ELBO, model as is':<22} {plain_bpd:7.3f} {plain_bpd / 8 * 100:8.1f}%")
    print(f"{'-ELBO, adapted':<22} {elbo_bpd:7.3f} {elbo_bpd / 8 * 100:8.1f}%")
    # the overhead over the -ELBO is the latent model's: over the images it coded whole (a direct block,
    # coding/direct.py, is coded by the context model, not at the -ELBO)
    whole = [r for r in rows if r.codec == "bitswap" and r.ok and not r.note]
    if whole:
        coded, bound = sum(8 * r.compressed_bytes for r in whole), sum(adapted[r.image] for r in whole)
        print(f"Bit-Swap coding overhead over the adapted -ELBO on the {len(whole)} images without direct "
              f"blocks: {100 * (coded / bound - 1):.2f}%")
    for r in rows:  # the blocks the classical context model coded (coding/direct.py), said plainly
        if r.codec == "bitswap" and r.note:
            print(f"Bit-Swap on {r.image}: {r.note}")
    if args.out:
        args.out.write_text(json.dumps({"model": model.id, "images": [n for n, _ in images], "dims": dims,
                                        "totals": table, "elbo_bpd": elbo_bpd, "elbo_bpd_unadapted": plain_bpd,
                                        "rows": [r.as_dict() for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
