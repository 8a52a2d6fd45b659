"""Reports on an archive: what it holds, what it cost, and what it saves, per run and in total.

Every figure comes from two places only, so anyone can check it with a Parquet reader: the shards' rows
(statistics columns, never the payloads) and the job's run records and codec samples. Definitions:

- images: rows; ok = coded by pixels, stored = original bytes kept (JPEG, ...), errors = not archived.
- original bytes: input files of archived rows (ok + stored); raw bytes: decoded pixels of ok rows.
- compressed bytes: payloads of ok + stored rows; shard bytes: the Parquet files as stored.
- ratio: original / compressed bytes; bpd: 8 * payload bytes / (width * height * channels) of ok rows,
  both per image (mean, percentiles, histogram) and in aggregate.
- throughput: original bytes (and images) per second of the pipeline's wall time in the run.
- storage per month: bytes * price per GB-month (1 GB = 1e9 bytes). PNG, WebP and JPEG-XL are estimates:
  each run's sample gives bits per dimension for each codec, applied to that run's coded dimensions
  (stored images count at their original size for every option).
- cumulative: the archive as it stands: for a key archived more than once (its file changed), only the
  latest version counts as an image; storage counts every shard, older versions included.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from jobs.state import JobStore, RunRecord, column_lists, read_shard_rows, utcnow

GB = 1e9
CODEC_LABELS = {"png": "PNG", "webp": "WebP lossless", "jxl": "JPEG-XL lossless"}
DEFAULT_STORAGE_PRICE = 0.023  # used for a bare pipeline archive, which has no job spec
HIST_BINS = 40


@dataclass
class RunData:
    """One run as the report sees it: its record, its rows, its codec sample."""

    record: RunRecord
    rows: pa.Table
    samples: pa.Table | None = None
    live: list[bool] = field(default_factory=list)  # per row: the key's latest archived version


@dataclass
class Archive:
    """Everything a report is computed from."""

    destination: str
    kind: str  # "job" (has run records) or "archive" (a bare `pipeline compress` output)
    runs: list[RunData]
    storage_usd_per_gb_month: float
    prices_from: str


# --------------------------------------------------------------------------------------------------------
# Loading


def load_archive(destination: str, *, storage_usd_per_gb_month: float | None = None) -> Archive:
    """Read run records, shard statistics and samples of a job destination (or a bare archive)."""
    store = JobStore(destination)
    if not store.is_job():
        return _load_bare(store, storage_usd_per_gb_month)
    records = store.records()
    index = store.load_index()
    samples = store.read_samples()
    runs = []
    for rec in records:
        rows = _run_rows(store, rec)
        keys, shards = rows.column("key").to_pylist(), rows.column("shard").to_pylist()
        live = []
        for k, s in zip(keys, shards):
            e = index.get(k)
            live.append(e is not None and e.run_id == rec.run_id and e.shard == s)
        runs.append(RunData(rec, rows, samples.get(rec.run_id), live))
    price, source = storage_usd_per_gb_month, "command line"
    if price is None:
        last = next((r for r in reversed(records) if r.spec.get("cost")), None)
        price = float(last.spec["cost"]["storage_usd_per_gb_month"]) if last else DEFAULT_STORAGE_PRICE
        source = f"job spec of run {last.run_id}" if last else "default list price"
    return Archive(store.url(), "job", runs, price, source)


def _run_rows(store: JobStore, rec: RunRecord) -> pa.Table:
    """Rows of the shards a run recorded (a finished run) or of every finished shard (a running one)."""
    names = [s.get("name") for s in rec.spec.get("sources", [])] or [None]
    tables = []
    listed = set(rec.shards)
    for name in dict.fromkeys(names):
        folder = store.path("runs", rec.run_id, *([name] if name else []))
        t, _ = read_shard_rows(store.fs, folder, prefix=f"{name}/" if name else "")
        if rec.finished and t.num_rows:
            rel = [f"{name}/{s}" if name else s for s in t.column("shard").to_pylist()]
            t = t.set_column(t.schema.get_field_index("shard"), "shard", pa.array(rel, pa.string()))
            # Only the shards the record lists: a shard that appeared later (a stalled holder) is not ours.
            t = t.filter(pa.array([s in listed for s in rel]))
        tables.append(t)
    return pa.concat_tables(tables, promote_options="default")


def _load_bare(store: JobStore, price: float | None) -> Archive:
    from pipeline.shards import read_manifest

    rows, shards = read_shard_rows(store.fs, store.root)
    if not shards:
        raise FileNotFoundError(f"no job records and no shards in {store.url()}")
    try:
        manifest = read_manifest(store.fs, store.root)
        created, complete = manifest.get("created") or "", True
    except (FileNotFoundError, ValueError):
        created, complete = "", False
    rec = RunRecord(
        run_id="archive",
        seq=1,
        job="(pipeline archive)",
        spec_hash="",
        started_at=created,
        status="ok" if complete else "incomplete",
        shards=[n for n, _ in shards],
        shard_bytes=sum(s for _, s in shards),
    )
    rd = RunData(rec, rows, None, [True] * rows.num_rows)
    p = DEFAULT_STORAGE_PRICE if price is None else price
    return Archive(store.url(), "archive", [rd], p, "command line" if price is not None else "default list price")


# --------------------------------------------------------------------------------------------------------
# Figures


def _bands(mode: str | None) -> int:
    from PIL import Image

    try:
        return int(Image.getmodebands(mode or ""))
    except (ValueError, KeyError, TypeError):
        return 0


def row_stats(rows: pa.Table, mask: list[bool] | None = None) -> dict[str, Any]:
    """Counts, byte sums and bpd over rows (those where mask is True)."""
    key, status, mode, w, h, raw, orig, comp, bpd, codec = column_lists(
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
            "bpd",
            "codec",
        ),
    )
    s: dict[str, Any] = {
        "images": 0,
        "ok": 0,
        "stored": 0,
        "errors": 0,
        "raw_bytes": 0,
        "original_bytes": 0,
        "compressed_bytes": 0,
        "coded_bytes": 0,
        "coded_dims": 0,
        "stored_original_bytes": 0,
        "bpd_values": [],
        "routes": {},  # codec (bitswap, fallback:webp, ..., stored) -> [images, compressed bytes]
    }
    for i in range(rows.num_rows):
        if mask is not None and not mask[i]:
            continue
        s["images"] += 1
        st = status[i]
        if st == "ok":
            s["ok"] += 1
            s["raw_bytes"] += int(raw[i] or 0)
            s["coded_bytes"] += int(comp[i] or 0)
            s["coded_dims"] += int(w[i] or 0) * int(h[i] or 0) * _bands(mode[i])
            if bpd[i] is not None:
                s["bpd_values"].append(float(bpd[i]))
        elif st == "stored":
            s["stored"] += 1
            s["stored_original_bytes"] += int(orig[i] or 0)
        else:
            s["errors"] += 1
            continue
        s["original_bytes"] += int(orig[i] or 0)
        s["compressed_bytes"] += int(comp[i] or 0)
        route = s["routes"].setdefault(codec[i] or st, [0, 0])
        route[0] += 1
        route[1] += int(comp[i] or 0)
    v = sorted(s["bpd_values"])
    s["ratio"] = s["original_bytes"] / s["compressed_bytes"] if s["compressed_bytes"] else None
    s["raw_ratio"] = s["raw_bytes"] / s["coded_bytes"] if s["coded_bytes"] else None
    s["bpd"] = 8 * s["coded_bytes"] / s["coded_dims"] if s["coded_dims"] else None
    s["bpd_mean"] = sum(v) / len(v) if v else None
    for q in (10, 50, 90):
        s[f"bpd_p{q}"] = _quantile(v, q / 100) if v else None
    return s


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), on an already sorted list."""
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def sample_bpd(samples: list[pa.Table], codecs: list[str]) -> dict[str, dict[str, Any]]:
    """Per codec: bits per dimension over the sampled images it coded, and Bit-Swap's on the same images."""
    out: dict[str, dict[str, Any]] = {}
    for c in codecs:
        n = dims = size = mine = 0
        for t in samples:
            if f"{c}_bytes" not in t.column_names:
                continue
            for d, b, bs in zip(*column_lists(t, ("dims", f"{c}_bytes", "bitswap_bytes"))):
                if b is None or not d or bs is None:
                    continue
                n, dims, size, mine = n + 1, dims + int(d), size + int(b), mine + int(bs)
        if n:
            out[c] = {"images": n, "bpd": 8 * size / dims, "bitswap_bpd": 8 * mine / dims}
    return out


