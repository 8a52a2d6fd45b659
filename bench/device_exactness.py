"""Do payloads coded on one device decode on another, and are they the same bytes? (issue 3: exactness)

    python3 bench/device_exactness.py --devices cuda cpu --json OUT.json     # on a GPU machine
    .venv/bin/python bench/device_exactness.py --devices cpu                  # here: batch vs one image

Codes crops of the bundled sample images with the default model (or --model) on each device, one image
at a time and all together in one compress_batch call, with Bit-Swap and BB-ANS. Every payload must be
byte-identical to the first device's one-image payload, and every payload is decoded on every device
and compared with the original pixels. Prints a line per image and a verdict; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core import api, registry  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--crop", type=int, default=160, help="top-left crop side (odd sizes test the borders)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    paths = sorted(SAMPLES.glob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    images = [im.crop((0, 0, min(im.width, args.crop + 3 * i), min(im.height, args.crop - 5 * i)))
              for i, im in enumerate(images)]
    models = {d: registry.resolve(args.model, device=d) for d in args.devices}
    ref_dev = args.devices[0]
    rows, failures = [], 0
    for codec in ("bitswap", "bbans"):
        payloads: dict[tuple[str, str], list[bytes]] = {}
        for d, m in models.items():
            t0 = time.perf_counter()
            payloads[(d, "one")] = [api.compress(im, m, codec=codec, smallest=False) for im in images]
            t1 = time.perf_counter()
            payloads[(d, "batch")] = api.compress_batch(images, m, codec=codec, smallest=False)
            t2 = time.perf_counter()
            print(f"{codec} on {d}: one at a time {t1 - t0:.1f} s, one batch {t2 - t1:.1f} s")
        ref = payloads[(ref_dev, "one")]
        for i, (p, im) in enumerate(zip(paths, images)):
            same = {f"{d}/{how}": payloads[(d, how)][i] == ref[i] for d, how in payloads}
            decoded = {}
            for (d, how), datas in payloads.items():
                for dd, m in models.items():
                    back = api.decompress(datas[i], m)
                    decoded[f"{d}/{how} -> {dd}"] = back.tobytes() == im.tobytes()
            ok = all(same.values()) and all(decoded.values())
            failures += not ok
            rows.append({"codec": codec, "image": p.name, "size": im.size, "bytes": len(ref[i]),
                         "identical_payloads": same, "decoded_exactly": decoded, "ok": ok})
            print(f"  {p.name:<28} {im.width}x{im.height} {len(ref[i]):>7} B  "
                  f"{'identical everywhere' if ok else 'DIFFERS: ' + json.dumps({**same, **decoded})}")
    info = {"devices": args.devices, "model": next(iter(models.values())).id, "failures": failures,
            "rows": rows}
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))
    print(f"{'PASS' if not failures else 'FAIL'}: {len(rows)} payloads, devices {args.devices}, "
          f"{failures} with a difference")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
