"""Archival job specs: a TOML file that says what to archive, where, with which model, and at what prices.

The spec is parsed once, validated field by field (an error names the field, so a cron mail is enough to
fix it), normalised with its defaults and hashed: every run records the hash, so a report can tell which
runs were made under which settings.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project runs on 3.11+; tomli is the same parser for 3.10
    import tomli as tomllib

# Classical codecs the job can sample for the report's comparison (names used in specs and reports).
COMPARE_CODECS = ("png", "webp", "jxl")
LEARNED_CODECS = ("bitswap", "bbans")
MAX_PARTICLES = 16  # bitswap_core.coding.importance.MAX_PARTICLES (importing it would pull in torch)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class SpecError(ValueError):
    """The job spec is invalid; the message starts with the offending field so it can be fixed at once."""

    def __init__(self, field_name: str, message: str, source: str | None = None):
        self.field = field_name
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field_name}: {message}")


@dataclass(frozen=True)
class Source:
    """One input location: an fsspec URL, and glob patterns over the '/'-separated keys below it.

    Patterns are the pipeline's (pipeline.sources): case-insensitive fnmatch; a pattern without '/' is
    matched against the file name, one with '/' against the whole key. An empty `include` means the
    pipeline's image extensions; hidden files are always excluded.
    """

    url: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Prefix of this source's keys in the archive; required (and unique) when a job has several sources
    # so that two sources cannot produce the same key.
    name: str | None = None


@dataclass(frozen=True)
class Cost:
    """Prices used by reports. Defaults are example list prices; set your own."""

    storage_usd_per_gb_month: float = 0.023
    gpu_usd_per_hour: float = 2.50
    cpu_usd_per_hour: float = 0.04


@dataclass(frozen=True)
class Compare:
    """Classical codecs measured on a sample of each run's images, so reports can say what they would cost.

    Measured by jobs.compare at its fixed settings (PNG optimize, WebP lossless method 6, JPEG-XL
    lossless effort 9), the same numbers `bitswap compare` prints.
    """

    codecs: tuple[str, ...] = COMPARE_CODECS
    sample_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec with every default filled in."""

    name: str
    destination: str
    sources: tuple[Source, ...]
    model: str = "default"
    codec: str = "bitswap"
    particles: int = 1  # posterior samples per block (bitswap_core.api.compress): smaller, about as many times slower
    effort: int = 2  # the encoder's per-image fit (bitswap_core.api.compress): 1 fast, 2 everything
    shard_size: int = 256
    cluster_address: str | None = None
    actors: int | None = None
    threads_per_actor: int | None = None  # torch threads (and CPUs held) per CPU actor (absent: 1)
    max_pixels: int = 64_000_000
    lease_ttl_s: float = 300.0
    always_code: bool = False  # True: code every image by pixels even when its original file is smaller
    verify_writes: bool = True  # False: skip decoding each learned payload before it is written
    use_gpus: bool = True  # False: the actors run on CPUs alone, GPUs or not (the pipeline's --cpu-only)
    cost: Cost = field(default_factory=Cost)
    compare: Compare = field(default_factory=Compare)
    path: str | None = field(default=None, compare=False)  # where the spec was read from (not hashed)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what the hash covers and what run records store)."""
        d = asdict(self)
        d.pop("path", None)
        if d["particles"] == 1:  # absent at its default, so specs hashed before the setting existed keep their hash
            d.pop("particles")
        if d["effort"] == 2:  # likewise
            d.pop("effort")
        return json.loads(json.dumps(d))  # tuples -> lists, a JSON-safe copy

    @property
    def hash(self) -> str:
        """Stable hash of the normalised spec: equal settings give equal hashes, whatever the TOML layout."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------
# Parsing and validation


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a TOML job spec. Relative local paths are taken relative to the spec's folder."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError("spec", f"file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("spec", f"not valid TOML: {exc}", str(p)) from None
    try:
        return parse_spec(data, base_dir=p.resolve().parent, path=str(p))
    except SpecError as exc:
        raise SpecError(exc.field, str(exc).split(": ", 1)[1], str(p)) from None


def parse_spec(
    data: dict[str, Any], *, base_dir: str | os.PathLike[str] | None = None, path: str | None = None
) -> JobSpec:
    """Validate a spec already parsed from TOML (or built in code)."""
    top = _Fields(data, "")
    name = top.str("name", required=True)
    if not _NAME_RE.match(name):
        raise SpecError("name", f"{name!r} must be 1-128 letters, digits, '.', '_' or '-'")
    destination = _resolve_url(top.str("destination", required=True), base_dir)
    model = top.str("model", default="default")
    codec = top.str("codec", default="bitswap")
    if codec not in LEARNED_CODECS:
        raise SpecError("codec", f"{codec!r} is not one of {', '.join(LEARNED_CODECS)}")
    particles = top.int("particles", default=1, minimum=1, maximum=MAX_PARTICLES)
    effort = top.int("effort", default=2, minimum=1, maximum=2)
    shard_size = top.int("shard_size", default=256, minimum=1)
    cluster_address = top.str("cluster_address", default="") or None
    # absent: one actor per CPU (sharing any GPUs); 0: in the job's own process, without Ray (the pipeline's --actors)
    actors = top.int("actors", default=-1, minimum=0) if data.get("actors") is not None else None
    threads_per_actor = (top.int("threads_per_actor", default=-1, minimum=1)
                         if data.get("threads_per_actor") is not None else None)
    max_pixels = top.int("max_pixels", default=64_000_000, minimum=1)
    lease_ttl_s = top.float("lease_ttl_s", default=300.0, minimum=5.0)
    always_code = data.get("always_code", False)
    if not isinstance(always_code, bool):
        raise SpecError("always_code", f"must be true or false, not {always_code!r}")
    verify_writes = data.get("verify_writes", True)
    if not isinstance(verify_writes, bool):
        raise SpecError("verify_writes", f"must be true or false, not {verify_writes!r}")
    use_gpus = data.get("use_gpus", True)
    if not isinstance(use_gpus, bool):
        raise SpecError("use_gpus", f"must be true or false, not {use_gpus!r}")

    raw_sources = data.get("sources")
    if raw_sources is None:
        raise SpecError("sources", "missing: add at least one [[sources]] table with a url")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise SpecError("sources", "must be a non-empty array of tables ([[sources]])")
    sources = tuple(_parse_source(s, f"sources[{i}]", base_dir) for i, s in enumerate(raw_sources))
    if len(sources) > 1:
        names = [s.name for s in sources]
        for i, n in enumerate(names):
            if not n:
                raise SpecError(f"sources[{i}].name", "required when a job has more than one source")
            if n in names[:i]:
                raise SpecError(f"sources[{i}].name", f"{n!r} is used by another source")
    for i, s in enumerate(sources):
        if _same_or_below(destination, s.url) or _same_or_below(s.url, destination):
            raise SpecError(f"sources[{i}].url", "overlaps the destination; archive to a separate location")

    cost_t = top.table("cost")
    cost = Cost(
        storage_usd_per_gb_month=cost_t.float(
            "storage_usd_per_gb_month", default=Cost.storage_usd_per_gb_month, minimum=0.0
        ),
        gpu_usd_per_hour=cost_t.float("gpu_usd_per_hour", default=Cost.gpu_usd_per_hour, minimum=0.0),
        cpu_usd_per_hour=cost_t.float("cpu_usd_per_hour", default=Cost.cpu_usd_per_hour, minimum=0.0),
    )
    cost_t.done()

    cmp_t = top.table("compare")
    codecs = cmp_t.str_list("codecs", default=COMPARE_CODECS)
    for i, c in enumerate(codecs):
        if c not in COMPARE_CODECS:
            raise SpecError(f"compare.codecs[{i}]", f"{c!r} is not one of {', '.join(COMPARE_CODECS)}")
    compare = Compare(
        codecs=tuple(dict.fromkeys(codecs)),
        sample_size=cmp_t.int("sample_size", default=Compare.sample_size, minimum=0),
        seed=cmp_t.int("seed", default=0),
    )
    cmp_t.done()
    top.done(extra_known=("sources", "cost", "compare", "actors", "threads_per_actor", "always_code",
                          "verify_writes", "use_gpus"))
    return JobSpec(
        name=name,
        destination=destination,
        sources=sources,
        model=model,
        codec=codec,
        particles=particles,
        effort=effort,
        shard_size=shard_size,
        cluster_address=cluster_address,
        actors=actors,
        threads_per_actor=threads_per_actor,
        max_pixels=max_pixels,
        lease_ttl_s=lease_ttl_s,
        always_code=always_code,
        verify_writes=verify_writes,
        use_gpus=use_gpus,
        cost=cost,
        compare=compare,
        path=path,
    )


def _parse_source(raw: Any, where: str, base_dir: str | os.PathLike[str] | None) -> Source:
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict):
        raise SpecError(where, "must be a table with at least a url")
    t = _Fields(raw, where + ".")
    url = _resolve_url(t.str("url", required=True), base_dir)
    include = t.str_list("include", default=())
    exclude = t.str_list("exclude", default=())
    for key, pats in (("include", include), ("exclude", exclude)):
        for i, pat in enumerate(pats):
            if not pat or pat.startswith("/"):
                raise SpecError(f"{where}.{key}[{i}]", f"{pat!r}: patterns are relative to the source url")
    name = t.str("name", default="") or None
    if name is not None and not _NAME_RE.match(name):
        raise SpecError(f"{where}.name", f"{name!r} must be letters, digits, '.', '_' or '-'")
    t.done()
    return Source(url=url, include=tuple(include), exclude=tuple(exclude), name=name)


def _resolve_url(url: str, base_dir: str | os.PathLike[str] | None) -> str:
    """Absolute form of a local path (so cron's working directory does not matter); URLs are kept as is."""
    if _SCHEME_RE.match(url):
        scheme, rest = url.split("://", 1)
        if scheme == "file":
            return _resolve_url(rest, base_dir)
        return f"{scheme}://{rest.rstrip('/')}" if rest.strip("/") else url
    p = Path(os.path.expanduser(url))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return os.path.normpath(str(p))


def _same_or_below(a: str, b: str) -> bool:
    """True if location a is b or lies below it (string comparison of normalised URLs)."""
    a2, b2 = _norm_loc(a), _norm_loc(b)
    return a2 == b2 or a2.startswith(b2.rstrip("/") + "/")


def _norm_loc(u: str) -> str:
    if u.startswith("file://"):
        u = u[len("file://") :]
    return u.rstrip("/") or "/"


class _Fields:
    """Typed access to one TOML table that remembers which keys were read, to reject unknown ones."""

    def __init__(self, data: Any, prefix: str):
        if not isinstance(data, dict):
            raise SpecError(prefix.rstrip(".") or "spec", "must be a table")
        self.data, self.prefix, self.seen = data, prefix, set()

    def _get(self, key: str, required: bool) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise SpecError(self.prefix + key, "missing (required)")
            return None
        return self.data[key]

    def str(self, key: str, *, required: bool = False, default: str = "") -> str:
        v = self._get(key, required)
        if v is None:
            return default
        if not isinstance(v, str):
            raise SpecError(self.prefix + key, f"must be a string, got {type(v).__name__}")
        if required and not v.strip():
            raise SpecError(self.prefix + key, "must not be empty")
        return v

    def int(self, key: str, *, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        v = self._get(key, False)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(self.prefix + key, f"must be an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise SpecError(self.prefix + key, f"must be >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise SpecError(self.prefix + key, f"must be <= {maximum}, got {v}")
        return v

    def float(self, key: str, *, default: float, minimum: float | None = None) -> float:
        v = self._get(key, False)
        if v is None:
            return float(default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpecError(self.prefix + key, f"must be a number, got {v!r}")
        if v != v or v in (float("inf"), float("-inf")):
            raise SpecError(self.prefix + key, "must be a finite number")
        if minimum is not None and v < minimum:
            raise SpecError(self.prefix + key, f"must be >= {minimum}, got {v}")
        return float(v)

    def str_list(self, key: str, *, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self._get(key, False)
        if v is None:
            return tuple(default)
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise SpecError(self.prefix + key, "must be a list of strings")
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise SpecError(f"{self.prefix}{key}[{i}]", f"must be a string, got {item!r}")
        return tuple(v)

    def table(self, key: str) -> _Fields:
        v = self._get(key, False)
        return _Fields({} if v is None else v, self.prefix + key + ".")

    def done(self, extra_known: tuple[str, ...] = ()) -> None:
        """Reject keys nobody read: a typo must not silently fall back to a default."""
        known = self.seen | set(extra_known)
        for key in self.data:
            if key not in known:
                hint = difflib.get_close_matches(key, sorted(known), n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise SpecError(self.prefix + key, f"unknown field{more}")
