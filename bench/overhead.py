"""Where Bit-Swap's coding overhead goes, per image: the stored learned payload against the exact model's
adapted -ELBO (one latent sample per block, as the encoder's fits draw them) and the adaptation header.

    .venv/bin/python bench/overhead.py ../shared/datasets/val [--version 19]

Per image: the payload in bits per subpixel, the -ELBO with the image's own adaptation, the header's share,
and what is left (the first block's initial bits that bits-back cannot get back, the container's fixed
fields, the coder's flush and its integer tables' rounding), each as a percentage of the -ELBO; and the
bytes the coder read off its stack's bed (the initial bits bits-back pops took before the stack held enough,
stored with the payload). --version writes an older container (10 on), as the benchmarks' settings do.
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bitswap_core  # noqa: E402
from bitswap_core import api, container  # noqa: E402
from bitswap_core.coding import adapt  # noqa: E402
from bitswap_core.coding.bitsback import elbo_bits  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def bed_bytes(data: bytes, model, bc) -> int:
    """Bytes of the stack's bed a learned container's coder read (the ANS section's kept-bed count)."""
    ans = api.learned_sections(container.unpack(data), model).ans
    return 4 * (bc.bed_words - struct.unpack_from("<I", ans)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--version", type=int, default=container.VERSION, help="container version to write (10 on)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    container.VERSION = args.version
    model = resolve(args.model)
    cols = ("coded", "-ELBO", "header %", "rest %", "rest bytes", "bed bytes")
    print(f"model {model.id}; bits per subpixel; header and rest as % of the -ELBO")
    print(f"  {'image':26s}" + "".join(f"{c:>11s}" for c in cols))
    totals, dims = np.zeros(5), 0
    for path in sorted(p for p in args.data.iterdir() if p.suffix.lower() == ".png"):
        img = Image.open(path).convert("RGB")
        im = np.asarray(img)
        split, side = api.phase_split_for(img.width, img.height), api.side_for(img.width, img.height)
        bc = model.block_coder("bitswap", split, side=side)
        (a,) = adapt.choose(bc, [im])
        elbo = elbo_bits(bc, [im], adaptations=[a])[0]
        header = 8 * len(adapt.to_bytes(replace(a, split=split), container.VERSION))
        data = bitswap_core.compress(img, model, smallest=False)
        coded, bed = 8 * len(data), bed_bytes(data, model, bc)
        rest = coded - elbo - header
        totals += (coded, elbo, header, rest, bed)
        dims += im.size
        print(f"  {path.name:26s}{coded / im.size:11.4f}{elbo / im.size:11.4f}{100 * header / elbo:11.2f}"
              f"{100 * rest / elbo:11.2f}{rest / 8:11.0f}{bed:11d}", flush=True)
    coded, elbo, header, rest, bed = totals
    print(f"  {'total':26s}{coded / dims:11.4f}{elbo / dims:11.4f}{100 * header / elbo:11.2f}"
          f"{100 * rest / elbo:11.2f}{rest / 8:11.0f}{bed:11.0f}")


if __name__ == "__main__":
    main()
