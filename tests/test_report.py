"""Reports: every figure checked against sums taken independently over the shards with pyarrow."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_jobs_fakes import FakeDriver, write_images

from jobs import cli
from jobs.report import compute_report, load_archive, make_figures, render_html, render_markdown
from jobs.run import run_job
from jobs.spec import parse_spec
from jobs.state import JobStore

SCHEMA = pa.schema([
    ("key", pa.string()), ("payload", pa.large_binary()), ("codec", pa.string()), ("model_id", pa.string()),
    ("format", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("mode", pa.string()),
    ("raw_bytes", pa.int64()), ("original_bytes", pa.int64()), ("compressed_bytes", pa.int64()),
    ("bpd", pa.float64()), ("pixel_digest", pa.string()), ("file_sha256", pa.string()),
    ("encode_seconds", pa.float64()), ("status", pa.string()), ("error", pa.string()),
])  # fmt: skip


def synthetic_rows(rng, n, start):
    """Rows in the pipeline's schema: mostly coded RGB/L images, some stored JPEGs, some errors."""
    rows = []
    for i in range(start, start + n):
        w, h = int(rng.integers(8, 300)), int(rng.integers(8, 300))
        kind = rng.choice(["ok", "ok", "ok", "ok", "stored", "error"])
        mode = str(rng.choice(["RGB", "L"]))
        dims = w * h * (3 if mode == "RGB" else 1)
        orig = int(dims * rng.uniform(0.3, 0.9))
        row = {"key": f"img/{i:05d}.png", "payload": None, "codec": None, "model_id": "m1", "format": "PNG",
               "width": w, "height": h, "mode": mode, "raw_bytes": dims, "original_bytes": orig,
               "compressed_bytes": 0, "bpd": None, "pixel_digest": None, "file_sha256": f"{i:064x}",
               "encode_seconds": 0.01, "status": kind, "error": None}  # fmt: skip
        if kind == "ok":
            comp = int(dims * rng.uniform(0.3, 0.6))
            row.update(codec="bitswap" if mode == "RGB" else "fallback:webp", payload=b"x" * comp,
                       compressed_bytes=comp, bpd=comp * 8 / dims)
        elif kind == "stored":
            row.update(codec="stored", format="JPEG", payload=b"j" * orig, compressed_bytes=orig,
                       bpd=orig * 8 / dims)  # fmt: skip
        else:
            row.update(error="unreadable image: truncated", raw_bytes=None, width=None, height=None, mode=None)
        rows.append(row)
    return rows


