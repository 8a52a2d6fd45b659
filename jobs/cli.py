"""The `bitswap` command. Each feature module registers its own subcommands (see COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import importlib
import sys

from bitswap_core import __version__

# Modules that define `register(subparsers)`; each owns its subcommands and its imports stay lazy so
# `bitswap --help` is fast and one broken optional dependency does not take down the other commands.
COMMAND_MODULES = (
    "jobs.cmd_codec",  # compress, decompress, compare
    "jobs.cmd_train",  # train
    "jobs.cmd_pipeline",  # pipeline compress|decompress|verify, cat
    "jobs.cmd_job",  # job run|status
    "jobs.cmd_report",  # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitswap",
        description="Learned lossless image compression (Bit-Swap) and dataset archival on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"bitswap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # feature not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
