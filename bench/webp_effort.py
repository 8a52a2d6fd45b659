"""WebP lossless effort settings against the learned path: which setting should judge the classical route.

    .venv/bin/python bench/webp_effort.py ../shared/datasets/val --ratio docs/bench/ratio_val.json

Per image: bits per subpixel and seconds of WebP lossless at (method, quality) 2/50, 3/75, 4/75 and 6/100
(the fallback's "fast" and "max" are two of them, bitswap_core/fallback.py), next to the Bit-Swap row of a
bench/ratio.py run of the same folder. The judge should be cheap and win wherever the full effort wins.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from PIL import Image

SETTINGS = ((2, 50), (3, 75), (4, 75), (6, 100))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--ratio", type=Path, required=True, help="bench/ratio.py --out JSON of the same folder")
    args = ap.parse_args()
    rows = json.loads(args.ratio.read_text())["rows"]
    learned = {r["image"]: r["bpd"] for r in rows if r["label"] == "Bit-Swap"}
    print(f"{'image':<24} {'Bit-Swap':>8} " + " ".join(f"{f'm{m} q{q}':>16}" for m, q in SETTINGS))
    for name in sorted(learned):
        im = Image.open(args.data / name).convert("RGB")
        dims = im.width * im.height * 3
        cells = []
        for m, q in SETTINGS:
            t = time.perf_counter()
            buf = io.BytesIO()
            im.save(buf, "WEBP", lossless=True, method=m, quality=q, exact=True)
            cells.append(f"{8 * len(buf.getvalue()) / dims:.3f} ({time.perf_counter() - t:5.2f} s)")
        print(f"{name:<24} {learned[name]:8.3f} " + " ".join(f"{c:>16}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
