"""A job through the real pipeline driver (in-process actors, the real codec) over a growing folder.

The job hands pipeline.driver.compress the new and changed files only (`files=`).
"""

from __future__ import annotations

import inspect
from collections import Counter

import pyarrow.parquet as pq
import pytest
from test_jobs_fakes import write_images

from jobs.report import compute_report, load_archive
from jobs.run import run_job
from jobs.spec import load_spec, parse_spec

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
            "always_code": True,  # tiny synthetic PNGs would otherwise be kept as their smaller originals
        }
    )
    r1 = run_job(spec)
    assert (r1.planned, r1.images, r1.ok, r1.stored, r1.errors) == (4, 4, 2, 1, 1)
    assert r1.cpus > 0 and r1.compute_cost_usd > 0 and r1.samples == 1
    write_images(imgs, ["e.png"], seed0=7)
    r2 = run_job(spec)
    assert (r2.planned, r2.images) == (1, 1)
    keys: Counter = Counter()
    for p in (tmp_path / "dst" / "runs").glob("*/shard-*.parquet"):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    assert sorted(keys) == ["a.png", "b.png", "c.jpg", "d_bad.png", "e.png"] and max(keys.values()) == 1
    rep = compute_report(load_archive(str(tmp_path / "dst")))
    assert rep["cumulative"]["images"] == 5 and rep["cumulative"]["bpd"] > 0


def test_real_pipeline_completes_a_crashed_run(tmp_path):
    """The pipeline's resume with the job's plan: the finished shard is kept, the rest written once."""
    import subprocess
    import sys

    from jobs.state import JobStore

    imgs = tmp_path / "images"
    names = write_images(imgs, [f"{i}.png" for i in range(5)])
    spec_path = tmp_path / "job.toml"
    spec_path.write_text(
        f'name = "real"\ndestination = "{tmp_path / "dst"}"\nshard_size = 2\nactors = 0\n'
        f'[[sources]]\nurl = "{imgs}"\n[compare]\nsample_size = 0\n'
    )
    child = (
        "import os, signal\n"
        "import pipeline.driver as pd\n"
        "orig = pd.compress\n"
        "def killing(src, dst, *, files=None, **k):\n"
        "    k['on_result'] = lambda r, h: os.kill(os.getpid(), signal.SIGKILL)  # dies after one shard\n"
        "    return orig(src, dst, files=files, **k)\n"
        "pd.compress = killing\n"
        "from jobs.spec import load_spec\n"
        "from jobs.run import run_job\n"
        f"run_job(load_spec({str(spec_path)!r}), sample=False)\n"
    )
    assert subprocess.run([sys.executable, "-c", child]).returncode == -9
    [first] = list((tmp_path / "dst" / "runs").glob("*/shard-*.parquet"))
    before = first.stat().st_mtime_ns
    r = run_job(load_spec(spec_path))
    store = JobStore(str(tmp_path / "dst"))
    crashed = store.records()[0]
    assert r.recovered == [crashed.run_id] and r.planned == 0
    assert (crashed.status, crashed.images, len(crashed.shards)) == ("ok", 5, 3) and "crashed" in crashed.note
    assert first.stat().st_mtime_ns == before  # the finished shard was skipped, not redone
    keys: Counter = Counter()
    for p in (tmp_path / "dst" / "runs").glob("*/shard-*.parquet"):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    assert sorted(keys) == names and max(keys.values()) == 1
