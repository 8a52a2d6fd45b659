"""`bitswap compress`, `bitswap decompress` and `bitswap compare`: thin wrappers over the API and compare.

Heavy imports (the API pulls in torch) happen inside the handlers so `bitswap --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# Output formats `decompress` may write: all lossless. Lossy extensions (.jpg, ...) are refused.
_LOSSLESS_OUTPUT = {
    ".png": ("PNG", {}),
    ".tif": ("TIFF", {"compression": "tiff_adobe_deflate"}),
    ".tiff": ("TIFF", {"compression": "tiff_adobe_deflate"}),
    ".bmp": ("BMP", {}),
    ".ppm": ("PPM", {}),
    ".pgm": ("PPM", {}),
    ".pbm": ("PPM", {}),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the codec subcommands to the `bitswap` parser."""
    from jobs.compare import ALL_CODECS, CLASSICAL

    p = subparsers.add_parser("compress", help="compress one image into a Bit-Swap container")
    p.add_argument("input", help="image file Pillow can read")
    p.add_argument("output", help="container file to write")
    p.add_argument("--codec", choices=("bitswap", "bbans"), default="bitswap")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--learned-only", action="store_true",
                   help="use the learned codec even where a classical lossless codec would be smaller")
    p.add_argument("--adapt-blocks", type=int, default=None, metavar="N",
                   help="blocks the encoder samples to fit the per-image adaptation, of the coding side "
                        "up to 64x64 (default: by the image's size, adapt.sample_size; 0: the model as is)")
    p.add_argument("--effort", type=int, choices=(1, 2), default=2,
                   help="how hard the encoder fits the per-image adaptation: 2 (default) everything; 1 half "
                        "the sample and no latent shift, 1.4x as fast for 0.32%% more bytes on the validation set")
    p.add_argument("--first-block", choices=("coarse", "bits-back"), default=None,
                   help="the first block's latents: on a coarse grid (bitswap's default) or by bits-back "
                        "(bbans's default, the paper's baseline)")
    p.add_argument("--particles", type=int, default=1, metavar="K",
                   help="posterior samples per block (1-16): above 1, each block is coded at the "
                        "importance-weighted bound (0.85%% smaller at 8 on the validation set, 3x slower "
                        "to encode, 5x to decode; default: 1)")
    p.add_argument("--block-side", type=int, choices=(32, 64, 128), default=None,
                   help="side of the blocks the image is cut into (default: by the image's size, the largest "
                        "that still gives 16 blocks; larger blocks code smaller and faster)")
    p.add_argument("--phase-split", type=int, choices=(1, 2), default=None,
                   help="how deep the first pixel phase is split into sub-phases (default: 2 for images of "
                        "256x256 or more, where its larger header pays, else 1)")
    p.set_defaults(func=_compress)

    p = subparsers.add_parser("decompress", help="decompress a container back to a lossless image file")
    p.add_argument("input", help="container file")
    p.add_argument("output", help=f"image to write ({', '.join(sorted(_LOSSLESS_OUTPUT))})")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.set_defaults(func=_decompress)

    p = subparsers.add_parser(
        "compare", help="size, bits per dimension and speed of classical and learned lossless codecs"
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--codecs",
        default=",".join(ALL_CODECS),
        help=f"comma-separated subset of {','.join(ALL_CODECS)} (default: all; classical only: "
        f"{','.join(CLASSICAL)})",
    )
    p.add_argument("--model", default=None, help="model for the learned codecs (default: shipped model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_compare)


def _fail(message: str) -> int:
    print(f"bitswap: error: {message}", file=sys.stderr)
    return 1


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder so a failure never leaves a partial output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return image


def _compress(args: argparse.Namespace) -> int:
    import bitswap_core
    from bitswap_core.errors import BitswapError

    try:
        image = _open_image(args.input)
        extra = {"effort": args.effort}
        if args.adapt_blocks is not None:
            extra["adapt_blocks"] = args.adapt_blocks
        if args.first_block is not None:
            extra["coarse_first"] = args.first_block == "coarse"
        if args.block_side is not None:
            extra["block_side"] = args.block_side
        if args.phase_split is not None:
            extra["phase_split"] = args.phase_split
        data = bitswap_core.compress(image, args.model, codec=args.codec, smallest=not args.learned_only,
                                     particles=args.particles, **extra)
    except (ValueError, BitswapError) as exc:
        return _fail(str(exc))
    except ImportError as exc:
        return _fail(f"the learned codec is not available in this build ({exc})")
    _write_atomic(Path(args.output), lambda f: f.write(data))
    print(f"{args.input} -> {args.output}: {len(data)} bytes, {8 * len(data) / _dims(image):.3f} bpd")
    return 0


def _decompress(args: argparse.Namespace) -> int:
    import bitswap_core
    from bitswap_core.errors import BitswapError

    out = Path(args.output)
    if out.suffix.lower() not in _LOSSLESS_OUTPUT:
        return _fail(f"output {out} must end in one of {', '.join(sorted(_LOSSLESS_OUTPUT))} (lossless)")
    fmt, params = _LOSSLESS_OUTPUT[out.suffix.lower()]
    try:
        data = Path(args.input).read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {args.input}: {exc}")
    try:
        image = bitswap_core.decompress(data, args.model)
    except BitswapError as exc:
        return _fail(f"{args.input}: {type(exc).__name__}: {exc}")
    except ImportError as exc:
        return _fail(f"the learned codec is not available in this build ({exc})")
    try:
        _write_atomic(out, lambda f: image.save(f, fmt, **params))
    except (OSError, ValueError) as exc:
        return _fail(f"cannot store mode {image.mode} as {fmt} ({exc}); try a .tiff output")
    print(f"{args.input} -> {args.output}: {image.mode} {image.width}x{image.height}")
    return 0


def _dims(image) -> int:
    return image.width * image.height * len(image.getbands())


def _compare(args: argparse.Namespace) -> int:
    from jobs.compare import ALL_CODECS, compare, format_table, to_json, totals

    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = [c for c in codecs if c not in ALL_CODECS]
    if unknown or not codecs:
        return _fail(f"unknown codec(s) {unknown}; choose from {','.join(ALL_CODECS)}")
    try:
        images = {Path(p).name: _open_image(p) for p in args.images}
    except ValueError as exc:
        return _fail(str(exc))
    if not args.json:
        print(f"Measuring {len(codecs)} codecs on {len(images)} images (every result decoded and verified)")
    rows = compare(images, codecs, model=args.model)
    summary = totals(rows) if len(images) > 1 else []
    if args.json:
        print(to_json(rows, summary))
    else:
        print(format_table(rows))
        if summary:
            print()
            print(format_table(summary))
        print("bpd = bits / (width * height * channels); enc/dec s = wall-clock seconds on this machine")
    return 1 if any(r.status.startswith("FAILED") for r in rows) else 0
