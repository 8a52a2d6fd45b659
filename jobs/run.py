"""One run of an archival job: list the sources, compress what is new or changed, record what happened.

A run, step by step (every step safe to interrupt):
1. take the job's lease (a second run waits or stops with a clear message);
2. complete earlier runs that crashed or stopped early: their own plans go to the pipeline again, into
   their own folders, where the pipeline skips the shards already written and finishes the rest;
3. list the sources and diff them against the index (key, size, ETag or mtime) -> the plan;
4. write the plan and a run record with status "running";
5. hand the planned files to the pipeline driver, which writes shards under DST/runs/<run_id>/;
6. read back the shards' statistics, write the run's index fragment, then sample a few images with the
   classical codecs for the report, and rewrite the run record with its final status.
The index only ever learns about images that sit in finished shards, so a crash anywhere loses nothing
(unfinished images are planned again) and doubles nothing (finished ones are in the index).
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa

from jobs.spec import JobSpec
from jobs.state import (
    RUNS_DIR,
    IndexEntry,
    JobStore,
    Lease,
    LeaseLost,
    RunRecord,
    column_lists,
    parse_time,
    read_shard_rows,
    utcnow,
)

log = logging.getLogger("bitswap.jobs")

# Hidden files are never inputs, whatever the spec's own excludes say.
ALWAYS_EXCLUDE = (".*", "*/.*")
MAX_FAILURES_RECORDED = 100


# --------------------------------------------------------------------------------------------------------
# Listing and planning


@dataclass(frozen=True)
class Listed:
    """One source file as listed now, under its job-level key."""

    key: str
    part: int  # index of the spec's source it comes from
    file: Any  # pipeline.sources.SourceFile (its key is relative to the source)
    fingerprint: str


@dataclass
class Listing:
    """What the sources hold now."""

    files: dict[str, Listed]
    sources: list[Any]  # pipeline.sources.Source per spec source
    filesystems: list[fsspec.AbstractFileSystem]


def part_prefix(spec: JobSpec, part: int) -> str:
    """Key prefix (and shard subfolder) of one source: its name, when it has one."""
    name = spec.sources[part].name
    return f"{name}/" if name else ""


def fingerprint_of(file: Any, fs: fsspec.AbstractFileSystem) -> str:
    """What says a file changed: its ETag, else its mtime, else (stores with neither) a hash of its bytes."""
    if file.etag:
        return f"etag:{file.etag}"
    if file.mtime is not None:
        return f"mtime:{file.mtime!r}"
    return "sha256:" + hashlib.sha256(fs.cat_file(file.path)).hexdigest()


def list_job_sources(spec: JobSpec) -> Listing:
    """List every source of the spec through the pipeline's lister (same keys, same patterns)."""
    from pipeline.sources import list_sources, open_fs

    files: dict[str, Listed] = {}
    sources, filesystems = [], []
    for i, s in enumerate(spec.sources):
        src = list_sources(s.url, include=s.include or None, exclude=ALWAYS_EXCLUDE + tuple(s.exclude))
        fs, _ = open_fs(s.url)
        sources.append(src)
        filesystems.append(fs)
        prefix = part_prefix(spec, i)
        for f in src.files:
            files[prefix + f.key] = Listed(prefix + f.key, i, f, fingerprint_of(f, fs))
    return Listing(files=files, sources=sources, filesystems=filesystems)


@dataclass
class Plan:
    """The files this run compresses, and why."""

    todo: list[Listed]
    new: int = 0
    changed: int = 0
    retried: int = 0
    unchanged: int = 0
    failed_unchanged: int = 0  # earlier failures left alone (use --retry-failed)
    gone: int = 0  # archived keys no longer in the sources (kept in the archive)

    @property
    def bytes(self) -> int:
        return sum(int(x.file.size or 0) for x in self.todo)


def plan_run(listing: Listing, index: dict[str, IndexEntry], *, retry_failed: bool = False) -> Plan:
    """Diff the listing against the index: new and changed keys (and, if asked, earlier failures)."""
    plan = Plan(todo=[])
    for key in sorted(listing.files):
        item = listing.files[key]
        entry = index.get(key)
        if entry is None:
            plan.new += 1
        elif entry.size != item.file.size or entry.fingerprint != item.fingerprint:
            plan.changed += 1
        elif entry.status == "error" and retry_failed:
            plan.retried += 1
        else:
            plan.unchanged += 1
            plan.failed_unchanged += entry.status == "error"
            continue
        plan.todo.append(item)
    plan.gone = sum(1 for k in index if k not in listing.files)
    return plan


