"""`bitswap pipeline compress|decompress|verify` and `bitswap cat`: the dataset archival commands.

Imports of Ray, pyarrow and torch stay inside the handlers so `bitswap --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the pipeline commands to the `bitswap` parser (called by jobs.cli)."""
    p = subparsers.add_parser("pipeline", help="archive image datasets into Parquet shards on Ray, and back")
    sub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")

    c = sub.add_parser("compress", help="compress every image under SRC into Parquet shards in DST")
    c.add_argument("src", metavar="SRC", help="folder, glob or fsspec URL (file://, s3://, gs://, ...)")
    c.add_argument("dst", metavar="DST", help="archive folder or fsspec URL")
    c.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster)")
    c.add_argument("--shard-size", type=int, default=64, metavar="N", help="images per shard (default 64)")
    c.add_argument(
        "--actors",
        type=int,
        metavar="K",
        help="compression actors (default: one per CPU, sharing any GPUs; 0 = in this process, no Ray)",
    )
    c.add_argument(
        "--cpu-only",
        action="store_true",
        help="leave the GPUs alone: on a 16-core H200 node CPU actors compressed (with verification) in 17%% "
        "less time than actors sharing the GPU",
    )
    c.add_argument(
        "--threads-per-actor",
        type=int,
        metavar="T",
        help="torch threads (and CPUs held) per CPU actor (default 1: one actor per CPU; more threads gain little "
        "and slow badly on nodes shared with other work)",
    )
    c.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="larger images become error rows (default 64M)",
    )
    c.add_argument("--codec", choices=("bitswap", "bbans"), default="bitswap")
    c.add_argument("--particles", type=int, default=1, metavar="K",
                   help="posterior samples per block, 1-16 (above 1: smaller payloads, slower coding)")
    c.add_argument("--effort", type=int, choices=(1, 2), default=2,
                   help="the encoder's per-image fit: 2 (default) everything; 1 fast, 1.4x the encode speed for "
                        "0.32%% more bytes on the validation set")
    c.add_argument("--always-code", action="store_true",
                   help="code every image by pixels, even when its original file is smaller")
    c.add_argument("--no-verify-writes", action="store_true",
                   help="skip decoding each learned payload before it is written (faster; a payload that "
                   "would not decode back is then only found by `verify`)")
    c.add_argument("--model", help="model file, .safetensors (default: the shipped model)")
    c.add_argument("--include", action="append", metavar="GLOB", help="file patterns to take (repeatable)")
    c.add_argument("--exclude", action="append", metavar="GLOB", help="file patterns to skip (repeatable)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_compress)

    d = sub.add_parser("decompress", help="write every archived image back under OUT, verified")
    d.add_argument("dst", metavar="DST")
    d.add_argument("out", metavar="OUT")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_decompress)

    v = sub.add_parser("verify", help="decode and check every archived image without writing")
    v.add_argument("dst", metavar="DST")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=_verify)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    k = subparsers.add_parser("cat", help="extract one image of an archive (to OUT or stdout)")
    k.add_argument("dst", metavar="DST")
    k.add_argument("key", metavar="KEY")
    k.add_argument("out", metavar="OUT", nargs="?", help="output file (default: stdout)")
    k.set_defaults(func=_cat)


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def _compress(args: argparse.Namespace) -> int:
    _quiet()
    from pipeline.actors import DEFAULT_MAX_PIXELS
    from pipeline.driver import compress

    try:
        summary = compress(
            args.src,
            args.dst,
            address=args.address,
            shard_size=args.shard_size,
            actors=args.actors,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
            keep_smaller_originals=not args.always_code,
            verify_writes=not args.no_verify_writes,
            threads_per_actor=args.threads_per_actor,
            use_gpus=not args.cpu_only,
            codec=args.codec,
            particles=args.particles,
            effort=args.effort,
            model=args.model,
            include=args.include,
            exclude=args.exclude,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"bitswap pipeline compress: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return summary.exit_code


def _restore_summary(verb: str, run: Callable[[], Any]) -> int:
    """Print what restore/verify did, or their refusal (exit 2)."""
    try:
        summary = run()
    except (FileNotFoundError, ValueError) as exc:
        print(f"bitswap pipeline {verb}: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return summary.exit_code


def _decompress(args: argparse.Namespace) -> int:
    _quiet()
    from pipeline.restore import restore

    return _restore_summary("decompress", lambda: restore(args.dst, args.out, progress=not args.no_progress))


def _verify(args: argparse.Namespace) -> int:
    _quiet()
    from pipeline.restore import verify

    return _restore_summary("verify", lambda: verify(args.dst, progress=not args.no_progress))


def _cat(args: argparse.Namespace) -> int:
    _quiet()
    from pipeline.restore import NotArchivedError, VerifyError, cat

    try:
        data = cat(args.dst, args.key)
    except KeyError:
        print(f"bitswap cat: no key {args.key!r} in the archive", file=sys.stderr)
        return 1
    except (NotArchivedError, VerifyError, FileNotFoundError, ValueError) as exc:
        print(f"bitswap cat: {args.key}: {exc}", file=sys.stderr)
        return 1
    if args.out and args.out != "-":
        with open(args.out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0
