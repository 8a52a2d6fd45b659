"""A job whose sources and destination are in S3 (a moto server on loopback, reached through the
standard AWS environment): run twice over a growing bucket, each image archived once; the lease lives
in the bucket too."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_jobs_fakes import FakeDriver, png_bytes

from jobs.report import compute_report, load_archive
from jobs.run import run_job
from jobs.spec import parse_spec
from jobs.state import JobStore, Lease, LeaseBusy

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
MOTO = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto():
    if not os.path.exists(MOTO):
        pytest.skip("moto_server not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3(moto, monkeypatch):
    env = {
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", region_name="us-east-1")
    for b in ("bs-images", "bs-archive"):
        try:
            client.create_bucket(Bucket=b)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    yield client, fsspec.filesystem("s3")
    s3fs.S3FileSystem.clear_instance_cache()


def _put(client, names, seed0=0):
    for i, n in enumerate(names):
        client.put_object(Bucket="bs-images", Key=f"cam/{n}", Body=png_bytes(seed0 + i))


def test_job_over_s3_archives_each_image_once(s3):
    client, fs = s3
    _put(client, ["a.png", "b.png", "day2/c.png"])
    spec = parse_spec(
        {
            "name": "s3job",
            "destination": "s3://bs-archive/jobs/s3job",
            "sources": [{"url": "s3://bs-images/cam"}],
            "shard_size": 2,
            "compare": {"codecs": ["png"], "sample_size": 1},
        }
    )
    drv = FakeDriver()
    r1 = run_job(spec, driver=drv)
    assert (r1.listed, r1.planned, r1.images, r1.status, r1.samples) == (3, 3, 3, "ok", 1)
    assert r1.shards_url.startswith("s3://bs-archive/jobs/s3job/runs/")

    _put(client, ["day3/d.png", "day3/e.png"], seed0=10)
    r2 = run_job(spec, driver=drv)
    assert (r2.listed, r2.planned, r2.images) == (5, 2, 2)
    assert run_job(spec, driver=drv).planned == 0

    keys: Counter = Counter()
    for path in fs.glob("bs-archive/jobs/s3job/runs/*/shard-*.parquet"):
        with fs.open(path, "rb") as f:
            keys.update(pq.read_table(f, columns=["key"]).column("key").to_pylist())
    assert sorted(keys) == ["a.png", "b.png", "day2/c.png", "day3/d.png", "day3/e.png"]
    assert max(keys.values()) == 1
    assert len(JobStore(spec.destination).records()) == 3
    assert not fs.exists("bs-archive/jobs/s3job/_job/lease.json")  # released

    # The report reads the same bucket.
    rep = compute_report(load_archive(spec.destination))
    assert rep["cumulative"]["images"] == 5 and [r["images"] for r in rep["runs"]] == [3, 2, 0]
    assert rep["sample"]["images"] == 2 and rep["cumulative"]["shard_bytes"] == sum(
        fs.size(p) for p in fs.glob("bs-archive/jobs/s3job/runs/*/shard-*.parquet")
    )

    # The lease in the bucket refuses a second run while held.
    holder = Lease(JobStore(spec.destination), job="s3job", ttl_s=60, settle_s=0.2).acquire()
    with pytest.raises(LeaseBusy, match="already running"):
        run_job(spec, driver=drv)
    holder.release()
