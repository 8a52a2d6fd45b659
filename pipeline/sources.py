"""List and read the input images through fsspec: a folder, a glob or a URL, local or in an object store.

Why keys matter: every image is known by its *key*, the path relative to the source root written with
'/'. Keys are what the archive stores, what shards are planned from (sorted) and what restore writes
back under OUT, so they must be stable across runs and safe to join under a folder (see check_key).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.core import url_to_fs

# Image files taken when no --include is given (matched case-insensitively on the file name).
DEFAULT_INCLUDE: tuple[str, ...] = (
    "*.png", "*.bmp", "*.dib", "*.tif", "*.tiff", "*.ppm", "*.pgm", "*.pbm", "*.pnm",
    "*.webp", "*.jpg", "*.jpeg", "*.jpe", "*.jfif", "*.gif",
)  # fmt: skip
# Hidden files and folders (".git", ".DS_Store", editor temp files) are never inputs by default.
DEFAULT_EXCLUDE: tuple[str, ...] = (".*", ".*/*", "*/.*")

# Protocols whose files live in one process's memory: Ray workers cannot see them.
PROCESS_LOCAL_PROTOCOLS = frozenset({"memory"})

_GLOB_CHARS = re.compile(r"[*?\[]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeKeyError(ValueError):
    """A key that could escape the output folder or is not a plain relative path."""


def check_key(key: str) -> str:
    """Return key if it is a safe relative '/'-path, else raise UnsafeKeyError.

    Why so strict: restore joins keys under OUT, and an archive may come from anyone. Absolute paths,
    '..', '.', empty parts, drive letters, backslashes (a separator on Windows) and NUL are refused.
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError("empty key")
    if "\0" in key:
        raise UnsafeKeyError(f"key contains NUL: {key!r}")
    if "\\" in key:
        raise UnsafeKeyError(f"key contains a backslash: {key!r}")
    if key.startswith("/"):
        raise UnsafeKeyError(f"absolute key: {key!r}")
    if _DRIVE.match(key):
        raise UnsafeKeyError(f"key starts with a drive letter: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeKeyError(f"key has an empty, '.' or '..' component: {key!r}")
    return key


@dataclass(frozen=True)
class SourceFile:
    """One input file: its key, where to read it, and what the store says about it (for resume)."""

    key: str
    path: str  # path inside the filesystem, as fsspec names it
    size: int | None = None
    etag: str | None = None
    mtime: float | None = None

    def identity(self) -> list[Any]:
        """What must not change for an already written shard to stay valid."""
        return [self.key, self.size, self.etag, self.mtime]


@dataclass(frozen=True)
class Source:
    """A listed source: how to reopen its filesystem elsewhere (actors) and its files sorted by key."""

    url: str
    protocol: str
    root: str
    files: list[SourceFile]


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec filesystem and stripped path for a URL or local path.

    Credentials are never passed here by the pipeline: they come from the environment (AWS_* and the
    like) or fsspec's configuration, so they never travel into tasks, files or logs.
    """
    return url_to_fs(url, **dict(storage_options or {}))


def protocol_of(fs: fsspec.AbstractFileSystem) -> str:
    """The filesystem's main protocol name ("file", "s3", "memory", ...)."""
    proto = fs.protocol
    return proto if isinstance(proto, str) else proto[0]


def is_process_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for filesystems (memory://) that other processes, i.e. Ray workers, cannot see."""
    protos = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protos & PROCESS_LOCAL_PROTOCOLS)


def redact_url(url: str) -> str:
    """URL without user info, query or fragment, so a manifest or log line never carries a secret."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # plain path (or a Windows drive letter)
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _matches(key: str, patterns: Iterable[str]) -> bool:
    """Case-insensitive match; a pattern without '/' is tried on the file name, one with '/' on the key."""
    low = key.lower()
    name = low.rsplit("/", 1)[-1]
    for pat in patterns:
        p = pat.lower()
        if fnmatch.fnmatchcase(low if "/" in p else name, p):
            return True
    return False


def _mtime(info: Mapping[str, Any]) -> float | None:
    for field in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(field)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _etag(info: Mapping[str, Any]) -> str | None:
    for field in ("ETag", "etag", "md5Hash", "content_md5"):
        value = info.get(field)
        if value:
            return str(value).strip('"')
    return None


def _glob_root(path: str) -> str:
    """The folder part of a glob pattern before its first wildcard component."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if _GLOB_CHARS.search(part):
            return "/".join(parts[:i])
    return posixpath.dirname(path)


def list_sources(
    src: str,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Source:
    """List SRC (folder, glob or single file; local path or fsspec URL) into files sorted by key.

    Keys are relative to the folder (or to the part of a glob before its first wildcard), so the same
    data listed from another mount or bucket gets the same keys.
    """
    fs, path = open_fs(src, storage_options)
    path = path.rstrip("/") or path
    if _GLOB_CHARS.search(path):
        root = _glob_root(path)
        entries = fs.glob(path, detail=True)
        if not isinstance(entries, dict):  # older fsspec returns names only
            entries = {p: fs.info(p) for p in entries}
    elif fs.isdir(path):
        root = path
        entries = fs.find(path, detail=True, withdirs=False)
    elif fs.isfile(path):
        root = posixpath.dirname(path)
        entries = {path: fs.info(path)}
    else:
        raise FileNotFoundError(f"source not found: {redact_url(src)}")

    include = tuple(include) if include else DEFAULT_INCLUDE
    exclude = tuple(exclude) if exclude is not None else DEFAULT_EXCLUDE
    prefix = root.rstrip("/") + "/" if root else ""
    files: list[SourceFile] = []
    for p, info in entries.items():
        if info.get("type", "file") != "file":
            continue
        name = fs._strip_protocol(p)
        if prefix and not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if not key or not _matches(key, include) or _matches(key, exclude):
            continue
        size = info.get("size")
        files.append(SourceFile(key, name, int(size) if size is not None else None, _etag(info), _mtime(info)))
    files.sort(key=lambda f: f.key)
    return Source(url=src, protocol=protocol_of(fs), root=root, files=files)


def read_files(fs: fsspec.AbstractFileSystem, paths: Sequence[str]) -> dict[str, bytes | BaseException]:
    """Read many files at once (concurrent requests on object stores); a failure is returned, not raised."""
    if not paths:
        return {}
    try:
        out = fs.cat(list(paths), on_error="return")
    except Exception:  # some filesystems fail the batch call itself: fall back to one by one
        out = {}
        for p in paths:
            try:
                out[p] = fs.cat_file(p)
            except Exception as exc:  # noqa: BLE001 - recorded per file
                out[p] = exc
    # fs.cat keys may be normalised differently from the paths we asked for
    result: dict[str, bytes | BaseException] = {}
    for p in paths:
        value = out.get(p)
        if value is None:
            value = out.get(fs._strip_protocol(p), FileNotFoundError(p))
        result[p] = value
    return result