def _codecs_of(archive: Archive) -> list[str]:
    out: list[str] = []
    for r in archive.runs:
        if r.samples is not None:
            for name in r.samples.column_names:
                if name.endswith("_bytes") and name[:-6] in CODEC_LABELS and name[:-6] not in out:
                    out.append(name[:-6])
    return out


def _estimate(basis: dict[str, Any] | None, s: dict[str, Any]) -> float | None:
    """Bytes a codec would need for rows with stats s: sample bpd x coded dims, stored files as they are."""
    if basis is None:
        return None
    return basis["bpd"] * s["coded_dims"] / 8 + s["stored_original_bytes"]


def compute_report(archive: Archive) -> dict[str, Any]:
    """Every number the report shows (also what `--format json` prints)."""
    price = archive.storage_usd_per_gb_month
    codecs = _codecs_of(archive)
    samples = [r.samples for r in archive.runs if r.samples is not None]
    pooled = sample_bpd(samples, codecs)
    codecs = [c for c in codecs if c in pooled]  # codecs measured on at least one image
    runs: list[dict[str, Any]] = []
    series = {"original": 0, "shard": 0, **{c: 0.0 for c in codecs}}
    live_est = dict.fromkeys(codecs, 0.0)
    for rd in archive.runs:
        rec = rd.record
        s = row_stats(rd.rows)
        live = row_stats(rd.rows, rd.live)
        own = sample_bpd([rd.samples], codecs) if rd.samples is not None else {}
        est = {}
        for c in codecs:
            basis = own.get(c) or pooled[c]  # a run without a sample borrows the pooled figure
            est[c] = _estimate(basis, s)
            live_est[c] += _estimate(basis, live) or 0.0
            series[c] += est[c] or 0.0
        series["original"] += s["original_bytes"]
        series["shard"] += rec.shard_bytes
        secs = rec.compress_seconds or None
        runs.append(
            {
                "run_id": rec.run_id,
                "status": rec.status,
                "started_at": rec.started_at,
                "ended_at": rec.ended_at,
                "spec_hash": rec.spec_hash,
                "planned": rec.planned,
                "error": rec.error,
                **{k: v for k, v in s.items() if k != "bpd_values"},
                "shard_bytes": rec.shard_bytes,
                "shards": len(rec.shards),
                "compress_seconds": secs,
                "wall_seconds": rec.wall_seconds or None,
                "images_per_s": s["images"] / secs if secs else None,
                "mb_per_s": s["original_bytes"] / 1e6 / secs if secs else None,
                "compute_cost_usd": rec.compute_cost_usd,
                "gpus": rec.gpus,
                "cpus": rec.cpus,
                "samples": max((v["images"] for v in own.values()), default=0),
                "sample_bpd": {c: v["bpd"] for c, v in own.items()},
                "estimates_bytes": est,
                "storage_usd_month": rec.shard_bytes / GB * price,
                "originals_usd_month": s["original_bytes"] / GB * price,
                "cumulative_original_bytes": series["original"],
                "cumulative_shard_bytes": series["shard"],
                "cumulative_estimates_bytes": {c: series[c] for c in codecs},
                "failures": [
                    {"key": k, "error": e}
                    for k, st, e in zip(*column_lists(rd.rows, ("key", "status", "error")))
                    if st not in ("ok", "stored")
                ],
            }
        )
    tables = [rd.rows for rd in archive.runs if rd.rows.num_rows]
    table = (
        pa.concat_tables(tables, promote_options="default") if tables else pa.table({"key": pa.array([], pa.string())})
    )
    mask = [x for rd in archive.runs if rd.rows.num_rows for x in rd.live]
    cum = row_stats(table, mask)
    every = row_stats(table)
    shard_bytes = sum(r["shard_bytes"] for r in runs)
    n_sample = max((v["images"] for v in pooled.values()), default=0)
    options = [{"name": "originals", "label": "Original files", "bytes": cum["original_bytes"], "estimate": False}]
    options += [
        {"name": c, "label": f"{CODEC_LABELS[c]} (estimate)", "bytes": live_est[c], "estimate": True} for c in codecs
    ]
    options.append(
        {
            "name": "bitswap",
            "label": "Bit-Swap archive (Parquet shards)",
            "bytes": shard_bytes,
            "estimate": False,
        }
    )
    for o in options:
        o["usd_month"] = o["bytes"] / GB * price
        o["saving_vs_originals"] = 1 - o["bytes"] / cum["original_bytes"] if cum["original_bytes"] else None
    return {
        "title": _title(archive),
        "destination": archive.destination,
        "kind": archive.kind,
        "generated_at": utcnow(),
        "runs": runs,
        "cumulative": {
            **{k: v for k, v in cum.items() if k != "bpd_values"},
            "rows_all_versions": every["images"],
            "superseded_rows": every["images"] - cum["images"],
            "shard_bytes": shard_bytes,
            "shards": sum(r["shards"] for r in runs),
            "compress_seconds": sum(r["compress_seconds"] or 0 for r in runs),
            "compute_cost_usd": sum(r["compute_cost_usd"] or 0 for r in runs),
            "errors_all_runs": sum(r["errors"] for r in runs),
        },
        "bpd_values": cum["bpd_values"],
        "storage": {"price_usd_per_gb_month": price, "prices_from": archive.prices_from, "options": options},
        "sample": {"images": n_sample, "codecs": codecs, "by_codec": pooled},
        "failures": [f for r in runs for f in r["failures"]],
    }


