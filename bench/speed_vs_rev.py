"""Encode, decode and direct-trace time of this checkout against an earlier git revision, on whole images,
for changes that must not change a byte (compiled kernels, caches): both codes run in child processes
(the revision from a temporary `git worktree`, the same .venv), alternating round by round, one thread;
prints seconds per version, their ratios, and whether every payload is identical and decodes exactly.

    .venv/bin/python bench/speed_vs_rev.py b2da426 ../shared/datasets/val/*.png [--rounds 2] [--effort 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(paths: list[str], effort: int) -> None:
    """In the child: per image, trace / encode / decode seconds and the payload's digest, as JSON."""
    import numpy as np
    import torch
    from PIL import Image

    import bitswap_core
    from bitswap_core import api
    from bitswap_core.coding import direct

    torch.set_num_threads(1)
    images = [Image.open(p).convert("RGB") for p in paths]
    bitswap_core.compress(images[0].crop((0, 0, 96, 96)), smallest=False)  # build, compile
    kw = {"effort": effort} if effort != 2 else {}
    out = []
    for p, im in zip(paths, images):
        a = np.asarray(im)
        t0 = time.perf_counter()
        direct.trace(a, api.side_for(im.width, im.height, 1))
        t1 = time.perf_counter()
        data = bitswap_core.compress(im, smallest=False, **kw)
        t2 = time.perf_counter()
        back = bitswap_core.decompress(data)
        t3 = time.perf_counter()
        out.append({"image": Path(p).name, "trace": t1 - t0, "encode": t2 - t1, "decode": t3 - t2,
                    "digest": hashlib.sha256(data).hexdigest(), "exact": back.tobytes() == im.tobytes()})
    print(json.dumps(out))


def run(src: Path, paths: list[str], effort: int) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--effort", str(effort), *paths]
    res = subprocess.run(cmd, env=env, cwd=src, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", nargs="?", help="the earlier revision (a commit or ref)")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--effort", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # (the child is given images only: the first lands in rev)
        child([str(Path(p).resolve()) for p in [args.rev, *args.images] if p], args.effort)
        return 0
    paths = [str(Path(p).resolve()) for p in args.images]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.rev], check=True)
        try:
            totals = {"rev": {}, "here": {}}
            digests: dict[str, set] = {}
            exact = True
            for r in range(args.rounds):
                for name, src in (("rev", old), ("here", ROOT)) if r % 2 == 0 else (("here", ROOT), ("rev", old)):
                    for row in run(src, paths, args.effort):
                        for k in ("trace", "encode", "decode"):
                            totals[name][k] = totals[name].get(k, 0.0) + row[k]
                        digests.setdefault(row["image"], set()).add(row["digest"])
                        exact &= row["exact"]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    same = all(len(d) == 1 for d in digests.values())
    for name, label in (("rev", args.rev), ("here", "this checkout")):
        t = totals[name]
        print(f"{label:14} trace {t['trace']:7.2f} s  encode {t['encode']:7.2f} s  decode {t['decode']:7.2f} s")
    a, b = totals["rev"], totals["here"]
    print(f"this checkout / {args.rev}: trace x{b['trace'] / a['trace']:.3f}, encode x{b['encode'] / a['encode']:.3f}, "
          f"decode x{b['decode'] / a['decode']:.3f} ({len(paths)} images, {args.rounds} rounds, effort {args.effort}); "
          f"payloads identical: {same}; decoded exactly: {exact}")
    return 0 if same and exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
