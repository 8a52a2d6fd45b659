"""What the archive stores per image: the learned path alone against the codec's real choice (the smaller
of the learned container and the classical route, PNG, WebP or JPEG-XL lossless, bitswap_core/fallback.py).

    .venv/bin/python bench/classical_route.py ../shared/datasets/val ../shared/datasets/mixed

Per image: bits per subpixel of the learned container (api.compress(smallest=False)), of the archive's
container (api.compress(), the default, decoded again and compared), which codec it holds, and WebP and
JPEG-XL lossless at full effort alone for reference; then totals per folder and the archive's encode time over
the learned path's. Every size is a whole container (header, digest, CRC included).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core import api, container, fallback  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    model = resolve(args.model)
    print(f"model {model.id}; bits per subpixel of whole containers")
    print(f"{'image':<24} {'mode':<5} {'learned':>8} {'archive':>8} {'codec':<14} {'WebP m6':>8} "
          f"{'JXL e9':>8} {'enc s learned':>13} {'enc s archive':>13}")
    for folder in args.folders:
        tot = {"dims": 0, "learned": 0, "archive": 0, "webp": 0, "jxl": 0, "t_learned": 0.0, "t_archive": 0.0}
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png"):
            with Image.open(path) as im:
                im.load()
            dims = im.width * im.height * len(im.getbands())
            t0 = time.perf_counter()
            learned = api.compress(im, model, smallest=False)
            t1 = time.perf_counter()
            archive = api.compress(im, model)
            t2 = time.perf_counter()
            out = api.decompress(archive, model)
            assert out.mode == im.mode and out.tobytes() == im.tobytes(), f"{path.name}: round trip differs"
            alone = {}
            for name, codec in (("webp", fallback.WEBP), ("jxl", fallback.JXL)):
                payload = fallback.encode_verified(im, codec, "max")
                alone[name] = (8 * len(payload) if payload is not None else 8 * len(archive), payload is not None)
            codec = container.unpack(archive).codec
            print(f"{path.name:<24} {im.mode:<5} {8 * len(learned) / dims:8.4f} {8 * len(archive) / dims:8.4f} "
                  f"{codec:<14} " + " ".join(f"{b / dims if ok else float('nan'):8.4f}" for b, ok in alone.values())
                  + f" {t1 - t0:13.2f} {t2 - t1:13.2f}", flush=True)
            for key, value in (("dims", dims), ("learned", 8 * len(learned)), ("archive", 8 * len(archive)),
                               ("webp", alone["webp"][0]), ("jxl", alone["jxl"][0]), ("t_learned", t1 - t0),
                               ("t_archive", t2 - t1)):
                tot[key] += value
        d = tot["dims"]
        print(f"{'total ' + folder.name:<30} {tot['learned'] / d:8.4f} {tot['archive'] / d:8.4f} {'':<14} "
              f"{tot['webp'] / d:8.4f} {tot['jxl'] / d:8.4f} {tot['t_learned']:13.1f} {tot['t_archive']:13.1f}")
        print(f"  archive vs learned {100 * (tot['archive'] / tot['learned'] - 1):+.2f}%, vs WebP m6 "
              f"{100 * (tot['archive'] / tot['webp'] - 1):+.2f}%, vs JPEG-XL e9 "
              f"{100 * (tot['archive'] / tot['jxl'] - 1):+.2f}% (each where it stores the mode, else the "
              f"archive's own size); encode time archive / learned {tot['t_archive'] / tot['t_learned']:.3f}")


if __name__ == "__main__":
    main()
