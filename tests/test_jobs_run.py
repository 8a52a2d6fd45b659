"""Job runs over a growing local folder: each image once, changes redone, crashes completed, one at a time."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest
from test_jobs_fakes import FakeDriver, child_run_script, write_images

from jobs import cli
from jobs.run import RunFailed, run_job
from jobs.spec import parse_spec
from jobs.state import JobStore, Lease, LeaseBusy
from pipeline.shards import MANIFEST_NAME


def make_spec(tmp_path, **extra):
    d = {
        "name": "photos",
        "destination": str(tmp_path / "archive"),
        "sources": [{"url": str(tmp_path / "images")}],
        "shard_size": 3,
        "compare": {"codecs": ["png", "webp"], "sample_size": 2},
    }
    d.update(extra)
    return parse_spec(d)


def archived_keys(dst) -> Counter:
    """Every key in every shard under dst (read with pyarrow, independently of the job code)."""
    c: Counter = Counter()
    for p in sorted(dst.glob("runs/**/shard-*.parquet")):
        c.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    return c


def test_growing_folder_is_archived_once(tmp_path):
    imgs = tmp_path / "images"
    write_images(imgs, ["a.png", "b.png", "sub/c.png", "d.jpg", "e_bad.png", ".hidden.png", "notes.txt"])
    spec = make_spec(tmp_path)
    drv = FakeDriver()
    r1 = run_job(spec, driver=drv)
    assert (r1.listed, r1.planned, r1.images) == (5, 5, 5)
    assert (r1.ok, r1.stored, r1.errors, r1.status) == (3, 1, 1, "partial")
    assert r1.failures[0]["key"] == "e_bad.png" and "unreadable" in r1.failures[0]["error"]
    assert r1.samples == 2 and r1.spec_hash == spec.hash and r1.cpus == 2.0 and r1.compute_cost_usd > 0

    write_images(imgs, ["f.png", "sub/g.png"], seed0=50)
    r2 = run_job(spec, driver=drv)
    assert (r2.listed, r2.planned, r2.images, r2.status) == (7, 2, 2, "ok")
    r3 = run_job(spec, driver=drv)  # nothing new: a run that compresses nothing
    assert (r3.planned, r3.images, r3.status, r3.shards) == (0, 0, "ok", [])
    assert drv.calls == 2

    keys = archived_keys(tmp_path / "archive")
    assert set(keys) == {"a.png", "b.png", "sub/c.png", "d.jpg", "e_bad.png", "f.png", "sub/g.png"}
    assert max(keys.values()) == 1  # each image once
    assert sorted(drv.keys) == sorted(keys)
    assert [r.seq for r in JobStore(spec.destination).records()] == [1, 2, 3]


def test_changed_files_and_failures(tmp_path):
    imgs = tmp_path / "images"
    write_images(imgs, ["a.png", "b.png", "x_bad.png"])
    spec = make_spec(tmp_path, compare={"sample_size": 0})
    drv = FakeDriver()
    run_job(spec, driver=drv)
    write_images(imgs, ["b.png"], seed0=99)  # new content (size or mtime changes)
    r2 = run_job(spec, driver=drv)
    assert r2.planned == 1 and drv.keys[-1] == "b.png"  # the failure is not retried: same file
    r3 = run_job(spec, driver=drv, retry_failed=True)
    assert r3.planned == 1 and drv.keys[-1] == "x_bad.png"
    idx = JobStore(spec.destination).load_index()
    assert idx["b.png"].run_id == r2.run_id and idx["a.png"].run_id != r2.run_id


def test_several_named_sources(tmp_path):
    write_images(tmp_path / "cams", ["1.png", "2.png"])
    write_images(tmp_path / "scans", ["1.png"], seed0=9)
    spec = make_spec(
        tmp_path,
        sources=[
            {"url": str(tmp_path / "cams"), "name": "cams"},
            {"url": str(tmp_path / "scans"), "name": "scans"},
        ],
    )
    r = run_job(spec, driver=FakeDriver(), sample=False)
    assert r.images == 3 and sorted(JobStore(spec.destination).load_index()) == [
        "cams/1.png",
        "cams/2.png",
        "scans/1.png",
    ]
    assert all(s.split("/")[0] in ("cams", "scans") for s in r.shards)
    assert run_job(spec, driver=FakeDriver(), sample=False).planned == 0


def _crash_a_run(tmp_path, n=10):
    imgs = tmp_path / "images"
    names = write_images(imgs, [f"{i:02d}.png" for i in range(n)])
    spec_path = tmp_path / "job.toml"
    spec_path.write_text(
        f'name = "photos"\ndestination = "{tmp_path / "archive"}"\nshard_size = 3\n[[sources]]\nurl = "{imgs}"\n'
    )
    # A run dies (SIGKILL: no cleanup at all) after writing 2 of its 4 shards, holding the lease.
    assert subprocess.run(child_run_script(str(spec_path), kill_after_shards=2)).returncode == -9
    store = JobStore(str(tmp_path / "archive"))
    [crashed] = store.records()
    assert crashed.status == "running" and store.fs.exists(store.lease_path)
    assert sum(archived_keys(tmp_path / "archive").values()) == 6
    return names, store, crashed


def test_crashed_run_is_completed_by_the_next(tmp_path):
    names, store, crashed = _crash_a_run(tmp_path)
    spec = make_spec(tmp_path, compare={"sample_size": 0})
    drv = FakeDriver()
    r = run_job(spec, driver=drv)  # same host, dead pid: the lease is taken over at once
    assert r.recovered == [crashed.run_id]
    assert sorted(drv.keys) == names[6:]  # only what the crashed run had not finished ...
    assert r.planned == 0  # ... in the crashed run's own folder, so the new run has nothing left
    old = store.records()[0]
    assert (old.status, old.images, old.recovered_by, len(old.shards)) == ("ok", 10, r.run_id, 4)
    assert "crashed" in old.note and old.compress_seconds >= 0
    assert (tmp_path / "archive" / "runs" / crashed.run_id / MANIFEST_NAME).exists()
    keys = archived_keys(tmp_path / "archive")
    assert sorted(keys) == names and max(keys.values()) == 1  # nothing lost, nothing doubled
    assert not store.fs.exists(store.lease_path)


def test_crashed_run_that_cannot_be_completed_is_redone_by_the_new_run(tmp_path):
    names, store, crashed = _crash_a_run(tmp_path)
    spec = make_spec(tmp_path, compare={"sample_size": 0})
    with pytest.raises(RunFailed):  # completing it fails, and so does the new run's own compression
        run_job(spec, driver=FakeDriver(raise_after_shards=0))
    old, new = store.records()
    assert old.status == "crashed" and "could not complete" in old.error and old.images == 6
    assert new.status == "failed" and new.planned == 4 and new.images == 0
    drv = FakeDriver()
    r = run_job(spec, driver=drv)  # completes the failed run; the crashed one is closed for good
    assert r.recovered == [new.run_id] and r.planned == 0 and sorted(drv.keys) == names[6:]
    assert [x.status for x in store.records()] == ["crashed", "ok", "ok"]
    keys = archived_keys(tmp_path / "archive")
    assert sorted(keys) == names and max(keys.values()) == 1


def test_failed_run_is_completed_by_the_next(tmp_path):
    names = write_images(tmp_path / "images", [f"{i}.png" for i in range(7)])
    spec = make_spec(tmp_path)
    with pytest.raises(RunFailed) as ei:
        run_job(spec, driver=FakeDriver(raise_after_shards=1))
    rec = ei.value.record
    assert rec.status == "failed" and "simulated" in rec.error and rec.images == 3 and rec.samples == 0
    drv = FakeDriver()
    r2 = run_job(spec, driver=drv)
    assert r2.recovered == [rec.run_id] and r2.planned == 0 and sorted(drv.keys) == names[3:]
    first = JobStore(spec.destination).records()[0]
    assert (first.status, first.images, first.error) == ("ok", 7, None) and "stopped early" in first.note
    keys = archived_keys(tmp_path / "archive")
    assert sorted(keys) == names and max(keys.values()) == 1
    assert run_job(spec, driver=drv).recovered == []  # done once


def test_sigterm_records_the_run_and_releases_the_lease(tmp_path):
    imgs = tmp_path / "images"
    names = write_images(imgs, [f"{i:02d}.png" for i in range(6)])
    spec_path = tmp_path / "job.toml"
    spec_path.write_text(
        f'name = "p"\ndestination = "{tmp_path / "archive"}"\nshard_size = 2\n[[sources]]\nurl = "{imgs}"\n'
    )
    child = subprocess.Popen(child_run_script(str(spec_path), sleep_per_shard=30))
    deadline = time.monotonic() + 60
    while not list((tmp_path / "archive").glob("runs/*/shard-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)  # systemd stop, Kubernetes deadline
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    store = JobStore(str(tmp_path / "archive"))
    [rec] = store.records()
    assert rec.status == "failed" and "SystemExit" in rec.error and rec.images == 2
    assert not store.fs.exists(store.lease_path)
    drv = FakeDriver()
    r = run_job(make_spec(tmp_path, compare={"sample_size": 0}, shard_size=2), driver=drv)
    assert r.recovered == [rec.run_id] and sorted(drv.keys) == names[2:]
    keys = archived_keys(tmp_path / "archive")
    assert sorted(keys) == names and max(keys.values()) == 1


def test_concurrent_run_is_refused_or_waits(tmp_path, capsys, monkeypatch):
    write_images(tmp_path / "images", ["a.png"])
    spec = make_spec(tmp_path, compare={"sample_size": 0})
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        f'name = "photos"\ndestination = "{spec.destination}"\n[[sources]]\nurl = "{tmp_path / "images"}"\n'
    )
    holder = Lease(JobStore(spec.destination), job="photos", ttl_s=60).acquire()
    with pytest.raises(LeaseBusy):
        run_job(spec, driver=FakeDriver())
    assert cli.main(["job", "run", str(spec_file)]) == 75
    err = capsys.readouterr().err
    assert "already running" in err and holder.holder in err
    assert JobStore(spec.destination).records() == []  # the refused run left no trace

    threading.Timer(0.5, holder.release).start()
    r = run_job(spec, driver=FakeDriver(), wait=True, poll_s=0.1)
    assert r.images == 1


def test_cli_status_and_bad_spec(tmp_path, capsys):
    write_images(tmp_path / "images", ["a.png", "b.png"])
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(
        f'name = "photos"\ndestination = "{tmp_path / "archive"}"\n[[sources]]\nurl = "{tmp_path / "images"}"\n'
    )
    assert cli.main(["job", "status", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert "no runs yet" in out and "pending: 2 images" in out
    (tmp_path / "gone.toml").write_text(
        f'name = "g"\ndestination = "{tmp_path / "a2"}"\n[[sources]]\nurl = "nowhere"\n'
    )
    assert cli.main(["job", "run", str(tmp_path / "gone.toml")]) == 3
    assert "source not found" in capsys.readouterr().err
    assert cli.main(["job", "status", str(tmp_path / "gone.toml")]) == 0
    assert "cannot list the sources" in capsys.readouterr().out
    (tmp_path / "bad.toml").write_text('name = "x"\n')
    assert cli.main(["job", "run", str(tmp_path / "bad.toml")]) == 2
    assert "destination: missing" in capsys.readouterr().err
