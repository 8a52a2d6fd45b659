"""Plan shards, run them on a Ray actor pool, resume after a crash, and sum up.

Why this shape (docs/PIPELINE.md has the longer version): shards are planned deterministically from the
sorted key list, so a rerun computes the same plan and skips what is already written; the unit of work,
of retry and of atomic write is the shard. Actors are driven through ray.util.ActorPool, with actor
restarts and task retries doing the fault tolerance: a killed actor comes back and its shard is redone.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline import shards
from pipeline.actors import DEFAULT_MAX_PIXELS, ShardCompressor, ShardResult
from pipeline.shards import ShardPlan, ShardStats
from pipeline.sources import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    SourceFile,
    is_process_local,
    list_sources,
    open_fs,
    redact_url,
)

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 64
# Restarts of a dead actor and retries of the shard it held; past these the shard is reported failed.
ACTOR_MAX_RESTARTS = 3
# The manifest lists at most this many failed keys; every one is in the shard footers and the table.
MANIFEST_MAX_FAILURES = 1000


@dataclass
class Summary:
    """What a compress run did, for the final report and the exit code."""

    stats: ShardStats = field(default_factory=ShardStats)
    shards_total: int = 0
    shards_skipped: int = 0
    shards_written: int = 0
    shards_failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    model_ids: list[str] = field(default_factory=list)
    manifest_written: bool = False
    actors: int = 0
    cpus: float = 0.0  # resources held by all actors together (for compute cost accounting)
    gpus: float = 0.0
    run_bytes: int = 0  # input bytes coded by this run (skipped shards excluded): the MB/s numerator
    startup_seconds: float = 0.0  # connecting to Ray and starting the actors (model loads)

    @property
    def ratio(self) -> float:
        """Input file bytes over archived bytes (ok and stored rows)."""
        return self.stats.original_bytes / self.stats.compressed_bytes if self.stats.compressed_bytes else 0.0

    @property
    def bpd(self) -> float:
        """Bits per dimension over the images coded by pixels."""
        return self.stats.coded_bytes * 8 / self.stats.coded_dims if self.stats.coded_dims else 0.0

    @property
    def exit_code(self) -> int:
        """0 only when every image was archived and the manifest written."""
        return 0 if self.manifest_written and not self.stats.error and not self.shards_failed else 1

    def format(self, max_listed: int = 20) -> str:
        s = self.stats
        mb = 1e6
        lines = [
            f"images     {s.images} ({s.ok} coded, {s.stored} stored as original bytes, {s.error} failed)",
            f"shards     {self.shards_total} ({self.shards_written} written,"
            f" {self.shards_skipped} already done, {len(self.shards_failed)} failed) on {self.actors} actor(s)",
            f"bytes in   {s.original_bytes / mb:.3f} MB of archived files (+{s.failed_bytes / mb:.3f} MB failed);"
            f" {s.raw_bytes / mb:.3f} MB raw pixels of the coded images",
            f"bytes out  {s.compressed_bytes / mb:.3f} MB   ratio {self.ratio:.3f}   bpd {self.bpd:.4f}",
            f"time       {self.seconds:.2f} s"
            + (f"   {self.run_bytes / mb / self.seconds:.2f} MB/s this run" if self.seconds else ""),
            f"model      {', '.join(self.model_ids) or '-'}",
        ]
        if s.failures:
            lines.append(f"failed images ({len(s.failures)}):")
            lines += [f"  {key}: {reason}" for key, reason in s.failures[:max_listed]]
            if len(s.failures) > max_listed:
                lines.append(f"  ... and {len(s.failures) - max_listed} more (status = 'error' rows)")
        if self.shards_failed:
            lines.append(f"failed shards ({len(self.shards_failed)}), rerun the command to retry them:")
            lines += [f"  {name}: {reason}" for name, reason in self.shards_failed[:max_listed]]
        lines.append("manifest   " + ("written" if self.manifest_written else "NOT written: archive incomplete"))
        return "\n".join(lines)


def plan_shards(files: Sequence[SourceFile], shard_size: int, settings: Mapping[str, Any]) -> list[ShardPlan]:
    """Cut the key-sorted file list into shards of shard_size; the same inputs always give the same plan."""
    if shard_size < 1:
        raise ValueError("shard size must be at least 1")
    ordered = sorted(files, key=lambda f: f.key)
    keys = [f.key for f in ordered]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys in the source listing")
    plans = []
    for i in range(0, len(ordered), shard_size):
        chunk = tuple(ordered[i : i + shard_size])
        plans.append(ShardPlan(i // shard_size, chunk, shards.fingerprint(chunk, settings)))
    return plans


def _connect_ray(address: str | None) -> bool:
    """Join the cluster at address (or RAY_ADDRESS, e.g. under `ray job submit`), else start a local one.

    Returns True when this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, logging_level=logging.ERROR, include_dashboard=False)
    return True


