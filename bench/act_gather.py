"""Two gathers of the exact networks, each against the code it replaced, side by side in one run on whole
images (the same bytes both ways): the ELU lookup (exact._Net.act: index_select with int32 indices against
advanced indexing with int64 ones) and, with --cols, the convolutions' im2col (exact._Conv._cols: one
strided view copied once against concatenating the k*k shifted windows).

    .venv/bin/python bench/act_gather.py ../shared/datasets/val/{usc-4.2.07,waterloo-monarch,usc-4.1.01}.png [--cols]
    .venv/bin/python bench/act_gather.py --cols-alone    # the two im2cols alone on the networks' shapes

Alternates the two versions image by image, one thread, the learned path with the default adaptation;
prints encode and decode seconds per version and their ratio, and checks the payloads are identical.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bitswap_core  # noqa: E402
from bitswap_core.model import exact  # noqa: E402
from bitswap_core.model.quant import STREAM_MAX  # noqa: E402


def old_act(self, t: torch.Tensor) -> torch.Tensor:
    return self.lut[(t + STREAM_MAX).to(torch.int64)]


def old_cols(self, a: torch.Tensor) -> torch.Tensor:
    bsz, h, w, c = a.shape
    k, p = self.k, self.k // 2
    ap = F.pad(a, (0, 0, p, p, p, p))
    cols = torch.cat([ap[:, dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)], dim=3)
    return cols.reshape(-1, k * k * c)


# --cols or not -> (class, method, (old name, old), (new name, new))
PARTS = {
    False: (exact._Net, "act", ("int64 indexing", old_act), ("int32 index_select", exact._Net.act)),
    True: (exact._Conv, "_cols", ("cat of windows", old_cols), ("strided view", exact._Conv._cols)),
}


def cols_alone(rounds: int = 30) -> None:
    """Both im2cols on (blocks, 16, 16, channels) inputs of the networks' convs, int8 and float32."""

    class Conv:
        def __init__(self, k: int) -> None:
            self.k = k

    for shape, k in (((64, 16, 16, 64), 3), ((16, 16, 16, 64), 3), ((64, 16, 16, 12), 5), ((8, 18, 18, 64), 3)):
        for dtype in (torch.int8, torch.float32):
            a, conv = torch.randint(-100, 100, shape).to(dtype), Conv(k)
            assert torch.equal(old_cols(conv, a), exact._Conv._cols(conv, a))
            t = [0.0, 0.0]
            for _ in range(rounds):
                for i, fn in enumerate((old_cols, exact._Conv._cols)):
                    t0 = time.perf_counter()
                    fn(conv, a)
                    t[i] += time.perf_counter() - t0
            print(f"{str(shape):18} k={k} {str(dtype):13} cat {t[0] / rounds * 1e3:6.2f} ms  "
                  f"strided {t[1] / rounds * 1e3:6.2f} ms  x{t[1] / t[0]:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cols", action="store_true", help="the im2col instead of the ELU lookup")
    ap.add_argument("--cols-alone", action="store_true", help="the two im2cols alone, no images")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cols_alone:
        cols_alone()
        return 0
    if not args.images:
        ap.error("images are needed unless --cols-alone")
    cls, method, (old_name, old), (new_name, new) = PARTS[args.cols]
    images = [Image.open(p).convert("RGB") for p in args.images]
    bitswap_core.compress(images[0].crop((0, 0, 64, 64)), smallest=False)  # build, compile
    t = {old_name: [0.0, 0.0], new_name: [0.0, 0.0]}
    same = True
    for _ in range(args.rounds):
        for im in images:
            out = {}
            for name, fn in ((old_name, old), (new_name, new)):
                setattr(cls, method, fn)
                t0 = time.perf_counter()
                data = bitswap_core.compress(im, smallest=False)
                t1 = time.perf_counter()
                back = bitswap_core.decompress(data)
                t2 = time.perf_counter()
                t[name][0] += t1 - t0
                t[name][1] += t2 - t1
                out[name] = data
                same &= back.tobytes() == im.tobytes()
            same &= len(set(out.values())) == 1
    setattr(cls, method, new)
    for name, (enc, dec) in t.items():
        print(f"{name:20} encode {enc:7.2f} s  decode {dec:7.2f} s")
    (e0, d0), (e1, d1) = t.values()
    print(f"{new_name} / {old_name}: encode x{e1 / e0:.3f}, decode x{d1 / d0:.3f}; "
          f"payloads identical and decoded exactly: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
