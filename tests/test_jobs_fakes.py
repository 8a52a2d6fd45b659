"""Helpers for the job and report tests (no tests here): image folders and a stand-in pipeline driver.

The stand-in writes shards in the pipeline's real format (pipeline.shards: schema, atomic writes, shard
names) with a cheap stand-in payload (zlib of the pixels), so job tests run in a second and do not
depend on the learned codec's speed; test_jobs_pipeline.py runs the real driver.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import sys
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TESTS_DIR = str(Path(__file__).resolve().parent)


def png_bytes(seed: int, size: tuple[int, int] = (24, 16), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    # smooth-ish content so the codecs have something to find
    base = np.add.outer(np.arange(h), np.arange(w))[..., None] * (seed % 7 + 1)
    arr = (base + rng.integers(0, 24, (h, w, 3))).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(seed))).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_images(root: Path, names: Iterable[str], *, seed0: int = 0) -> list[str]:
    """Create images under root (PNG unless the name says .jpg; 'bad' in the name: a corrupt file)."""
    out = []
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if "bad" in name:
            data = b"\x89PNG\r\n\x1a\n this is not an image"
        elif name.endswith(".jpg"):
            data = jpeg_bytes(seed0 + i)
        else:
            data = png_bytes(seed0 + i)
        p.write_bytes(data)
        out.append(name)
    return out


def _row(key: str, data: bytes) -> dict[str, Any]:
    from pipeline.shards import COLUMNS

    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(key=key, original_bytes=len(data), file_sha256=hashlib.sha256(data).hexdigest())
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:  # noqa: BLE001
        row.update(status="error", error=f"unreadable image: {exc}", compressed_bytes=0)
        return row
    dims = len(im.getbands()) * im.width * im.height
    row.update(format=im.format, width=im.width, height=im.height, mode=im.mode, raw_bytes=dims)
    if im.format == "JPEG":
        row.update(
            status="stored",
            codec="stored",
            payload=data,
            compressed_bytes=len(data),
            bpd=len(data) * 8 / dims,
            encode_seconds=0.0,
        )
    else:
        payload = zlib.compress(im.tobytes(), 9)
        row.update(
            status="ok",
            codec="fake:zlib",
            model_id="fake",
            payload=payload,
            compressed_bytes=len(payload),
            bpd=len(payload) * 8 / dims,
            encode_seconds=0.001,
            pixel_digest=hashlib.sha256(im.tobytes()).hexdigest(),
        )
    return row


class FakeDriver:
    """A job driver that writes real-format shards; can die (SIGKILL) or raise after some shards."""

    def __init__(
        self,
        *,
        kill_after_shards: int | None = None,
        raise_after_shards: int | None = None,
        sleep_per_shard: float = 0.0,
    ):
        self.kill_after_shards = kill_after_shards
        self.raise_after_shards = raise_after_shards
        self.sleep_per_shard = sleep_per_shard
        self.keys: list[str] = []  # every key this driver compressed, over all calls
        self.calls = 0

    def __call__(self, src_url: str, files: list[Any], out_url: str, spec: Any) -> Any:
        """Like pipeline.driver.compress(src, dst, files=...): shards whose name exists are skipped."""
        from jobs.run import DriverResult
        from pipeline import shards
        from pipeline.sources import open_fs

        self.calls += 1
        fs, root = open_fs(out_url)
        src_fs, _ = open_fs(src_url)
        files = sorted(files, key=lambda f: f.key)
        existing = shards.list_shards(fs, root)
        entries, written = [], 0
        for idx in range(0, len(files), spec.shard_size):
            chunk = files[idx : idx + spec.shard_size]
            fp = shards.fingerprint(chunk, {"codec": "fake"})
            name = shards.shard_name(idx // spec.shard_size, fp)
            entries.append({"file": name, "first_key": chunk[0].key, "last_key": chunk[-1].key})
            if name in existing:
                continue
            if self.raise_after_shards is not None and written >= self.raise_after_shards:
                raise RuntimeError("simulated pipeline failure")
            rows = [_row(f.key, src_fs.cat_file(f.path)) for f in chunk]
            data = shards.encode_shard(rows, {"format": shards.ARCHIVE_FORMAT, "fingerprint": fp})
            shards.write_atomic(fs, root, name, data)
            self.keys += [f.key for f in chunk]
            time.sleep(self.sleep_per_shard)
            written += 1
            if self.kill_after_shards is not None and written >= self.kill_after_shards:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        shards.write_manifest(fs, root, {"format": shards.ARCHIVE_FORMAT, "shards": entries})
        return DriverResult(cpus=2.0, actors=2)


def child_run_script(spec_path: str, **driver_kwargs: Any) -> list[str]:
    """argv for a child process that runs the job (SIGTERM handled as `bitswap job run` does)."""
    code = (
        f"import sys; sys.path.insert(0, {TESTS_DIR!r})\n"
        "from test_jobs_fakes import FakeDriver\n"
        "from jobs.cmd_job import _sigterm_to_exit\n"
        "from jobs.spec import load_spec\n"
        "from jobs.run import run_job\n"
        "_sigterm_to_exit()\n"
        f"run_job(load_spec({spec_path!r}), driver=FakeDriver(**{driver_kwargs!r}), sample=False)\n"
    )
    return [sys.executable, "-c", code]