# --------------------------------------------------------------------------------------------------------
# The pipeline driver


@dataclass
class DriverResult:
    """What the job needs back from the pipeline besides the shards: the resources its actors held."""

    gpus: float = 0.0
    cpus: float = 0.0
    actors: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the pipeline returned but could not do everything (e.g. shards failed)


# driver(src_url, files, out_url, spec): compress exactly `files` (pipeline.sources.SourceFile, keys
# relative to src_url) into shards under out_url; called again with the same files, it must skip the
# shards already written and finish the rest (the pipeline's resume), which is how a crashed run is
# completed.
Driver = Callable[[str, list[Any], str, JobSpec], DriverResult]


class PipelineHookMissing(RuntimeError):
    """The pipeline driver cannot compress an explicit list of files yet (see docs/JOBS.md)."""


def pipeline_driver(src_url: str, files: list[Any], out_url: str, spec: JobSpec) -> DriverResult:
    """Compress exactly the planned files of one source with pipeline.driver.compress(..., files=...).

    The job has already listed and diffed the source; listing again inside the pipeline would compress
    everything, so the driver must take the list.
    """
    import inspect
    import sys

    from pipeline import driver as pd

    if "files" not in inspect.signature(pd.compress).parameters:
        raise PipelineHookMissing(
            "pipeline.driver.compress() has no `files=` parameter yet, so it cannot compress only the new "
            "and changed files of a run; see docs/JOBS.md, 'Interface with the pipeline'"
        )
    summary = pd.compress(
        src_url,
        out_url,
        files=list(files),
        address=spec.cluster_address,
        shard_size=spec.shard_size,
        actors=spec.actors,
        threads_per_actor=spec.threads_per_actor,
        max_pixels=spec.max_pixels,
        codec=spec.codec,
        particles=spec.particles,
        effort=spec.effort,
        model=None if spec.model == "default" else spec.model,
        progress=sys.stderr.isatty(),
        keep_smaller_originals=not spec.always_code,
        verify_writes=spec.verify_writes,
        use_gpus=spec.use_gpus,
    )
    return _driver_result(summary)


def _driver_result(summary: Any) -> DriverResult:
    """Resources from the pipeline's Summary: `gpus`/`cpus` held by its actors when it reports them.

    Summaries that report only the actor count are counted as one CPU per actor (a lower bound).
    """
    actors = int(getattr(summary, "actors", 0) or 0)
    gpus = getattr(summary, "gpus", None)
    cpus = getattr(summary, "cpus", None)
    if gpus is None and cpus is None:
        gpus, cpus = 0.0, float(max(actors, 1))
    names = ("shards_total", "shards_skipped", "shards_written", "seconds", "manifest_written")
    detail = {k: getattr(summary, k) for k in names if hasattr(summary, k)}
    failed = list(getattr(summary, "shards_failed", []) or [])
    error = None
    if failed:
        name, reason = failed[0]
        error = f"{len(failed)} shards failed (first: {name}: {reason})"
    return DriverResult(
        gpus=float(gpus or 0), cpus=float(cpus or 0), actors=actors, detail=_jsonable(detail), error=error
    )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, str | int | float | bool) or v is None}


# --------------------------------------------------------------------------------------------------------
# The run


class RunFailed(RuntimeError):
    """The run stopped early; its record says why, and the next run completes it."""

    def __init__(self, record: RunRecord):
        self.record = record
        super().__init__(record.error or "run failed")


def run_job(
    spec: JobSpec,
    *,
    wait: bool = False,
    driver: Driver | None = None,
    retry_failed: bool = False,
    poll_s: float = 5.0,
    wait_timeout_s: float | None = None,
    sample: bool = True,
) -> RunRecord:
    """Run the job once and return its final record.

    Raises LeaseBusy if another run holds the job (and not `wait`); RunFailed if the pipeline stopped
    early (the record is written first, and the next run completes the work).
    """
    store = JobStore(spec.destination)
    lease = Lease(store, job=spec.name, ttl_s=spec.lease_ttl_s)
    lease.acquire(wait=wait, timeout_s=wait_timeout_s, poll_s=poll_s)
    try:
        return _run_locked(spec, store, lease, driver or pipeline_driver, retry_failed, sample)
    finally:
        lease.release()


