"""A job's state, kept in its destination next to the shards: run records, the incremental index, the lease.

Everything lives under `DST/_job/` and goes through fsspec, so a job archiving to S3 keeps its state in S3
and any machine (a cron host today, a Kubernetes pod tomorrow) can pick the job up. Layout:

    DST/runs/<run_id>/...            the pipeline's shards and manifest for one run
    DST/_job/runs/<run_id>.json      run record (written at start with status "running", then final)
    DST/_job/plans/<run_id>.parquet  keys the run set out to compress, with their source fingerprints
    DST/_job/index/<run_id>.parquet  index fragment: keys the run archived (key -> size, fingerprint, shard)
    DST/_job/samples/<run_id>.parquet  classical-codec sizes measured on a sample of the run's images
    DST/_job/lease.json              who runs the job now, until when

Every file is written whole or not at all (local: temporary file + rename; object stores: one PUT), and
nothing is ever rewritten in place except the lease and a run's own record, so a crash at any point leaves
state that the next run can finish.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

JOB_DIR = "_job"
RUNS_DIR = "runs"  # shards, one folder per run

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("size", pa.int64()),
        ("fingerprint", pa.string()),
        ("run_id", pa.string()),
        ("shard", pa.string()),
        ("status", pa.string()),
        ("file_sha256", pa.string()),
    ]
)

# A run's plan: enough to hand the very same files to the pipeline again if the run has to be completed.
PLAN_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # job-level key (source name prefix + key in the source)
        ("part", pa.int32()),  # which of the spec's sources
        ("source_key", pa.string()),  # key relative to that source
        ("path", pa.string()),  # path inside the source's filesystem
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("mtime", pa.float64()),
        ("fingerprint", pa.string()),
    ]
)


def utcnow() -> str:
    """ISO-8601 UTC timestamp used in every record (sortable, unambiguous across hosts)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(ts: str) -> float:
    """Seconds since the epoch for a timestamp written by utcnow()."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------------------------------------
# Files


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a whole file so that readers see the old content or the new one, never a part.

    Local files go through a temporary name and os.replace; object stores make an object visible only
    when its single PUT completes, so a plain write is already atomic there.
    """
    parent = posixpath.dirname(path)
    if is_local(fs):
        os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def write_table(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_atomic(fs, path, buf.getvalue())


def read_table(fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


# --------------------------------------------------------------------------------------------------------
# Run records


@dataclass
class RunRecord:
    """What one run did. Written at start (status "running") and rewritten once at the end.

    status: running | ok (every planned image archived without error) | partial (all archived, some
    with status 'error') | failed (the run stopped early) | crashed (its holder died). The next run
    completes failed and crashed runs in their own folders (once); a completed run ends ok or partial
    with a note, one that could not be completed keeps its status and the new run plans the rest.
    """

    run_id: str
    seq: int
    job: str
    spec_hash: str
    status: str = "running"
    started_at: str = ""
    ended_at: str | None = None
    holder: str = ""
    host: str = ""
    pid: int = 0
    spec: dict[str, Any] = field(default_factory=dict)
    shards_url: str = ""
    listed: int = 0  # source files matched by the spec at listing time
    planned: int = 0  # of which new or changed, handed to the pipeline
    planned_bytes: int = 0
    images: int = 0  # rows the run's shards hold
    ok: int = 0
    stored: int = 0
    errors: int = 0
    raw_bytes: int = 0
    original_bytes: int = 0
    compressed_bytes: int = 0
    shard_bytes: int = 0  # Parquet files as stored (payloads + statistics + overhead)
    shards: list[str] = field(default_factory=list)  # shard files, relative to shards_url
    compress_seconds: float = 0.0  # wall time of the pipeline call
    wall_seconds: float = 0.0  # whole run, listing and sampling included
    gpus: float = 0.0  # accelerators held by the pipeline's actors while it ran
    cpus: float = 0.0  # CPUs held by the actors while it ran (in-process: the machine's)
    compute_cost_usd: float = 0.0
    samples: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # first failures: key, error
    error: str | None = None  # why the run stopped, if it did
    note: str | None = None  # e.g. "crashed; completed by run ..."
    recovered: list[str] = field(default_factory=list)  # earlier runs this run completed
    recovered_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def finished(self) -> bool:
        return self.status != "running"


@dataclass(frozen=True)
class IndexEntry:
    """The archived version of one source key: enough to tell whether the source has changed since."""

    key: str
    size: int
    fingerprint: str
    run_id: str
    shard: str
    status: str
    file_sha256: str | None = None


# --------------------------------------------------------------------------------------------------------
# The store


class JobStore:
    """A job's destination: where its shards, records, index and lease live."""

    def __init__(self, destination: str, storage_options: dict[str, Any] | None = None):
        self.destination = destination
        self.fs, root = fsspec.core.url_to_fs(destination, **(storage_options or {}))
        self.root = root.rstrip("/") or "/"

    # paths ---------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url(self, *parts: str) -> str:
        """A full URL (with protocol) for handing a location to another component, e.g. the pipeline."""
        p = self.path(*parts)
        return p if is_local(self.fs) else self.fs.unstrip_protocol(p)

    @property
    def lease_path(self) -> str:
        return self.path(JOB_DIR, "lease.json")

    def record_path(self, run_id: str) -> str:
        return self.path(JOB_DIR, "runs", f"{run_id}.json")

    def plan_path(self, run_id: str) -> str:
        return self.path(JOB_DIR, "plans", f"{run_id}.parquet")

    def index_path(self, run_id: str) -> str:
        return self.path(JOB_DIR, "index", f"{run_id}.parquet")

    def samples_path(self, run_id: str) -> str:
        return self.path(JOB_DIR, "samples", f"{run_id}.parquet")

    def shards_path(self, run_id: str) -> str:
        return self.path(RUNS_DIR, run_id)

    def is_job(self) -> bool:
        """True if this destination holds job state (as opposed to a bare `pipeline compress` output)."""
        self.refresh()
        return self.fs.exists(self.path(JOB_DIR, "runs"))

    def refresh(self) -> None:
        """Forget cached listings: another process (or a crashed run) may have written since."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache()

    def _list(self, folder: str, suffix: str) -> list[str]:
        self.refresh()
        try:
            names = self.fs.ls(self.path(JOB_DIR, folder), detail=False)
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            base = posixpath.basename(n.rstrip("/"))
            if base.endswith(suffix) and ".tmp-" not in base:
                out.append(base[: -len(suffix)])
        return sorted(out)

    # records -------------------------------------------------------------------------------------------
    def records(self) -> list[RunRecord]:
        """Every run record, oldest first."""
        recs = []
        for run_id in self._list("runs", ".json"):
            data = read_bytes(self.fs, self.record_path(run_id))
            if data is not None:
                recs.append(RunRecord.from_dict(json.loads(data)))
        return sorted(recs, key=lambda r: (r.seq, r.started_at, r.run_id))

    def write_record(self, rec: RunRecord) -> None:
        data = json.dumps(rec.to_dict(), indent=1, sort_keys=True).encode()
        write_atomic(self.fs, self.record_path(rec.run_id), data)

    def new_run_id(self, records: list[RunRecord]) -> tuple[str, int]:
        """Next sequence number, and an id that sorts by it and cannot collide with a racing run's."""
        seq = max((r.seq for r in records), default=0) + 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{seq:06d}-{stamp}-{secrets.token_hex(2)}", seq

    # plans, index, samples -----------------------------------------------------------------------------
    def write_plan(self, run_id: str, rows: Iterable[dict[str, Any]]) -> None:
        write_table(self.fs, self.plan_path(run_id), pa.Table.from_pylist(list(rows), schema=PLAN_SCHEMA))

    def read_plan(self, run_id: str) -> pa.Table:
        try:
            return read_table(self.fs, self.plan_path(run_id))
        except FileNotFoundError:
            return PLAN_SCHEMA.empty_table()

    def write_index_fragment(self, run_id: str, entries: Iterable[IndexEntry]) -> None:
        rows = [asdict(e) for e in entries]
        write_table(self.fs, self.index_path(run_id), pa.Table.from_pylist(rows, schema=INDEX_SCHEMA))

    def index_fragments(self) -> list[str]:
        return self._list("index", ".parquet")

    def load_index(self) -> dict[str, IndexEntry]:
        """Latest archived version of every key: fragments applied in run order, later runs win."""
        index: dict[str, IndexEntry] = {}
        for run_id in self.index_fragments():  # run ids sort by sequence number
            t = read_table(self.fs, self.index_path(run_id)).to_pylist()
            for row in t:
                index[row["key"]] = IndexEntry(**{f.name: row.get(f.name) for f in fields(IndexEntry)})
        return index

    def write_samples(self, run_id: str, table: pa.Table) -> None:
        write_table(self.fs, self.samples_path(run_id), table)

    def read_samples(self) -> dict[str, pa.Table]:
        return {rid: read_table(self.fs, self.samples_path(rid)) for rid in self._list("samples", ".parquet")}


# --------------------------------------------------------------------------------------------------------
# The lease


class LeaseBusy(RuntimeError):
    """Another run of the same job holds the lease."""

    def __init__(self, info: dict[str, Any], path: str):
        self.info = info
        left = max(0.0, float(info.get("expires_at_epoch", 0)) - time.time())
        super().__init__(
            f"job {info.get('job')!r} is already running: lease {path} is held by {info.get('holder')} "
            f"(host {info.get('host')}, pid {info.get('pid')}, run {info.get('run_id') or '?'}, "
            f"since {info.get('acquired_at')}); it expires in {left:.0f} s unless renewed. "
            "Use --wait to wait for it."
        )


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it expired while we were stalled); stop without committing."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class Lease:
    """A lease object in the destination that makes runs of one job mutually exclusive.

    The holder renews it every ttl/3 from a background thread; a holder that dies stops renewing and the
    lease expires after ttl, so the next run takes over. On the holder's own host a dead pid is noticed
    at once. Object stores have no compare-and-swap, so acquiring writes the lease, waits `settle_s` and
    reads it back: of two runs racing for an expired lease, the one whose write landed last wins and the
    other backs off. The holder also checks the lease before every commit (index fragment, final record)
    and stops if it was taken over, so a stalled holder can never commit over its successor.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        job: str,
        ttl_s: float = 300.0,
        settle_s: float | None = None,
        holder: str | None = None,
    ):
        self.store = store
        self.job = job
        self.ttl_s = float(ttl_s)
        self.settle_s = (0.2 if is_local(store.fs) else 1.0) if settle_s is None else settle_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.run_id: str | None = None
        self.acquired_at: str | None = None
        self.took_over: dict[str, Any] | None = None  # the expired lease we replaced, if any
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # reading ------------------------------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        """The lease as stored now (None if nobody holds one)."""
        data = read_bytes(self.store.fs, self.store.lease_path)
        if data is None:
            return None
        try:
            info = json.loads(data)
            return info if isinstance(info, dict) else {}
        except ValueError:
            return {}  # unreadable: treated as expired

    def _is_free(self, info: dict[str, Any] | None) -> bool:
        if not info:
            return True
        if info.get("holder") == self.holder:
            return True
        if float(info.get("expires_at_epoch", 0)) < time.time():
            return True
        # Same host, holder process gone: it died without releasing; no need to wait for the expiry.
        return info.get("host") == self.host and not _pid_alive(int(info.get("pid", 0) or 0))

    def _payload(self) -> bytes:
        now = time.time()
        expires = datetime.fromtimestamp(now + self.ttl_s, timezone.utc)
        info = {
            "job": self.job,
            "holder": self.holder,
            "host": self.host,
            "pid": self.pid,
            "run_id": self.run_id,
            "acquired_at": self.acquired_at or utcnow(),
            "renewed_at": utcnow(),
            "ttl_s": self.ttl_s,
            "expires_at_epoch": now + self.ttl_s,
            "expires_at": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        return json.dumps(info, indent=1).encode()

    # acquiring ----------------------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; False (without waiting) if someone else holds it."""
        self.store.refresh()
        current = self.read()
        if not self._is_free(current):
            return False
        fs, path = self.store.fs, self.store.lease_path
        self.acquired_at = utcnow()
        if current is None and is_local(fs):
            # Exclusive create with its content complete: link a finished temporary file to the name.
            # Of two local racers exactly one succeeds, and no reader ever sees an empty lease.
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{secrets.token_hex(4)}"
            with open(tmp, "wb") as f:
                f.write(self._payload())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        else:
            # Overwriting (object stores, or an expired lease): racers may both write; the last write
            # wins, and waiting before reading back lets each see whether it was last.
            write_atomic(fs, path, self._payload())
            if self.settle_s:
                time.sleep(self.settle_s)
        info = self.read()
        if not info or info.get("holder") != self.holder:
            return False
        if current and current.get("holder") != self.holder:
            self.took_over = current
        self._lost.clear()
        return True

    def acquire(self, *, wait: bool = False, timeout_s: float | None = None, poll_s: float = 5.0) -> Lease:
        """Take the lease, waiting for the holder to finish if `wait`; raises LeaseBusy otherwise."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.try_acquire():
            info = self.read() or {}
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise LeaseBusy(info, self.store.url(JOB_DIR, "lease.json"))
            time.sleep(poll_s)
        self._start_renewing()
        return self

    # holding ------------------------------------------------------------------------------------------
    def set_run(self, run_id: str) -> None:
        """Name the run in the lease, so that a waiting or refused run can say which one it waits for."""
        self.run_id = run_id
        self.renew()

    def renew(self) -> None:
        """Push the expiry forward, unless the lease was taken over meanwhile (then mark it lost)."""
        with self._lock:
            if self._lost.is_set():
                return
            info = self.read()
            if not info or info.get("holder") != self.holder:
                self._lost.set()
                return
            write_atomic(self.store.fs, self.store.lease_path, self._payload())

    def check(self) -> None:
        """Raise LeaseLost unless we still hold the lease (read fresh); call before every commit."""
        if not self._lost.is_set():
            self.store.refresh()
            info = self.read()
            if not info or info.get("holder") != self.holder:
                self._lost.set()
            elif float(info.get("expires_at_epoch", 0)) < time.time():
                self.renew()  # expired but nobody took it: ours again
        if self._lost.is_set():
            raise LeaseLost(f"lease {self.store.url(JOB_DIR, 'lease.json')} was taken over by another run")

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="bitswap-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = max(0.5, self.ttl_s / 3)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - a failed renewal is retried; expiry is the safety net
                continue
            if self._lost.is_set():
                return

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            info = self.read()
            if info and info.get("holder") == self.holder:
                with contextlib.suppress(FileNotFoundError):
                    self.store.fs.rm_file(self.store.lease_path)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def held_lease(
    store: JobStore, *, job: str, ttl_s: float, wait: bool = False, timeout_s: float | None = None, poll_s: float = 5.0
) -> Iterator[Lease]:
    """Hold the job's lease for the duration of a block."""
    lease = Lease(store, job=job, ttl_s=ttl_s).acquire(wait=wait, timeout_s=timeout_s, poll_s=poll_s)
    try:
        yield lease
    finally:
        lease.release()


# --------------------------------------------------------------------------------------------------------
# Reading the pipeline's shards (read-only: the shard format belongs to pipeline.shards)


def column_lists(t: pa.Table, names: Sequence[str]) -> list[list[Any]]:
    """The named columns as Python lists; a column the table lacks reads as all None."""
    return [t.column(c).to_pylist() if c in t.column_names else [None] * t.num_rows for c in names]


def read_shard_rows(
    fs: fsspec.AbstractFileSystem, folder: str, *, prefix: str = "", columns: Iterable[str] | None = None
) -> tuple[pa.Table, list[tuple[str, int]]]:
    """Statistics columns (never the payloads) of every finished shard in one pipeline output folder.

    Returns the rows, with the shard's file name in a `shard` column and `prefix` put before each key,
    and the (file name, bytes on storage) of each shard. Only finished shards are read: the pipeline
    writes them under a temporary name and moves them into place whole.
    """
    from pipeline.shards import META_COLUMNS, list_shards

    wanted = list(columns) if columns is not None else list(META_COLUMNS)
    found = list_shards(fs, folder)
    tables = []
    shards = []
    for name, size in found.items():
        path = posixpath.join(folder, name)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            cols = [c for c in wanted if c in pf.schema_arrow.names]
            t = pf.read(columns=cols)
        t = t.append_column("shard", pa.array([name] * t.num_rows, pa.string()))
        if prefix:
            keys = pa.array([prefix + k for k in t.column("key").to_pylist()], pa.string())
            t = t.set_column(t.schema.get_field_index("key"), "key", keys)
        tables.append(t)
        shards.append((name, size))
    if not tables:
        return pa.table({"key": pa.array([], pa.string()), "shard": pa.array([], pa.string())}), shards
    return pa.concat_tables(tables, promote_options="default"), shards