def _title(archive: Archive) -> str:
    if archive.kind == "job" and archive.runs:
        return f"Archive report: job {archive.runs[-1].record.job}"
    return "Archive report"


# --------------------------------------------------------------------------------------------------------
# Plots (matplotlib, PNG)


def make_figures(rep: dict[str, Any]) -> dict[str, bytes]:
    """PNG plots keyed by name; empty when matplotlib is missing (the report says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    figs: dict[str, bytes] = {}

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        figs[name] = buf.getvalue()

    if rep["bpd_values"]:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.hist(rep["bpd_values"], bins=HIST_BINS, color="#4c72b0")
        mean = rep["cumulative"]["bpd_mean"]
        ax.axvline(mean, color="#c44e52", linestyle="--", label=f"mean {mean:.3f}")
        for c, v in rep["sample"]["by_codec"].items():
            ax.axvline(v["bpd"], color="#777", linestyle=":", linewidth=1)
            ax.text(v["bpd"], ax.get_ylim()[1] * 0.95, f" {CODEC_LABELS[c]}*", rotation=90, va="top", fontsize=7)
        ax.set_xlabel("bits per dimension (per image)")
        ax.set_ylabel("images")
        ax.set_title(f"Bits per dimension, {len(rep['bpd_values'])} coded images")
        ax.legend(loc="upper right", fontsize=8)
        save(fig, "bpd_histogram")

    opts = rep["storage"]["options"]
    if opts and rep["cumulative"]["original_bytes"]:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        labels = [o["label"].replace(" (estimate)", "*").replace(" (Parquet shards)", "") for o in opts]
        vals = [o["usd_month"] for o in opts]
        colors = ["#999"] + ["#8172b2"] * (len(opts) - 2) + ["#55a868"]
        bars = ax.barh(labels, vals, color=colors[: len(opts)])
        for b, o in zip(bars, opts):
            sv = o["saving_vs_originals"]
            ax.text(
                b.get_width(),
                b.get_y() + b.get_height() / 2,
                f" ${o['usd_month']:.4g}/mo" + (f" ({sv:+.0%})" if sv and o["name"] != "originals" else ""),
                va="center",
                fontsize=8,
            )
        ax.invert_yaxis()
        ax.set_xlabel("storage cost, USD per month")
        n = rep["sample"]["images"]
        ax.set_title("Storage by codec" + (f" (* estimate from a sample of {n} images)" if n else ""))
        ax.set_xlim(0, max(vals) * 1.35 if max(vals) else 1)
        save(fig, "savings_by_codec")

    runs = [r for r in rep["runs"] if r["images"]]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        xs = list(range(1, len(runs) + 1))
        ax.bar(xs, [r["mb_per_s"] or 0 for r in runs], color="#4c72b0")
        ax.set_xticks(xs, [r["run_id"].split("-")[0].lstrip("0") or "0" for r in runs], fontsize=8)
        ax.set_xlabel("run")
        ax.set_ylabel("MB/s of original files")
        ax.set_title("Throughput per run")
        save(fig, "throughput")

    all_runs = rep["runs"]
    if all_runs:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        xs = list(range(1, len(all_runs) + 1))
        ax.plot(
            xs,
            [r["cumulative_original_bytes"] / GB for r in all_runs],
            "o-",
            color="#999",
            label="original files",
        )
        for c in rep["sample"]["codecs"]:
            ax.plot(
                xs,
                [r["cumulative_estimates_bytes"][c] / GB for r in all_runs],
                ".:",
                label=f"{CODEC_LABELS[c]}*",
            )
        ax.plot(
            xs,
            [r["cumulative_shard_bytes"] / GB for r in all_runs],
            "o-",
            color="#55a868",
            label="Bit-Swap archive",
        )
        ax.set_xticks(xs, [r["run_id"].split("-")[0].lstrip("0") or "0" for r in all_runs], fontsize=8)
        ax.set_xlabel("run")
        ax.set_ylabel("GB stored")
        ax.set_title("Cumulative storage across runs (* estimate)")
        ax.legend(fontsize=8)
        save(fig, "cumulative_savings")
    return figs


# --------------------------------------------------------------------------------------------------------
# Rendering: one list of blocks, written as Markdown or as one self-contained HTML page


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def _f(v: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def _usd(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"${v:,.2f}" if abs(v) >= 1 else f"${v:.4g}"


def build_blocks(rep: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report's content as (kind, data) blocks: h1/h2/p/note/table/figure."""
    c = rep["cumulative"]
    st = rep["storage"]
    n = rep["sample"]["images"]
    b: list[tuple[str, Any]] = [("h1", rep["title"])]
    b.append(
        (
            "p",
            f"Destination `{rep['destination']}`; generated {rep['generated_at']}; "
            f"{len(rep['runs'])} run(s). Figures are computed from the shards' Parquet statistics"
            + (" and the job's run records." if rep["kind"] == "job" else "."),
        )
    )
    b.append(("h2", "Summary"))
    b.append(
        (
            "table",
            (
                ["", "value"],
                [
                    [
                        "images",
                        f"{c['images']} ({c['ok']} coded, {c['stored']} stored as original bytes, "
                        f"{c['errors']} failed)",
                    ],
                    [
                        "failures",
                        f"{c['errors']}"
                        + (
                            f" (latest versions; {c['errors_all_runs']} over all runs)"
                            if c["errors_all_runs"] != c["errors"]
                            else ""
                        ),
                    ],
                    ["original bytes", _fmt_bytes(c["original_bytes"])],
                    ["raw pixel bytes (coded images)", _fmt_bytes(c["raw_bytes"])],
                    ["compressed bytes (payloads)", _fmt_bytes(c["compressed_bytes"])],
                    [
                        "codecs (images, payload bytes)",
                        ", ".join(
                            f"{name} {n} ({_fmt_bytes(nb)})"
                            for name, (n, nb) in sorted(c["routes"].items(), key=lambda kv: -kv[1][1])
                        )
                        or "—",
                    ],
                    [
                        "stored bytes (Parquet shards)",
                        f"{_fmt_bytes(c['shard_bytes'])} in {c['shards']} shards",
                    ],
                    ["ratio (original / compressed)", _f(c["ratio"], ".3f")],
                    ["bits per dimension (aggregate)", _f(c["bpd"], ".4f")],
                    [
                        "bits per dimension per image: mean / p10 / p50 / p90",
                        " / ".join(_f(c[k], ".3f") for k in ("bpd_mean", "bpd_p10", "bpd_p50", "bpd_p90")),
                    ],
                    [
                        "compute time / cost",
                        f"{c['compress_seconds']:.1f} s / {_usd(c['compute_cost_usd'])}"
                        if rep["kind"] == "job"
                        else "n/a (not recorded by `pipeline compress`; run it as a job)",
                    ],
                ]
                + (
                    [
                        [
                            "superseded versions (changed files)",
                            f"{c['superseded_rows']} rows, kept in older shards",
                        ]
                    ]
                    if c["superseded_rows"]
                    else []
                ),
            ),
        )
    )
    b.append(("h2", "Storage cost per month"))
    rows = []
    for o in st["options"]:
        sv = o["saving_vs_originals"]
        rows.append(
            [
                o["label"],
                _fmt_bytes(o["bytes"]),
                _usd(o["usd_month"]),
                "—" if o["name"] == "originals" or sv is None else f"{sv:.1%}",
            ]
        )
    b.append(("table", (["storage", "bytes", "USD / month", "saving vs originals"], rows)))
    price_note = f"At {_usd(st['price_usd_per_gb_month'])} per GB-month ({st['prices_from']})."
    if n:
        by = rep["sample"]["by_codec"]
        names = ", ".join(CODEC_LABELS[c] for c in by)
        b.append(
            (
                "note",
                f"{names}: estimate from a sample of {n} images. Bits per dimension on the "
                "sample: "
                + "; ".join(
                    f"{CODEC_LABELS[c]} {v['bpd']:.3f} (Bit-Swap {v['bitswap_bpd']:.3f} on the same images)"
                    for c, v in by.items()
                )
                + ". Applied to the archive's coded dimensions; stored images count at their "
                "original size. " + price_note,
            )
        )
    else:
        b.append(
            (
                "note",
                "No codec sample was taken, so there is no estimate for PNG, WebP or JPEG-XL. " + price_note,
            )
        )
    b.append(("figure", ("savings_by_codec", "Storage cost by codec")))
    b.append(("figure", ("bpd_histogram", "Bits per dimension histogram")))
    b.append(("h2", "Runs"))
    rrows = []
    for r in rep["runs"]:
        rrows.append(
            [
                r["run_id"],
                r["status"],
                r["started_at"] or "",
                str(r["images"]),
                f"{r['ok']}/{r['stored']}/{r['errors']}",
                _fmt_bytes(r["raw_bytes"]),
                _fmt_bytes(r["original_bytes"]),
                _fmt_bytes(r["compressed_bytes"]),
                _f(r["ratio"], ".2f"),
                _f(r["bpd_mean"], ".3f"),
                _f(r["compress_seconds"], ".1f", " s"),
                _f(r["mb_per_s"], ".2f"),
                _f(r["images_per_s"], ".2f"),
                _usd(r["compute_cost_usd"]),
                _usd(r["storage_usd_month"]),
            ]
        )
    b.append(
        (
            "table",
            (
                [
                    "run",
                    "status",
                    "started",
                    "images",
                    "ok/stored/err",
                    "raw",
                    "original",
                    "compressed",
                    "ratio",
                    "bpd mean",
                    "time",
                    "MB/s",
                    "img/s",
                    "compute",
                    "storage / mo",
                ],
                rrows,
            ),
        )
    )
    for r in rep["runs"]:
        if r["error"]:
            b.append(("note", f"Run {r['run_id']}: {r['error']}"))
    b.append(("figure", ("throughput", "Throughput per run")))
    b.append(("figure", ("cumulative_savings", "Cumulative storage across runs")))
    if rep["failures"]:
        b.append(("h2", f"Failures ({len(rep['failures'])})"))
        shown = rep["failures"][:200]
        b.append(("table", (["key", "error"], [[f["key"], f["error"] or ""] for f in shown])))
        if len(rep["failures"]) > len(shown):
            b.append(("note", f"... and {len(rep['failures']) - len(shown)} more (rows with status 'error')."))
    return b


