"""Build the default model's training folder: the 49 training photos at three scales plus Debian photos.

    mkdir -p /tmp/debs && cd /tmp/debs && apt-get download mate-backgrounds libjxl-testdata
    for d in *.deb; do dpkg-deb -x "$d" /tmp/debs/x; done
    .venv/bin/python scripts/training_mix.py ../shared/datasets/train /tmp/debs/x runs/data_mix

Why: the model scored 4.25 bpd on training crops but 5.02 on the validation scans, while PNG finds the
training photos harder (4.49 bpd) than the validation images (4.27): a domain gap, not capacity. Smaller
scales give more detail per pixel (closer to the 256-768 px validation scans), and the Debian photos add
other cameras and subjects. The JPEG-derived wallpapers are downscaled 3-4x, which removes their JPEG
block artefacts. Output: PNGs (nothing here is committed; the folder is ~50 MB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def _down(im: Image.Image, s: float) -> Image.Image:
    return im.resize((round(im.width / s), round(im.height / s)), Image.LANCZOS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train", type=Path)
    ap.add_argument("debian_root", type=Path, help="where the .deb files were extracted")
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)

    def save(im: Image.Image, name: str) -> None:
        im.convert("RGB").save(a.out / f"{name}.png", compress_level=1)

    for f in sorted(a.train.glob("*.png")):
        im = Image.open(f).convert("RGB")
        save(im, f"train-{f.stem}")
        save(_down(im, 2), f"train-{f.stem}-half")
        save(_down(im, 3), f"train-{f.stem}-third")
    for f in sorted((a.debian_root / "usr/share/backgrounds/mate/nature").glob("*.jpg")):
        im = Image.open(f).convert("RGB")
        save(_down(im, 3), f"mate-{f.stem}-third")
        save(_down(im, 4), f"mate-{f.stem}-quarter")
    flower = Image.open(a.debian_root / "usr/share/libjxl-testdata/jxl/flower/flower.png").convert("RGB")
    for s, tag in ((1, ""), (2, "-half"), (3, "-third")):
        save(flower if s == 1 else _down(flower, s), f"jxl-flower{tag}")
    for f in sorted((a.debian_root / "usr/share/libjxl-testdata/external/wesaturate/500px").glob("*_srgb8.png")):
        save(Image.open(f), f"wesaturate-{f.stem}")
    print(f"{len(list(a.out.glob('*.png')))} images in {a.out}")


if __name__ == "__main__":
    main()