def _run_locked(
    spec: JobSpec, store: JobStore, lease: Lease, driver: Driver, retry_failed: bool, sample: bool
) -> RunRecord:
    t0 = time.monotonic()
    records = store.records()
    run_id, seq = store.new_run_id(records)
    lease.set_run(run_id)
    recovered = recover_runs(store, lease, records, run_id, driver)

    rec = RunRecord(
        run_id=run_id,
        seq=seq,
        job=spec.name,
        spec_hash=spec.hash,
        started_at=utcnow(),
        holder=lease.holder,
        host=lease.host,
        pid=lease.pid,
        spec=spec.to_dict(),
        shards_url=store.url(RUNS_DIR, run_id),
        recovered=recovered,
    )
    listing = list_job_sources(spec)
    plan = plan_run(listing, store.load_index(), retry_failed=retry_failed)
    rec.listed, rec.planned, rec.planned_bytes = len(listing.files), len(plan.todo), plan.bytes
    log.info(
        "run %s: %d files listed: %d new, %d changed, %d retried, %d unchanged",
        run_id, rec.listed, plan.new, plan.changed, plan.retried, plan.unchanged,
    )  # fmt: skip
    # The plan goes first: a record saying "running" always has the plan that completing it needs.
    store.write_plan(run_id, (_plan_row(x) for x in plan.todo))
    lease.check()
    store.write_record(rec)

    interrupt = _compress(store, spec, rec, _files_by_part(plan.todo), driver)
    rows = finalize_run(store, lease, rec)
    if sample and rec.status != "failed" and spec.compare.sample_size and spec.compare.codecs:
        try:
            samples = sample_codecs(spec, rec, rows, listing)
            if samples.num_rows:
                lease.check()
                store.write_samples(run_id, samples)
                rec.samples = samples.num_rows
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - the comparison is a nice-to-have, never fails a run
            log.warning("run %s: codec sample failed: %s", run_id, exc)
    rec.ended_at = utcnow()
    rec.wall_seconds = time.monotonic() - t0
    lease.check()
    store.write_record(rec)
    if interrupt is not None:
        raise interrupt
    if rec.status == "failed":
        raise RunFailed(rec)
    return rec


def _plan_row(x: Listed) -> dict[str, Any]:
    f = x.file
    return {"key": x.key, "part": x.part, "source_key": f.key, "path": f.path, "size": f.size,
            "etag": f.etag, "mtime": f.mtime, "fingerprint": x.fingerprint}  # fmt: skip


def _files_by_part(items: Sequence[Listed]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for x in items:
        out.setdefault(x.part, []).append(x.file)
    return out


def _compress(
    store: JobStore, spec: JobSpec, rec: RunRecord, parts: dict[int, list[Any]], driver: Driver
) -> BaseException | None:
    """Run the driver once per source; failures go into the record. Returns a Ctrl-C/SIGTERM to re-raise."""
    if not parts:
        return None
    t = time.monotonic()
    interrupt = None
    try:
        for part, files in sorted(parts.items()):
            name = spec.sources[part].name
            out = store.url(RUNS_DIR, rec.run_id, *([name] if name else []))
            res = driver(spec.sources[part].url, files, out, spec)
            rec.gpus, rec.cpus = max(rec.gpus, res.gpus), max(rec.cpus, res.cpus)
            if res.error and not rec.error:
                rec.error = res.error
    except LeaseLost:
        raise
    except BaseException as exc:  # noqa: B036 - finish the record even on Ctrl-C / SIGTERM
        rec.error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Exception):
            interrupt = exc
        log.error("run %s: the pipeline stopped: %s", rec.run_id, rec.error)
    rec.compress_seconds += time.monotonic() - t
    return interrupt


