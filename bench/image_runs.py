"""Per-image benchmark runs that alternate settings image by image, saved as JSON after every image and put
side by side across processes (one core each) with --merge: what bench/particles.py and
bench/block_side.py share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def merged(paths: list[Path]) -> list[dict]:
    """The per-image results of several runs' JSON files, each image's settings' runs joined, by image name."""
    runs: dict[str, dict] = {}
    for f in paths:
        for r in json.loads(f.read_text()):
            runs.setdefault(r["image"], {**r, "runs": {}})["runs"].update(r["runs"])
    return sorted(runs.values(), key=lambda r: r["image"])


def measure_all(images: list[Path], measure: Callable[[Path], dict], out: Path | None) -> list[dict]:
    """measure(image) for every image, the results written to out (if given) after each one."""
    results = []
    for path in images:
        results.append(measure(path))
        if out:
            out.write_text(json.dumps(results, indent=1))
    return results


def timed_round_trip(img, what: str, **settings) -> tuple[bytes, float, float]:
    """(payload, encode seconds, decode seconds) of img through the public API's learned path with these
    settings, decoded and checked pixel-exact (SystemExit naming the image and setting otherwise)."""
    import bitswap_core

    t = time.perf_counter()
    data = bitswap_core.compress(img, smallest=False, **settings)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    back = bitswap_core.decompress(data)
    dec = time.perf_counter() - t
    if back.tobytes() != img.tobytes():
        raise SystemExit(f"{what} did not decode exactly")
    return data, enc, dec


def setting_row(results: list[dict], key: str, base: str) -> tuple[float, str, int, float, float]:
    """One setting's totals over every image: (bpd, its change against setting `base` as text, images
    smaller than with `base`, encode KB/s, decode KB/s of raw pixels); '-' and 0 without every base run."""
    dims = sum(r["dims"] for r in results)
    runs = [r["runs"][key] for r in results]
    size = sum(x["bytes"] for x in runs)
    has_base = all(base in r["runs"] for r in results)
    base_size = sum(r["runs"][base]["bytes"] for r in results) if has_base else None
    smaller = sum(x["bytes"] < r["runs"][base]["bytes"] for x, r in zip(runs, results)) if has_base else 0
    rel = f"{100 * (size / base_size - 1):+.2f}%" if has_base else "-"
    enc = dims / 1e3 / sum(x["encode_s"] for x in runs)
    dec = dims / 1e3 / sum(x["decode_s"] for x in runs)
    return 8 * size / dims, rel, smaller, enc, dec


def add_run_arguments(ap) -> None:
    """The images, --out and --merge arguments of such a benchmark."""
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="write the per-image results as JSON")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="print the table of these JSON runs")
