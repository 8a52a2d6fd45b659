"""Get images back out of an archive: decompress all (restore), check all (verify), or one (cat).

Why every image is checked before it is written: a restore that silently writes wrong pixels is worse
than one that fails. Coded images must decode to the pixel digest recorded at compress time (and the
file written must decode to it again); stored files must match their SHA-256 byte for byte.
Why keys are checked: an archive may come from anyone, and a key like '../../.bashrc' must never write
outside OUT (see sources.check_key; on local disks symlinks inside OUT are not followed out of it).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pipeline import shards
from pipeline.actors import encode_like, pixel_digest_hex
from pipeline.shards import STATUS_ERROR, STATUS_OK, STATUS_STORED
from pipeline.sources import UnsafeKeyError, check_key, open_fs, protocol_of


class VerifyError(Exception):
    """An archived image that does not decode to what was recorded."""


class NotArchivedError(Exception):
    """The key is in the archive as a failed row (status 'error'): there is nothing to restore."""


@dataclass
class RestoreSummary:
    """Counts and problems of a decompress or verify run."""

    images: int = 0
    restored: int = 0
    bytes_out: int = 0
    not_archived: list[tuple[str, str]] = field(default_factory=list)  # error rows from compress time
    failures: list[tuple[str, str]] = field(default_factory=list)  # rows that did not verify or write
    seconds: float = 0.0
    verify_only: bool = False

    @property
    def exit_code(self) -> int:
        """Nonzero when an archived image failed; rows that failed at compress time are only listed."""
        return 1 if self.failures else 0

    def format(self, max_listed: int = 20) -> str:
        verb = "verified" if self.verify_only else "restored"
        lines = [
            f"images     {self.images} ({self.restored} {verb}, {len(self.failures)} failed,"
            f" {len(self.not_archived)} were not archived)",
            f"bytes      {self.bytes_out / 1e6:.3f} MB of files {'checked' if self.verify_only else 'written'}",
            f"time       {self.seconds:.2f} s",
        ]
        for title, items in (
            ("FAILED", self.failures),
            ("not archived (failed at compress time)", self.not_archived),
        ):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  {k}: {r}" for k, r in items[:max_listed]]
                if len(items) > max_listed:
                    lines.append(f"  ... and {len(items) - max_listed} more")
        return "\n".join(lines)


def decode_row(row: Mapping[str, Any], model: Any = None) -> bytes:
    """The verified file bytes of one archived row (the original file, or its pixels in its format)."""
    import bitswap_core

    status = row["status"]
    if status == STATUS_ERROR:
        raise NotArchivedError(row.get("error") or "failed at compress time")
    payload = row["payload"]
    if payload is None:
        raise VerifyError("row has no payload")
    if status == STATUS_STORED:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != row["file_sha256"]:
            raise VerifyError(f"stored bytes have sha256 {digest[:16]}..., expected {row['file_sha256'][:16]}...")
        return bytes(payload)
    if status != STATUS_OK:
        raise VerifyError(f"unknown status {status!r}")
    image = bitswap_core.decompress(bytes(payload), model)
    got = pixel_digest_hex(image)
    if got != row["pixel_digest"]:
        raise VerifyError(f"decoded pixels have digest {got[:16]}..., expected {row['pixel_digest'][:16]}...")
    data = encode_like(image, row["format"] or "PNG")
    again = Image.open(io.BytesIO(data))
    if pixel_digest_hex(again) != got:
        raise VerifyError(f"writing the pixels as {row['format']} did not keep them exact")
    return data


class _Writer:
    """Writes files under OUT, never outside it."""

    def __init__(self, out: str, storage_options: Mapping[str, Any] | None) -> None:
        self.fs, root = open_fs(out, storage_options)
        self.local = protocol_of(self.fs) in ("file", "local")
        self.root = os.path.realpath(root) if self.local else root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def write(self, key: str, data: bytes) -> None:
        check_key(key)
        if not self.local:
            self.fs.pipe_file(f"{self.root}/{key}", data)
            return
        target = os.path.join(self.root, *key.split("/"))
        parent = os.path.dirname(target)
        # realpath follows any symlink already inside OUT: the resolved folder must still be inside OUT.
        real_parent = os.path.realpath(parent)
        if real_parent != self.root and not real_parent.startswith(self.root + os.sep):
            raise UnsafeKeyError(f"key {key!r} resolves outside the output folder (symlink in the way)")
        os.makedirs(real_parent, exist_ok=True)
        final = os.path.join(real_parent, os.path.basename(target))
        if os.path.islink(final) or os.path.isdir(final):
            raise UnsafeKeyError(f"{key!r} exists in the output folder as a link or folder")
        tmp = os.path.join(real_parent, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, final)


def restore(
    dst: str,
    out: str | None,
    *,
    verify_only: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    model: Any = None,
) -> RestoreSummary:
    """Decode every image of the archive dst; write it under out unless verify_only.

    The job goes on past a bad image: every failure is listed in the summary and sets the exit code.
    """
    t0 = time.perf_counter()
    fs, root = open_fs(dst, storage_options)
    root = root.rstrip("/")
    manifest = shards.read_manifest(fs, root)
    writer = None if verify_only or out is None else _Writer(out, storage_options)
    summary = RestoreSummary(verify_only=writer is None)
    total = sum(int(s["rows"]) for s in manifest["shards"])
    bar = _bar(progress, total, "verify" if writer is None else "decompress")
    try:
        for row in shards.iter_rows(fs, root, manifest):
            summary.images += 1
            key = row["key"]
            try:
                check_key(key)
                data = decode_row(row, model)
                if writer is not None:
                    writer.write(key, data)
                summary.restored += 1
                summary.bytes_out += len(data)
            except NotArchivedError as exc:
                summary.not_archived.append((key, str(exc)))
            except Exception as exc:  # noqa: BLE001 - listed, and the run goes on
                summary.failures.append((key, f"{type(exc).__name__}: {exc}"))
            bar.update(1)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def verify(dst: str, **kwargs: Any) -> RestoreSummary:
    """Decode and check every image without writing anything."""
    return restore(dst, None, verify_only=True, **kwargs)


def cat(dst: str, key: str, *, storage_options: Mapping[str, Any] | None = None, model: Any = None) -> bytes:
    """The verified file bytes of one key, reading one row group of one shard."""
    fs, root = open_fs(dst, storage_options)
    row = shards.read_row(fs, root.rstrip("/"), key)
    return decode_row(row, model)


def _bar(enabled: bool, total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, disable=not enabled, dynamic_ncols=True)