def recover_runs(
    store: JobStore, lease: Lease, records: Sequence[RunRecord], by: str, driver: Driver | None = None
) -> list[str]:
    """Complete earlier runs that did not finish, then count them in; returns their ids.

    Candidates: runs left "running" by a holder that died (we hold the lease, so none is alive), and
    runs that stopped early ("failed") and have not been through this yet. The run's own plan goes to
    the driver again, with the run's own settings: the pipeline skips the shards already written and
    finishes the rest in the same folder (manifest included). If that fails too, the finished shards
    still count, the run is closed (never tried again) and the new run plans the rest.
    """
    from jobs.spec import parse_spec
    from pipeline.sources import SourceFile

    done = []
    for rec in records:
        crashed = not rec.finished
        if not crashed and not (rec.status == "failed" and rec.recovered_by is None):
            continue
        why = f"crashed (holder {rec.holder} gone)" if crashed else "stopped early"
        log.warning("run %s %s: completing it", rec.run_id, why)
        dead = lease.took_over or {}
        if crashed and dead.get("run_id") == rec.run_id and dead.get("renewed_at") and rec.started_at:
            # The dead holder was alive at its last renewal: the best bound on the time it computed.
            rec.compress_seconds = max(0.0, parse_time(dead["renewed_at"]) - parse_time(rec.started_at))
        rec.recovered_by = by
        previous_error = rec.error
        plan = store.read_plan(rec.run_id).to_pylist()
        finished = set(_finished_keys(store, rec))
        parts: dict[int, list[Any]] = {}
        for p in plan:
            parts.setdefault(p["part"], []).append(
                SourceFile(p["source_key"], p["path"], p["size"], p["etag"], p["mtime"])
            )
        rec.error = None
        if driver is not None and plan and (len(finished) < len(plan) or not _manifests_present(store, rec)):
            _compress(store, parse_spec(rec.spec), rec, parts, driver)
        finalize_run(store, lease, rec)
        if rec.status == "failed":
            rec.status = "crashed" if crashed else "failed"
            rec.error = f"{why}: {previous_error or '?'}; run {by} could not complete it: {rec.error}"
        else:
            rec.note = f"{why}{f' ({previous_error})' if previous_error else ''}; completed by run {by}"
        rec.ended_at = rec.ended_at if not crashed else utcnow()
        lease.check()
        store.write_record(rec)
        done.append(rec.run_id)
    return done


def _finished_keys(store: JobStore, rec: RunRecord) -> list[str]:
    names = [s.get("name") for s in rec.spec.get("sources", [])]
    keys: list[str] = []
    for name in dict.fromkeys(names):
        folder = store.path(RUNS_DIR, rec.run_id, *([name] if name else []))
        t, _ = read_shard_rows(store.fs, folder, prefix=f"{name}/" if name else "", columns=["key"])
        keys += t.column("key").to_pylist()
    return keys


def _manifests_present(store: JobStore, rec: RunRecord) -> bool:
    from pipeline.shards import MANIFEST_NAME

    store.refresh()
    parts = {p["part"] for p in store.read_plan(rec.run_id).select(["part"]).to_pylist()}
    sources = rec.spec.get("sources", [])
    for part in parts:
        name = sources[part].get("name") if part < len(sources) else None
        if not store.fs.exists(store.path(RUNS_DIR, rec.run_id, *([name] if name else []), MANIFEST_NAME)):
            return False
    return True


def finalize_run(store: JobStore, lease: Lease, rec: RunRecord) -> pa.Table:
    """Count the run's finished shards into its record and write its index fragment (idempotent)."""
    spec = rec.spec
    names = [s.get("name") for s in spec.get("sources", [])]
    plan = {r["key"]: r for r in store.read_plan(rec.run_id).to_pylist()}
    tables, shards, shard_bytes = [], [], 0
    for name in dict.fromkeys(names):  # one pipeline output folder per named source, else one
        folder = store.path(RUNS_DIR, rec.run_id, *([name] if name else []))
        t, sh = read_shard_rows(store.fs, folder, prefix=f"{name}/" if name else "")
        tables.append(t)
        shards += [(f"{name}/{n}" if name else n) for n, _ in sh]
        shard_bytes += sum(size for _, size in sh)
    rows = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    entries: dict[str, IndexEntry] = {}
    st = column_lists(rows, ("key", "shard", "status", "file_sha256", "error"))
    for key, shard, status, sha in zip(*st[:4]):
        if key not in plan:
            log.warning("run %s: shard %s holds %r, which was not planned; ignored", rec.run_id, shard, key)
            continue
        if key in entries:
            log.warning("run %s: %r is in two shards; the first one counts", rec.run_id, key)
            continue
        p = plan[key]
        entries[key] = IndexEntry(
            key=key,
            size=int(p["size"]) if p["size"] is not None else -1,
            fingerprint=p["fingerprint"],
            run_id=rec.run_id,
            shard=shard,
            status=status or "error",
            file_sha256=sha,
        )
    lease.check()
    store.write_index_fragment(rec.run_id, entries.values())

    rec.shards, rec.shard_bytes = shards, shard_bytes
    rec.images = len(entries)
    rec.ok = sum(e.status == "ok" for e in entries.values())
    rec.stored = sum(e.status == "stored" for e in entries.values())
    rec.errors = rec.images - rec.ok - rec.stored
    sums = totals(rows, set(entries))
    rec.raw_bytes, rec.original_bytes = sums["raw"], sums["original"]
    rec.compressed_bytes = sums["compressed"]
    rec.failures = [
        {"key": k, "error": e or ""}
        for k, s, e in zip(st[0], st[2], st[4])
        if s not in ("ok", "stored") and k in entries
    ][:MAX_FAILURES_RECORDED]
    cost = spec.get("cost", {})
    rec.compute_cost_usd = (
        rec.compress_seconds
        / 3600.0
        * (rec.gpus * float(cost.get("gpu_usd_per_hour", 0)) + rec.cpus * float(cost.get("cpu_usd_per_hour", 0)))
    )
    missing = rec.planned - rec.images
    if missing > 0:
        more = f"{missing} planned images are in no finished shard; the next run redoes them"
        rec.error = f"{rec.error}; {more}" if rec.error else more
    rec.status = "failed" if missing > 0 else ("partial" if rec.errors else "ok")
    return rows


