"""Why container v2 dithers the rANS slots: coding overhead over the -ELBO with and without dithering,
and how uniform the popped latents' probability integral transform (PIT) is.

    .venv/bin/python bench/dither.py ../shared/datasets/val --model bitswap_core/zoo/default-v1-b369ef88.safetensors

Images: the 768x512 photos, top --rows rows (a crop keeps the run short). Overhead = coded size / exact
-ELBO (one latent sample per block) - 1; PIT deciles of z1 as popped by the Bit-Swap encoder (all 0.1 if
the popped latents are samples of q(z1|x)). Every payload is decoded and checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitswap_core.coding import bitsback as bb  # noqa: E402
from bitswap_core.coding.rans import AnsCoder  # noqa: E402
from bitswap_core.registry import resolve  # noqa: E402


def encode(bc, arr, dithered: bool, pits: list | None = None) -> bytes:
    """Encode one image with or without dithering; optionally record the PIT of every popped z1."""
    rng = np.random.default_rng(0)
    orig_init, orig_pop = AnsCoder.__init__, bb.BlockCoder.pop_latents
    first = [True]

    def init(self, *a, **k):
        k.setdefault("dithered", dithered)
        orig_init(self, *a, **k)

    def pop_latents(self, coders, dist):
        z = orig_pop(self, coders, dist)
        if pits is not None and first[0]:  # q(z1|x) is the first pop of every block
            rows, bases = self._latent_codes(*dist)
            t, w, zz = self.tz.cdf, self.tz.width, z.reshape(len(coders), -1).numpy()
            lo = np.where(zz <= 0, 0, t[rows, np.clip(zz - bases + w, 0, t.shape[1] - 1)]).astype(np.float64)
            hi = np.where(zz + 1 >= self.tz.n, 2**24, t[rows, np.clip(zz + 1 - bases + w, 0, t.shape[1] - 1)])
            pits.append(((lo + rng.random(lo.shape) * (hi - lo)) / 2**24).ravel())
        first[0] = not first[0] if self.cfg.nz == 2 else first[0]
        return z

    AnsCoder.__init__, bb.BlockCoder.pop_latents = init, pop_latents
    try:
        data = bb.encode_images(bc, [arr])[0].to_bytes()
    finally:
        AnsCoder.__init__, bb.BlockCoder.pop_latents = orig_init, orig_pop
    back = bb.decode_images(bc, [AnsCoder.from_bytes(data, bc.bed_words, dithered=dithered)], [arr.shape])[0]
    assert (back == arr).all(), "round trip failed"
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--rows", type=int, default=256)
    args = ap.parse_args()
    model = resolve(args.model)
    if model.cfg.nz != 2:
        raise SystemExit("the PIT bookkeeping assumes nz = 2")
    paths = sorted(p for p in args.data.iterdir() if Image.open(p).size in ((768, 512), (512, 768)))
    print(f"model {model.id}; overhead = size / -ELBO (1 sample) - 1, crops of {args.rows} rows")
    pits = {False: [], True: []}
    for p in paths:
        arr = np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB"))[: args.rows])
        for scheme in ("bitswap", "bbans"):
            bc = model.block_coder(scheme)
            elbo = bb.elbo_bits(bc, [arr], seed=0)[0]
            res = []
            for dithered in (False, True):
                data = encode(bc, arr, dithered, pits[dithered] if scheme == "bitswap" else None)
                res.append(100 * (8 * len(data) / elbo - 1))
            print(f"{p.name:<24} {scheme:<8} overhead plain {res[0]:6.2f}%   dithered {res[1]:6.2f}%", flush=True)
    for dithered in (False, True):
        u = np.concatenate(pits[dithered])
        h = np.histogram(u, bins=10, range=(0, 1))[0] / len(u)
        print(f"PIT deciles of popped z1 ({'dithered' if dithered else 'plain'}, n={len(u)}):", np.round(h, 4))


if __name__ == "__main__":
    main()