def render_markdown(rep: dict[str, Any], figures: dict[str, str] | None = None) -> str:
    """Markdown; `figures` maps a figure name to an image path to link (plots are left out otherwise)."""
    out: list[str] = []
    for kind, data in build_blocks(rep):
        if kind == "h1":
            out += [f"# {data}", ""]
        elif kind == "h2":
            out += [f"## {data}", ""]
        elif kind == "p":
            out += [data, ""]
        elif kind == "note":
            out += [f"> {data}", ""]
        elif kind == "table":
            head, rows = data
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join("---:" if i and _numeric(rows, i) else "---" for i in range(len(head))) + "|")
            for row in rows:
                out.append("| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |")
            out.append("")
        elif kind == "figure" and figures and data[0] in figures:
            out += [f"![{data[1]}]({figures[data[0]]})", ""]
    return "\n".join(out)


def _numeric(rows: list[list[Any]], col: int) -> bool:
    """Right-align a column whose cells all look like numbers, sizes or prices."""
    cells = [str(r[col]) for r in rows if col < len(r)]
    return bool(cells) and all(c[:1].isdigit() or c[:1] in "$-—" or c.startswith("n/a") for c in cells)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:72em;
padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} blockquote{color:#555;border-left:4px solid #ccc;margin:0.5em 0;padding:0.2em 1em}
code{background:#f3f3f3;padding:0 0.2em} img{max-width:100%;display:block;margin:0.5em 0 1.5em}
"""


def render_html(rep: dict[str, Any], figures: dict[str, bytes]) -> str:
    """One self-contained page: styles inline, plots embedded as base64 PNGs, no external requests."""
    e = html.escape
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(rep["title"])}'
        f"</title><style>{_CSS}</style></head><body>"
    ]
    for kind, data in build_blocks(rep):
        if kind == "h1":
            parts.append(f"<h1>{e(data)}</h1>")
        elif kind == "h2":
            parts.append(f"<h2>{e(data)}</h2>")
        elif kind == "p":
            text = e(data)
            while "`" in text:  # inline code spans
                text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
            parts.append(f"<p>{text}</p>")
        elif kind == "note":
            parts.append(f"<blockquote>{e(data)}</blockquote>")
        elif kind == "table":
            head, rows = data
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in row) + "</tr>")
            parts.append("</tbody></table>")
        elif kind == "figure" and data[0] in figures:
            b64 = base64.b64encode(figures[data[0]]).decode()
            parts.append(f'<figure><img alt="{e(data[1])}" src="data:image/png;base64,{b64}"></figure>')
    if not figures:
        parts.append("<p><em>Plots need matplotlib (pip install 'bitswap-archive[report]').</em></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