def test_report_over_parquet_written_with_pyarrow(tmp_path):
    rng = np.random.default_rng(3)
    dst = tmp_path / "archive"
    dst.mkdir()
    for s in range(3):
        t = pa.Table.from_pylist(synthetic_rows(rng, 40, s * 40), schema=SCHEMA)
        pq.write_table(t, dst / f"shard-{s:05d}-{s:016x}.parquet", row_group_size=8)
    (dst / "_tmp").mkdir()  # a crashed writer's leftover is not a shard
    pq.write_table(pa.Table.from_pylist(synthetic_rows(rng, 5, 999), schema=SCHEMA), dst / "_tmp" / "x.parquet")

    rep = compute_report(load_archive(str(dst), storage_usd_per_gb_month=0.02))
    t = pa.concat_tables(pq.read_table(p) for p in sorted(dst.glob("shard-*.parquet")))
    ok = pc.equal(t["status"], "ok")
    archived = pc.invert(pc.equal(t["status"], "error"))
    c = rep["cumulative"]
    assert c["images"] == t.num_rows == 120
    assert c["ok"] == pc.sum(ok).as_py()
    assert c["stored"] == pc.sum(pc.equal(t["status"], "stored")).as_py()
    assert c["errors"] == pc.sum(pc.equal(t["status"], "error")).as_py()
    assert c["raw_bytes"] == pc.sum(t.filter(ok)["raw_bytes"]).as_py()
    assert c["original_bytes"] == pc.sum(t.filter(archived)["original_bytes"]).as_py()
    assert c["compressed_bytes"] == pc.sum(t["compressed_bytes"]).as_py()
    assert c["ratio"] == pytest.approx(c["original_bytes"] / c["compressed_bytes"])
    by_codec = t.filter(archived).group_by("codec").aggregate([("codec", "count"), ("compressed_bytes", "sum")])
    assert c["routes"] == {r["codec"]: [r["codec_count"], r["compressed_bytes_sum"]] for r in by_codec.to_pylist()}
    assert set(c["routes"]) == {"bitswap", "fallback:webp", "stored"}
    okt = t.filter(ok)
    bands = np.where(np.array(okt["mode"].to_pylist()) == "RGB", 3, 1)
    dims = (okt["width"].to_numpy().astype(np.int64) * okt["height"].to_numpy() * bands).sum()
    assert c["bpd"] == pytest.approx(8 * pc.sum(okt["compressed_bytes"]).as_py() / dims)
    assert c["bpd_mean"] == pytest.approx(pc.mean(okt["bpd"]).as_py())
    assert c["bpd_p50"] == pytest.approx(float(np.quantile(okt["bpd"].to_numpy(), 0.5)))
    assert c["bpd_p90"] == pytest.approx(float(np.quantile(okt["bpd"].to_numpy(), 0.9)))
    files = sum(p.stat().st_size for p in dst.glob("shard-*.parquet"))
    assert c["shard_bytes"] == files and c["shards"] == 3
    opts = {o["name"]: o for o in rep["storage"]["options"]}
    assert set(opts) == {"originals", "bitswap"}  # no sample: no codec estimates
    assert opts["bitswap"]["usd_month"] == pytest.approx(files / 1e9 * 0.02)
    assert len(rep["failures"]) == c["errors"]
    md = render_markdown(rep)
    assert f"| images | {c['images']} ({c['ok']} coded" in md and "No codec sample" in md
    assert f"fallback:webp {c['routes']['fallback:webp'][0]} (" in md


@pytest.fixture(scope="module")
def job_archive(tmp_path_factory):
    """A job with two runs over a growing folder, a changed file, a JPEG, a corrupt file, codec samples."""
    tmp = tmp_path_factory.mktemp("reportjob")
    imgs = tmp / "images"
    write_images(imgs, ["a.png", "b.png", "c.png", "d.jpg", "e_bad.png", "f.png"])
    spec = parse_spec({"name": "rep", "destination": str(tmp / "dst"), "sources": [{"url": str(imgs)}],
                       "shard_size": 4, "compare": {"codecs": ["png", "webp"], "sample_size": 3},
                       "cost": {"storage_usd_per_gb_month": 0.05, "cpu_usd_per_hour": 0.5}})  # fmt: skip
    r1 = run_job(spec, driver=FakeDriver())
    write_images(imgs, ["g.png", "h.png"], seed0=20)
    write_images(imgs, ["a.png"], seed0=40)  # changed: archived again, the first version is superseded
    r2 = run_job(spec, driver=FakeDriver())
    return tmp / "dst", [r1, r2]