def totals(rows: pa.Table, keys: set[str] | None = None) -> dict[str, int]:
    """Byte sums with the pipeline's conventions: raw = pixels of coded ('ok') images, original = input
    files of every image, compressed = payloads of ok and stored images."""
    key, status, raw, orig, comp = column_lists(
        rows, ("key", "status", "raw_bytes", "original_bytes", "compressed_bytes")
    )
    out = {"raw": 0, "original": 0, "compressed": 0}
    for k, s, r, o, c in zip(key, status, raw, orig, comp):
        if keys is not None and k not in keys:
            continue
        out["original"] += int(o or 0)
        if s == "ok":
            out["raw"] += int(r or 0)
        if s in ("ok", "stored"):
            out["compressed"] += int(c or 0)
    return out


# --------------------------------------------------------------------------------------------------------
# Classical codecs on a sample, for the report's comparison

SAMPLE_SCHEMA_BASE = [
    ("key", pa.string()),
    ("mode", pa.string()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("dims", pa.int64()),
    ("raw_bytes", pa.int64()),
    ("original_bytes", pa.int64()),
    ("bitswap_bytes", pa.int64()),
]


def sample_codecs(spec: JobSpec, rec: RunRecord, rows: pa.Table, listing: Listing) -> pa.Table:
    """Measure the classical codecs on up to sample_size of the run's coded images (jobs.compare).

    One row per image: its dims and Bit-Swap size from the shard, and `<codec>_bytes` (None when the
    codec could not code it, e.g. a missing plugin) and `<codec>_seconds` (encode time) per codec.
    """
    from PIL import Image

    from jobs.compare import measure

    cmp = spec.compare
    key, status, mode, w, h, raw, orig, comp, sha = column_lists(
        rows,
        (
            "key",
            "status",
            "mode",
            "width",
            "height",
            "raw_bytes",
            "original_bytes",
            "compressed_bytes",
            "file_sha256",
        ),
    )
    coded = {k: i for i, (k, s) in enumerate(zip(key, status)) if s == "ok" and k in listing.files}
    rng = random.Random(f"{cmp.seed}:{rec.run_id}")
    chosen = sorted(rng.sample(sorted(coded), min(cmp.sample_size, len(coded))))
    out: list[dict[str, Any]] = []
    for k in chosen:
        i = coded[k]
        item = listing.files[k]
        data = listing.filesystems[item.part].cat_file(item.file.path)
        if sha[i] and hashlib.sha256(data).hexdigest() != sha[i]:
            continue  # the file changed since it was compressed: its sizes would not compare
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            row = {
                "key": k,
                "mode": mode[i],
                "width": w[i],
                "height": h[i],
                "dims": im.width * im.height * len(im.getbands()),
                "raw_bytes": raw[i],
                "original_bytes": orig[i],
                "bitswap_bytes": comp[i],
            }
            for c in cmp.codecs:
                m = measure(im, c, name=k)
                if not m.ok:
                    log.warning("sample %s: %s: %s", k, c, m.status)
                row[f"{c}_bytes"] = m.compressed_bytes if m.ok else None
                row[f"{c}_seconds"] = m.encode_s
        out.append(row)
    schema = pa.schema(
        SAMPLE_SCHEMA_BASE
        + [(f"{c}_{x}", pa.int64() if x == "bytes" else pa.float64()) for c in cmp.codecs for x in ("bytes", "seconds")]
    )
    return pa.Table.from_pylist(out, schema=schema)


# --------------------------------------------------------------------------------------------------------
# Status


def job_status(spec: JobSpec, *, pending: bool = True, retry_failed: bool = False) -> dict[str, Any]:
    """The runs so far, the lease, and (listing the sources) what the next run would compress."""
    store = JobStore(spec.destination)
    records = store.records()
    lease = Lease(store, job=spec.name).read()
    out: dict[str, Any] = {
        "job": spec.name,
        "destination": spec.destination,
        "spec_hash": spec.hash,
        "runs": [r.to_dict() for r in records],
        "lease": lease,
        "incomplete": [r.run_id for r in records if not r.finished or (r.status == "failed" and not r.recovered_by)],
    }
    if pending:
        index = store.load_index()
        plan = plan_run(list_job_sources(spec), index, retry_failed=retry_failed)
        out["archived"] = len(index)
        out["pending"] = {
            "images": len(plan.todo),
            "bytes": plan.bytes,
            "new": plan.new,
            "changed": plan.changed,
            "retry": plan.retried,
            "unchanged": plan.unchanged,
            "failed_unchanged": plan.failed_unchanged,
            "gone": plan.gone,
            "keys": [x.key for x in plan.todo[:20]],
        }
    return out


def format_status(st: dict[str, Any]) -> str:
    """Human-readable status (what `bitswap job status` prints)."""
    lines = [f"job {st['job']}  ->  {st['destination']}  (spec {st['spec_hash']})"]
    lease = st.get("lease")
    if lease:
        left = float(lease.get("expires_at_epoch", 0)) - time.time()
        state = f"expires in {left:.0f} s" if left > 0 else "EXPIRED (holder gone?)"
        lines.append(
            f"running now: run {lease.get('run_id')} by {lease.get('holder')} "
            f"(host {lease.get('host')}, pid {lease.get('pid')}), lease {state}"
        )
    runs = st["runs"]
    if not runs:
        lines.append("no runs yet")
    else:
        lines.append("")
        lines.append(
            f"{'run':<32} {'status':<8} {'started':<20} {'time':>8} {'images':>7} {'errors':>6} "
            f"{'original':>10} {'compressed':>10} {'ratio':>6} spec"
        )
        for r in runs:
            ratio = r["original_bytes"] / r["compressed_bytes"] if r["compressed_bytes"] else 0.0
            lines.append(
                f"{r['run_id']:<32} {r['status']:<8} {r['started_at']:<20} {r['wall_seconds']:>7.1f}s "
                f"{r['images']:>7} {r['errors']:>6} {_mb(r['original_bytes']):>10} "
                f"{_mb(r['compressed_bytes']):>10} {ratio:>6.2f} "
                f"{r['spec_hash']}{'' if r['spec_hash'] == st['spec_hash'] else ' (other spec)'}"
            )
            for extra in (r.get("error"), r.get("note")):
                if extra:
                    lines.append(f"{'':<32} {extra}")
    if st.get("incomplete"):
        lines.append(f"incomplete runs (the next run completes them): {', '.join(st['incomplete'])}")
    p = st.get("pending")
    if p is not None:
        lines.append("")
        lines.append(f"archived keys: {st['archived']}")
        lines.append(
            f"pending: {p['images']} images ({_mb(p['bytes'])}): {p['new']} new, "
            f"{p['changed']} changed, {p['retry']} failed to retry; {p['unchanged']} unchanged"
        )
        if p["failed_unchanged"]:
            lines.append(f"{p['failed_unchanged']} earlier failures are not retried (bitswap job run --retry-failed)")
        if p["gone"]:
            lines.append(f"{p['gone']} archived keys are no longer in the sources (kept in the archive)")
        for k in p["keys"]:
            lines.append(f"  {k}")
        if p["images"] > len(p["keys"]):
            lines.append(f"  ... and {p['images'] - len(p['keys'])} more")
    return "\n".join(lines)


def _mb(n: int | float) -> str:
    return f"{n / 1e6:.1f} MB"
