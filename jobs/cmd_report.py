"""`bitswap report DST [--format md|html|json] [--out FILE]`: what an archive holds, costs and saves."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add `report` to the `bitswap` command."""
    p = subparsers.add_parser(
        "report",
        help="per-run and cumulative report on an archive (a job destination or a pipeline output)",
    )
    p.add_argument("dst", help="job destination or pipeline archive (path or fsspec URL)")
    p.add_argument("--format", choices=("md", "html", "json"), default=None,
                   help="default: from --out's extension, else md")  # fmt: skip
    p.add_argument("--out", default=None, metavar="FILE", help="write here instead of stdout")
    p.add_argument("--storage-price", type=float, default=None, metavar="USD",
                   help="storage price per GB-month (default: the job spec's)")  # fmt: skip
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from jobs.report import compute_report, load_archive, make_figures, render_html, render_markdown

    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower() if args.out else ""
        fmt = {".html": "html", ".htm": "html", ".json": "json"}.get(suffix, "md")
    try:
        archive = load_archive(args.dst, storage_usd_per_gb_month=args.storage_price)
    except FileNotFoundError as exc:
        print(f"bitswap report: {exc}", file=sys.stderr)
        return 2
    rep = compute_report(archive)
    if fmt == "json":
        text = json.dumps({k: v for k, v in rep.items() if k != "bpd_values"}, indent=1, sort_keys=True)
    elif fmt == "html":
        text = render_html(rep, make_figures(rep))
    else:
        links = None
        if args.out:  # Markdown cannot embed images portably: write the plots beside it and link them
            out = Path(args.out)
            links = {}
            for name, png in make_figures(rep).items():
                path = out.with_name(f"{out.stem}-{name}.png")
                path.write_bytes(png)
                links[name] = path.name
        text = render_markdown(rep, links)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"report written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    return 0