def test_job_report_matches_independent_sums(job_archive):
    dst, recs = job_archive
    rep = compute_report(load_archive(str(dst)))
    assert [r["run_id"] for r in rep["runs"]] == [r.run_id for r in recs]
    per_run = {}
    for rec in recs:
        paths = sorted((dst / "runs" / rec.run_id).glob("shard-*.parquet"))
        per_run[rec.run_id] = (pa.concat_tables(pq.read_table(p) for p in paths),
                               sum(p.stat().st_size for p in paths))  # fmt: skip
    for r in rep["runs"]:
        t, size = per_run[r["run_id"]]
        assert r["images"] == t.num_rows
        assert r["compressed_bytes"] == pc.sum(t["compressed_bytes"]).as_py()
        assert r["raw_bytes"] == pc.sum(t.filter(pc.equal(t["status"], "ok"))["raw_bytes"]).as_py()
        assert r["shard_bytes"] == size
        assert r["storage_usd_month"] == pytest.approx(size / 1e9 * 0.05)
    assert [r["images"] for r in rep["runs"]] == [6, 3]

    # Cumulative: the latest version of each key (a.png from run 2).
    latest = {}
    for rec in recs:
        for row in per_run[rec.run_id][0].to_pylist():
            latest[row["key"]] = row
    c = rep["cumulative"]
    assert c["images"] == len(latest) == 8 and c["superseded_rows"] == 1 and c["rows_all_versions"] == 9
    assert c["errors"] == 1 and c["stored"] == 1 and c["ok"] == 6
    assert c["compressed_bytes"] == sum(r["compressed_bytes"] for r in latest.values())
    assert c["original_bytes"] == sum(r["original_bytes"] for r in latest.values() if r["status"] != "error")
    ok = [r for r in latest.values() if r["status"] == "ok"]
    assert c["bpd"] == pytest.approx(8 * sum(r["compressed_bytes"] for r in ok)
                                     / sum(r["width"] * r["height"] * 3 for r in ok))  # fmt: skip
    assert c["bpd_mean"] == pytest.approx(np.mean([r["bpd"] for r in ok]))
    assert c["shard_bytes"] == sum(s for _, s in per_run.values())
    assert c["compute_cost_usd"] == pytest.approx(sum(r.compute_cost_usd for r in recs))

    # Codec estimates: each run's sample bpd applied to its coded dims (+ stored files as they are).
    store = JobStore(str(dst))
    samples = store.read_samples()
    assert sorted(samples) == [r.run_id for r in recs] and rep["sample"]["images"] == 6
    expect = 0.0
    for rec in recs:
        s = samples[rec.run_id].to_pylist()
        bpd = 8 * sum(x["png_bytes"] for x in s) / sum(x["dims"] for x in s)
        live = [r for r in per_run[rec.run_id][0].to_pylist() if latest[r["key"]] == r]
        expect += bpd * sum(r["width"] * r["height"] * 3 for r in live if r["status"] == "ok") / 8
        expect += sum(r["original_bytes"] for r in live if r["status"] == "stored")
    opts = {o["name"]: o for o in rep["storage"]["options"]}
    assert opts["png"]["bytes"] == pytest.approx(expect)
    assert opts["png"]["estimate"] and opts["webp"]["estimate"] and not opts["bitswap"]["estimate"]
    assert rep["failures"] == [{"key": "e_bad.png", "error": rep["failures"][0]["error"]}]


def test_html_is_one_self_contained_file(job_archive, tmp_path):
    dst, _ = job_archive
    out = tmp_path / "report.html"
    assert cli.main(["report", str(dst), "--format", "html", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    imgs = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r'(src|href)="(https?:|//)', page)  # nothing fetched when opened offline
    assert "estimate from a sample of 6 images" in page and "WebP lossless (estimate)" in page


def test_markdown_and_json_outputs(job_archive, tmp_path, capsys):
    dst, recs = job_archive
    out = tmp_path / "r.md"
    assert cli.main(["report", str(dst), "--out", str(out)]) == 0
    md = out.read_text()
    for name in ("bpd_histogram", "savings_by_codec", "throughput", "cumulative_savings"):
        assert f"](r-{name}.png)" in md and (tmp_path / f"r-{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "estimate from a sample of 6 images" in md and recs[1].run_id in md
    assert cli.main(["report", str(dst), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cumulative"]["images"] == 8 and len(data["runs"]) == 2
    assert cli.main(["report", str(dst.parent / "nothing-here")]) == 2


def test_report_on_a_job_with_nothing_archived_yet(tmp_path):
    (tmp_path / "images").mkdir()
    spec = parse_spec({"name": "empty", "destination": str(tmp_path / "dst"),
                       "sources": [{"url": str(tmp_path / "images")}]})  # fmt: skip
    rec = run_job(spec, driver=FakeDriver())
    assert (rec.planned, rec.images, rec.status) == (0, 0, "ok")
    rep = compute_report(load_archive(str(tmp_path / "dst")))
    assert rep["cumulative"]["images"] == 0 and rep["cumulative"]["bpd"] is None
    figs = make_figures(rep)
    assert "bpd_histogram" not in figs
    assert "</html>" in render_html(rep, figs) and "| images | 0 " in render_markdown(rep)