MAX_ACTORS_PER_GPU = 16  # the sharing measured on an H200; each process holds its own CUDA context (GPU memory)


def _actor_resources(n_actors: int | None, n_shards: int, threads: int = 1,
                     use_gpus: bool = True) -> tuple[int, float, float, int]:
    """(actors, num_cpus each, num_gpus each of the first on_gpu, on_gpu): one actor per CPU by default
    (threads_per_actor CPUs each, or a share of one where more actors were asked for than the cluster has
    CPUs), on GPU clusters too, where up to MAX_ACTORS_PER_GPU of them share each GPU as fractional num_gpus
    and any more run on CPUs. One actor per GPU leaves the cores idle: the coder is one CPU thread per
    process, so on an H200 node 16 processes sharing the GPU encode 7.8x faster than one (docs/BENCHMARKS.md,
    "CUDA and CPU code the same bytes"). Shares are rounded down, so the actors never ask for more than the
    cluster has (Ray would leave the extra ones unscheduled and the job waiting)."""
    import ray

    res = ray.cluster_resources()
    gpus, cpus = (int(res.get("GPU", 0)) if use_gpus else 0), float(res.get("CPU", 1))
    k = max(1, min(n_actors or int(cpus // threads) or 1, n_shards))
    per = min(threads, cpus / k)
    num_cpus = float(int(per)) if per >= 1 else (math.floor(per * 100) / 100 or 0.01)
    on_gpu = min(k, MAX_ACTORS_PER_GPU * gpus)
    per_gpu = -(-on_gpu // gpus) if on_gpu else 0  # actors on the fullest GPU: a share must fit in one GPU
    num_gpus = math.floor(10000 / per_gpu) / 10000 if on_gpu else 0.0
    return k, num_cpus, num_gpus, on_gpu


def _read_done_stats(fs: Any, root: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Footer metadata of the shards already written (parallel: one small ranged read each)."""

    def one(name: str) -> tuple[str, dict[str, Any]]:
        return name, shards.read_shard_meta(fs, f"{root}/{name}")

    with ThreadPoolExecutor(max_workers=16) as ex:
        return dict(ex.map(one, names))


def compress(
    src: str,
    dst: str,
    *,
    address: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    actors: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    codec: str = "bitswap",
    particles: int = 1,
    effort: int = 2,
    model: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_result: Callable[[ShardResult, list[Any]], None] | None = None,
    files: Sequence[SourceFile] | None = None,
    keep_smaller_originals: bool = True,
    verify_writes: bool = True,
    threads_per_actor: int | None = None,
    use_gpus: bool = True,
) -> Summary:
    """Compress every image under src into Parquet shards under dst; resumable, see the module doc.

    files: compress exactly these (already listed, keys relative to src) instead of listing src; the
    same files give the same plan (the job runner hands over only new and changed files this way).
    actors=0 runs the shards in this process without Ray (small jobs, debugging, memory:// sources).
    on_result(result, actor_handles) is called after each shard (tests use it to kill an actor).
    keep_smaller_originals: a file whose coded form would not be smaller is stored as its original bytes
    (restored byte-exact), so an archive never grows a file.
    verify_writes: decode every learned payload before it is written; one that does not decode back to
    its image (a codec bug) is stored as its original bytes instead, with the reason in the row's error.
    threads_per_actor: torch threads in each CPU actor, and the CPUs it holds (default 1: one actor per
    CPU, as many as there are shards). More threads per actor help little and risk much: a second thread
    made the codec 13% faster on an idle machine, while next to one busy process the one-actor pipeline
    took 225 s with two threads against 41 s with one (docs/BENCHMARKS.md, "Pipeline"). With actors=0 it
    sets the threads of this process (default: left as they are).
    use_gpus: let the actors share the cluster's GPUs (their networks run there; the coder stays on the
    CPU). False runs them on CPUs alone, which on the measured H200 node (16 cores) compressed with
    verification in 17% less time: 16 processes decode 2.2x faster on CPUs than sharing one GPU.
    particles: posterior samples per block (bitswap_core.api.compress; above 1: smaller, slower).
    effort: how hard the encoder fits each image's adaptation (bitswap_core.api.compress: 2 everything, 1 fast:
    1.4x the encode speed for 0.32% more bytes on the validation set).
    """
    import bitswap_core

    t0 = time.perf_counter()
    if files is None:
        exclude = DEFAULT_EXCLUDE if exclude is None else exclude
        files = list_sources(src, include or DEFAULT_INCLUDE, exclude, storage_options).files
    if not files:
        raise FileNotFoundError(f"no input images under {redact_url(src)}")
    settings = {
        "codec": codec,
        "model": model or "default",
        "max_pixels": max_pixels,
        "codec_version": bitswap_core.__version__,
        "keep_smaller_originals": keep_smaller_originals,
    }
    if particles != 1:  # (absent at 1, so the plans of runs made before the setting existed stay the same)
        settings["particles"] = particles
    if effort != 2:  # (absent at 2, likewise)
        settings["effort"] = effort
    plans = plan_shards(files, shard_size, settings)
    dst_fs, dst_root = open_fs(dst, storage_options)
    dst_root = dst_root.rstrip("/")
    dst_fs.makedirs(dst_root, exist_ok=True)

    existing = shards.list_shards(dst_fs, dst_root)
    planned = {p.name for p in plans}
    done = [p for p in plans if p.name in existing]
    todo = [p for p in plans if p.name not in existing]
    stale = sorted(set(existing) - planned)
    if todo or stale:
        shards.remove_manifest(dst_fs, dst_root)

    summary = Summary(shards_total=len(plans), shards_skipped=len(done))
    entries: dict[int, dict[str, Any]] = {}
    model_ids: set[str] = set()
    for name, meta in _read_done_stats(dst_fs, dst_root, [p.name for p in done]).items():
        stats = ShardStats.from_dict(meta["stats"])
        summary.stats.merge(stats)
        entries[meta["index"]] = _entry(name, meta["index"], meta, stats, existing[name])
        if meta.get("model_id"):
            model_ids.add(meta["model_id"])

    bar = _progress(progress, sum(len(p.files) for p in plans), summary.stats.images)
    run_bytes = 0
    t_run = time.perf_counter()

    def record(result: ShardResult) -> None:
        nonlocal run_bytes
        plan = plans[result.index]
        if result.error is None and result.data is not None:  # process-local DST: the driver writes it
            try:
                shards.write_atomic(dst_fs, dst_root, plan.name, result.data)
            except Exception as exc:  # noqa: BLE001 - reported as a failed shard
                result.error = f"write failed: {exc}"
        if result.error is not None:
            summary.shards_failed.append((plan.name, result.error))
            log.error("shard %s failed: %s", plan.name, result.error)
        else:
            summary.shards_written += 1
            summary.stats.merge(result.stats)
            meta = {"first_key": plan.first_key, "last_key": plan.last_key, "fingerprint": plan.fingerprint,
                    "model_id": result.model_id}  # fmt: skip
            entries[plan.index] = _entry(plan.name, plan.index, meta, result.stats, result.file_bytes)
            if result.model_id:
                model_ids.add(result.model_id)
        run_bytes += result.stats.original_bytes + result.stats.failed_bytes
        bar.update(len(plan.files))
        elapsed = time.perf_counter() - t_run
        bar.set_postfix_str(f"{run_bytes / 1e6 / elapsed:.2f} MB/s, shards {len(entries)}/{len(plans)}", refresh=False)

    worker_args = dict(codec=codec, particles=particles, effort=effort, model=model, max_pixels=max_pixels,
                       storage_options=storage_options, keep_smaller_originals=keep_smaller_originals,
                       verify_writes=verify_writes)
    if threads_per_actor is not None and threads_per_actor < 1:
        raise ValueError(f"threads_per_actor must be at least 1, not {threads_per_actor}")
    try:
        if todo and actors == 0:
            summary.actors, summary.cpus = 0, float(os.cpu_count() or 1)
            t_start = time.perf_counter()
            worker = ShardCompressor(src, dst, threads=threads_per_actor, **worker_args)
            summary.startup_seconds = time.perf_counter() - t_start
            for plan in todo:
                result = worker.compress_shard(plan, settings)
                record(result)
                if on_result:
                    on_result(result, [])
        elif todo:
            if is_process_local(open_fs(src, storage_options)[0]):
                raise ValueError("a memory:// source lives in this process only; use --actors 0 or real storage")
            summary.actors, summary.cpus, summary.gpus, summary.startup_seconds = _run_on_ray(
                src, dst, todo, settings, address, actors, worker_args, record, on_result, threads_per_actor, use_gpus
            )
    finally:
        bar.close()

    summary.stats.failures.sort()
    missing = [p for p in plans if p.index not in entries]
    for p in missing:
        if not any(name == p.name for name, _ in summary.shards_failed):
            summary.shards_failed.append((p.name, "no result (actor lost)"))
    if not missing:
        for name in stale:  # shards of an older plan: remove before the manifest makes the set official
            dst_fs.rm_file(f"{dst_root}/{name}")
        shards.write_manifest(dst_fs, dst_root, _manifest(src, settings, plans, entries, summary, model_ids))
        summary.manifest_written = True
        _clean_tmp(dst_fs, dst_root)
    summary.run_bytes = run_bytes
    summary.model_ids = sorted(model_ids)
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_on_ray(
    src: str,
    dst: str,
    todo: Sequence[ShardPlan],
    settings: Mapping[str, Any],
    address: str | None,
    n_actors: int | None,
    worker_args: Mapping[str, Any],
    record: Callable[[ShardResult], None],
    on_result: Callable[[ShardResult, list[Any]], None] | None,
    threads_per_actor: int | None = None,
    use_gpus: bool = True,
) -> tuple[int, float, float, float]:
    """Run the shards on an ActorPool; returns (actors, CPUs held, GPUs held, start-up seconds)."""
    import ray
    from ray.util import ActorPool

    t0 = time.perf_counter()
    started = _connect_ray(address)
    try:
        k, num_cpus, num_gpus, on_gpu = _actor_resources(n_actors, len(todo), threads_per_actor or 1, use_gpus)
        remote_cls = ray.remote(ShardCompressor)
        handles = [
            remote_cls.options(
                num_cpus=num_cpus,
                num_gpus=num_gpus if i < on_gpu else 0.0,
                max_restarts=ACTOR_MAX_RESTARTS,
                max_task_retries=ACTOR_MAX_RESTARTS,
            ).remote(src, dst, threads=threads_per_actor or max(1, int(num_cpus)),
                     device="cuda" if i < on_gpu else "cpu", **worker_args)
            for i in range(k)
        ]
        try:  # surfaces a model that fails to load now, rather than as lost actors later
            ray.get([h.info.remote() for h in handles])
        except ray.exceptions.RayError as exc:
            raise RuntimeError(f"the compression actors could not start: {exc}") from exc
        startup = time.perf_counter() - t0
        pool = ActorPool(handles)
        for plan in todo:
            pool.submit(lambda actor, p: actor.compress_shard.remote(p, dict(settings)), plan)
        while pool.has_next():
            try:
                result: ShardResult = pool.get_next_unordered()
            except ray.exceptions.RayError as exc:  # actor gone for good: its shard shows up as missing
                log.error("an actor failed past its restarts: %s", type(exc).__name__)
                continue
            record(result)
            if on_result:
                on_result(result, handles)
        for h in handles:
            ray.kill(h, no_restart=True)
        return k, k * num_cpus, on_gpu * num_gpus, startup
    finally:
        if started:
            ray.shutdown()


def _entry(name: str, index: int, meta: Mapping[str, Any], stats: ShardStats, file_bytes: int = 0) -> dict[str, Any]:
    counts = stats.to_dict()
    counts.pop("failures", None)
    return {
        "file": name,
        "index": index,
        "rows": stats.images,
        "first_key": meta["first_key"],
        "last_key": meta["last_key"],
        "fingerprint": meta["fingerprint"],
        "model_id": meta.get("model_id"),
        "file_bytes": file_bytes,
        "stats": counts,
    }


def _manifest(
    src: str,
    settings: Mapping[str, Any],
    plans: Sequence[ShardPlan],
    entries: Mapping[int, dict[str, Any]],
    summary: Summary,
    model_ids: set[str],
) -> dict[str, Any]:
    totals = summary.stats.to_dict()
    failures = totals.pop("failures")
    return {
        "format": shards.ARCHIVE_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": redact_url(src),
        "settings": dict(settings),
        "model_id": sorted(model_ids)[0] if len(model_ids) == 1 else None,
        "model_ids": sorted(model_ids),
        "counts": totals,
        "failures": failures[:MANIFEST_MAX_FAILURES],
        "failures_total": len(failures),
        "shards": [entries[p.index] for p in plans],
    }


def _clean_tmp(fs: Any, root: str) -> None:
    """Remove temporaries left by crashed writers (only once every shard is in place)."""
    tmp = f"{root}/{shards.TMP_DIR}"
    fs.invalidate_cache(root)  # actors wrote here from other processes: do not trust a cached listing
    try:
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
    except FileNotFoundError:
        pass


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="compress", file=sys.stderr, dynamic_ncols=True)
