"""The archive's on-disk form: Parquet shards (one row per image), the manifest, and reading one image.

Why Parquet: any reader (pyarrow, pandas, DuckDB, Spark) opens it, columns give stats without touching
payloads, and row groups let a reader fetch one image by range requests. Why these write rules:
- a shard is built completely, written under `_tmp/` and then moved to its final name, so a final name
  always holds a complete shard (object stores make the move's copy visible at once, local disks rename);
- the final name carries the shard's fingerprint (its keys, their sizes/ETags/mtimes and the coding
  settings), so resuming is one listing: a shard whose name is present is done;
- the manifest is written last, so its presence means every planned shard is there.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import posixpath
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources import SourceFile

ARCHIVE_FORMAT = "bitswap-archive/1"
# Leading "_": Parquet readers (pyarrow datasets, Spark, DuckDB globs on *.parquet) skip it.
MANIFEST_NAME = "_manifest.json"
TMP_DIR = "_tmp"
SHARD_META_KEY = b"bitswap.shard"
# Rows are grouped until their payloads reach this size, so one image is read without the whole shard
# while tiny images do not each pay a row group's footer entry (~2 KB).
DEFAULT_ROW_GROUP_BYTES = 256 << 10

STATUS_OK = "ok"
STATUS_STORED = "stored"
STATUS_ERROR = "error"
CODEC_STORED = "stored"

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("payload", pa.large_binary()),
        pa.field("codec", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("mode", pa.string()),
        pa.field("raw_bytes", pa.int64()),
        pa.field("original_bytes", pa.int64()),
        pa.field("compressed_bytes", pa.int64()),
        pa.field("bpd", pa.float64()),
        pa.field("pixel_digest", pa.string()),
        pa.field("file_sha256", pa.string()),
        pa.field("encode_seconds", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
# Columns without the payload: what stats and listings read.
META_COLUMNS = tuple(c for c in COLUMNS if c != "payload")

_SHARD_RE = re.compile(r"^shard-(\d{5,})-([0-9a-f]{16})\.parquet$")


def shard_name(index: int, fingerprint: str) -> str:
    """Final file name of shard `index`; the fingerprint in it makes resume a single listing."""
    return f"shard-{index:05d}-{fingerprint[:16]}.parquet"


def parse_shard_name(name: str) -> tuple[int, str] | None:
    """(index, fingerprint prefix) for a shard file name, None for anything else."""
    m = _SHARD_RE.match(posixpath.basename(name))
    return (int(m.group(1)), m.group(2)) if m else None


def fingerprint(files: Sequence[SourceFile], settings: Mapping[str, Any]) -> str:
    """Hash of what a shard's content depends on: its files (key, size, ETag, mtime) and the settings."""
    doc = {"format": ARCHIVE_FORMAT, "settings": dict(settings), "files": [f.identity() for f in files]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its index, files (sorted by key) and fingerprint."""

    index: int
    files: tuple[SourceFile, ...]
    fingerprint: str

    @property
    def name(self) -> str:
        return shard_name(self.index, self.fingerprint)

    @property
    def first_key(self) -> str:
        return self.files[0].key

    @property
    def last_key(self) -> str:
        return self.files[-1].key


@dataclass
class ShardStats:
    """Per-shard counts, stored in the shard footer and the manifest (so resume needs no table read)."""

    images: int = 0
    ok: int = 0
    stored: int = 0
    error: int = 0
    original_bytes: int = 0  # input file bytes of the archived (ok + stored) rows: the ratio numerator
    failed_bytes: int = 0  # input file bytes of error rows (not archived)
    compressed_bytes: int = 0  # payload bytes of ok + stored rows
    raw_bytes: int = 0  # decoded pixel bytes of ok rows
    coded_dims: int = 0  # subpixels of ok rows (bpd denominator)
    coded_bytes: int = 0  # payload bytes of ok rows (bpd numerator / 8)
    encode_seconds: float = 0.0
    failures: list[list[str]] = field(default_factory=list)  # [key, reason] of error rows

    def add_row(self, row: Mapping[str, Any], dims: int = 0) -> None:
        self.images += 1
        status = row["status"]
        size = int(row.get("original_bytes") or 0)
        self.encode_seconds += float(row.get("encode_seconds") or 0.0)
        if status == STATUS_ERROR:
            self.failed_bytes += size
        else:
            self.original_bytes += size
        if status == STATUS_OK:
            self.ok += 1
            self.compressed_bytes += int(row["compressed_bytes"])
            self.coded_bytes += int(row["compressed_bytes"])
            self.raw_bytes += int(row.get("raw_bytes") or 0)
            self.coded_dims += dims
        elif status == STATUS_STORED:
            self.stored += 1
            self.compressed_bytes += int(row["compressed_bytes"])
        else:
            self.error += 1
            self.failures.append([row["key"], str(row.get("error") or "")])

    def merge(self, other: ShardStats) -> None:
        for name in self.__dataclass_fields__:
            if name != "failures":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardStats:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def encode_shard(
    rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES
) -> bytes:
    """Parquet bytes for rows sorted by key, with `meta` (JSON) in the footer.

    Payloads are stored uncompressed (they are entropy-coded already); other columns use zstd. Only the
    small columns get statistics, the key's min/max per row group is what finds one image quickly.
    """
    schema = SCHEMA.with_metadata({SHARD_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    keys = [r["key"] for r in rows]
    if keys != sorted(keys):
        raise ValueError("shard rows must be sorted by key")
    compression = {c: ("none" if c == "payload" else "zstd") for c in COLUMNS}
    buf = io.BytesIO()
    with pq.ParquetWriter(
        buf,
        schema,
        compression=compression,
        use_dictionary=["codec", "model_id", "format", "mode", "status"],
        write_statistics=["key", "status", "codec", "width", "height", "original_bytes", "compressed_bytes"],
    ) as writer:
        group: list[Mapping[str, Any]] = []
        size = 0
        for row in rows:
            group.append(row)
            size += len(row.get("payload") or b"")
            if size >= row_group_bytes:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group, size = [], 0
        if group or not rows:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))
    return buf.getvalue()


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if root else name


def write_atomic(fs: fsspec.AbstractFileSystem, root: str, name: str, data: bytes) -> str:
    """Write bytes to root/name so that the name appears only once the content is complete.

    Written under root/_tmp/ first, then moved: a rename on local disks; on object stores a server-side
    copy, which becomes visible whole. A crash leaves at most a stray file under _tmp/.
    """
    final = _join(root, name)
    tmp = _join(root, f"{TMP_DIR}/{name}.{uuid.uuid4().hex}.tmp")
    fs.makedirs(_join(root, TMP_DIR), exist_ok=True)
    fs.pipe_file(tmp, data)
    try:
        fs.mv(tmp, final)
    except Exception:
        try:
            fs.rm_file(tmp)
        finally:
            raise
    return final


def list_shards(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, int]:
    """{file name: size} of the finished shard files in root (temporaries live under _tmp/)."""
    fs.invalidate_cache(root)
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for e in entries:
        name = posixpath.basename(e["name"].rstrip("/"))
        if e.get("type") == "file" and parse_shard_name(name):
            out[name] = int(e.get("size") or 0)
    return dict(sorted(out.items()))


def read_shard_meta(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    """The footer JSON of a shard (reads only the footer)."""
    with fs.open(path, "rb", cache_type="none") as f:
        md = pq.ParquetFile(f).schema_arrow.metadata or {}
    raw = md.get(SHARD_META_KEY)
    if raw is None:
        raise ValueError(f"{posixpath.basename(path)} is not a Bit-Swap shard (no footer metadata)")
    return json.loads(raw)


def write_manifest(fs: fsspec.AbstractFileSystem, root: str, manifest: Mapping[str, Any]) -> str:
    """Write _manifest.json atomically; it is written last and so marks the archive complete."""
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    return write_atomic(fs, root, MANIFEST_NAME, data)


def read_manifest(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, Any]:
    """The archive manifest; FileNotFoundError when the archive is not complete."""
    path = _join(root, MANIFEST_NAME)
    try:
        with fs.open(path, "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in the archive: it is incomplete (rerun the compress command to finish it)"
        ) from None
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise ValueError(f"unknown archive format {manifest.get('format')!r} (expected {ARCHIVE_FORMAT})")
    return manifest


def remove_manifest(fs: fsspec.AbstractFileSystem, root: str) -> None:
    """Drop the manifest before shards change, so no reader trusts a manifest that no longer holds."""
    path = _join(root, MANIFEST_NAME)
    if fs.exists(path):
        fs.rm_file(path)


def _open_shard(fs: fsspec.AbstractFileSystem, root: str, name: str):
    """Open a shard for ranged reads (a file object to use in a with block)."""
    # cache_type="none": pyarrow issues its own ranged reads; fsspec's read-ahead would fetch megabytes.
    return fs.open(_join(root, name), "rb", cache_type="none")


def find_shard(manifest: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The manifest entry of the shard whose key range holds key (shards cover sorted, disjoint ranges)."""
    shards = manifest["shards"]
    firsts = [s["first_key"] for s in shards]
    i = bisect.bisect_right(firsts, key) - 1
    if i >= 0 and shards[i]["first_key"] <= key <= shards[i]["last_key"]:
        return shards[i]
    return None


def read_row(
    fs: fsspec.AbstractFileSystem, root: str, key: str, manifest: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One image's row, reading the manifest, one shard's footer and one row group only.

    KeyError when the archive does not hold the key.
    """
    manifest = manifest if manifest is not None else read_manifest(fs, root)
    entry = find_shard(manifest, key)
    if entry is None:
        raise KeyError(key)
    with _open_shard(fs, root, entry["file"]) as f:
        pf = pq.ParquetFile(f)
        key_col = pf.schema_arrow.get_field_index("key")
        md = pf.metadata
        for i in range(md.num_row_groups):
            stats = md.row_group(i).column(key_col).statistics
            if stats is not None and stats.has_min_max and not (stats.min <= key <= stats.max):
                continue
            table = pf.read_row_group(i)
            for row in table.to_pylist():
                if row["key"] == key:
                    return row
    raise KeyError(key)


def iter_rows(
    fs: fsspec.AbstractFileSystem,
    root: str,
    manifest: Mapping[str, Any],
    columns: Sequence[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every row of the archive in key order, one row group in memory at a time."""
    for entry in manifest["shards"]:
        with _open_shard(fs, root, entry["file"]) as f:
            pf = pq.ParquetFile(f)
            for i in range(pf.metadata.num_row_groups):
                yield from pf.read_row_group(i, columns=list(columns) if columns else None).to_pylist()
