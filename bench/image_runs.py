"""Per-image benchmark runs that alternate settings image by image, saved as JSON after every image and put
side by side across processes (one core each) with --merge: what bench/particles.py and
bench/block_side.py share."""

from __future__ import annotations

import json
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
