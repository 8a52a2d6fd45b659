"""A job through the real pipeline driver (in-process actors, the real codec) over a growing folder.

Skipped until pipeline.driver.compress takes `files=` (the job hands it the new and changed files only).
"""

from __future__ import annotations

import inspect
from collections import Counter

import pyarrow.parquet as pq
import pytest
from test_jobs_fakes import write_images

from jobs.report import compute_report, load_archive
from jobs.run import run_job
from jobs.spec import parse_spec

pd = pytest.importorskip("pipeline.driver")
if "files" not in inspect.signature(pd.compress).parameters:
    pytest.skip("pipeline.driver.compress has no files= parameter yet (see docs/JOBS.md)", allow_module_level=True)


def test_real_pipeline_job_compresses_each_image_once(tmp_path):
    imgs = tmp_path / "images"
    write_images(imgs, ["a.png", "b.png", "c.jpg", "d_bad.png"])
    spec = parse_spec(
        {
            "name": "real",
            "destination": str(tmp_path / "dst"),
            "sources": [{"url": str(imgs)}],
            "shard_size": 2,
            "actors": 0,
            "compare": {"codecs": ["png"], "sample_size": 1},
        }
    )
    r1 = run_job(spec)
    assert (r1.planned, r1.images, r1.ok, r1.stored, r1.errors) == (4, 4, 2, 1, 1)
    write_images(imgs, ["e.png"], seed0=7)
    r2 = run_job(spec)
    assert (r2.planned, r2.images) == (1, 1)
    keys: Counter = Counter()
    for p in (tmp_path / "dst" / "runs").glob("*/shard-*.parquet"):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    assert sorted(keys) == ["a.png", "b.png", "c.jpg", "d_bad.png", "e.png"] and max(keys.values()) == 1
    rep = compute_report(load_archive(str(tmp_path / "dst")))
    assert rep["cumulative"]["images"] == 5 and rep["cumulative"]["bpd"] > 0
