"""Job state: atomic files, run records, the index, and the lease (busy, wait, expiry, dead holder)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from jobs.state import IndexEntry, JobStore, Lease, LeaseBusy, LeaseLost, RunRecord, write_atomic


def test_records_and_index_round_trip(tmp_path):
    store = JobStore(str(tmp_path / "dst"))
    assert store.records() == [] and store.load_index() == {} and not store.is_job()
    rid1, seq1 = store.new_run_id([])
    store.write_record(RunRecord(run_id=rid1, seq=seq1, job="j", spec_hash="h", status="ok"))
    rid2, seq2 = store.new_run_id(store.records())
    assert seq2 == 2 and rid2 > rid1  # ids sort by sequence
    store.write_record(RunRecord(run_id=rid2, seq=seq2, job="j", spec_hash="h"))
    assert [r.run_id for r in store.records()] == [rid1, rid2] and store.is_job()
    store.write_index_fragment(
        rid1,
        [
            IndexEntry("a", 1, "etag:x", rid1, "s1", "ok", "ff"),
            IndexEntry("b", 2, "etag:y", rid1, "s1", "error"),
        ],
    )
    store.write_index_fragment(rid2, [IndexEntry("a", 3, "etag:z", rid2, "s9", "ok")])
    idx = store.load_index()
    assert idx["a"].run_id == rid2 and idx["a"].size == 3  # later runs win
    assert idx["b"].status == "error" and idx["b"].file_sha256 is None


def test_write_atomic_leaves_no_temporaries(tmp_path):
    store = JobStore(str(tmp_path))
    write_atomic(store.fs, str(tmp_path / "a" / "f.json"), b"1")
    write_atomic(store.fs, str(tmp_path / "a" / "f.json"), b"22")
    assert (tmp_path / "a" / "f.json").read_bytes() == b"22"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.json"]


def test_second_holder_is_refused_then_gets_it_after_release(tmp_path):
    store = JobStore(str(tmp_path))
    a = Lease(store, job="j", ttl_s=30).acquire()
    a.set_run("000001-x")
    with pytest.raises(LeaseBusy) as ei:
        Lease(store, job="j", ttl_s=30).acquire()
    msg = str(ei.value)
    assert "already running" in msg and a.holder in msg and "000001-x" in msg and "--wait" in msg
    a.release()
    b = Lease(store, job="j", ttl_s=30).acquire()
    assert b.read()["holder"] == b.holder
    b.release()
    assert b.read() is None


def test_wait_gets_the_lease_when_the_holder_releases(tmp_path):
    store = JobStore(str(tmp_path))
    a = Lease(store, job="j", ttl_s=30).acquire()
    threading.Timer(0.5, a.release).start()
    t = time.monotonic()
    b = Lease(store, job="j", ttl_s=30).acquire(wait=True, poll_s=0.1, timeout_s=20)
    assert 0.4 < time.monotonic() - t < 10
    b.release()
    c = Lease(store, job="j", ttl_s=30).acquire()
    with pytest.raises(LeaseBusy):
        Lease(store, job="j", ttl_s=30).acquire(wait=True, poll_s=0.1, timeout_s=0.3)
    c.release()


def test_expired_lease_of_another_host_is_taken_over(tmp_path):
    store = JobStore(str(tmp_path))
    write_atomic(
        store.fs,
        store.lease_path,
        json.dumps(
            {
                "job": "j",
                "holder": "elsewhere:1:x",
                "host": "elsewhere",
                "pid": 1,
                "run_id": "000003-r",
                "expires_at_epoch": time.time() + 60,
            }
        ).encode(),
    )
    with pytest.raises(LeaseBusy):  # another host, not expired: we cannot know it is dead
        Lease(store, job="j").acquire()
    info = json.loads(store.fs.cat_file(store.lease_path))
    info["expires_at_epoch"] = time.time() - 1
    write_atomic(store.fs, store.lease_path, json.dumps(info).encode())
    b = Lease(store, job="j").acquire()
    assert b.took_over["run_id"] == "000003-r"
    b.release()


def test_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    store = JobStore(str(tmp_path))
    code = (
        "import sys; from jobs.state import JobStore, Lease; "
        f"Lease(JobStore({str(tmp_path)!r}), job='j', ttl_s=3600).acquire(); "
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    assert store.fs.exists(store.lease_path)  # it died holding the lease, for an hour
    b = Lease(store, job="j").acquire()
    assert b.took_over is not None
    b.release()


def test_stalled_holder_finds_its_lease_lost(tmp_path):
    store = JobStore(str(tmp_path))
    a = Lease(store, job="j", ttl_s=30).acquire()
    a._stop.set()  # a holder stalled (GC pause, network): it renews no more
    info = json.loads(store.fs.cat_file(store.lease_path))
    info["expires_at_epoch"] = time.time() - 1
    info["host"] = "elsewhere"
    write_atomic(store.fs, store.lease_path, json.dumps(info).encode())
    b = Lease(store, job="j", ttl_s=30).acquire()
    with pytest.raises(LeaseLost):
        a.check()
    a.renew()  # a lost lease is never written again
    assert json.loads(store.fs.cat_file(store.lease_path))["holder"] == b.holder
    a.release()  # and releasing it does not delete the successor's lease
    assert store.fs.exists(store.lease_path)
    b.release()


def test_renewal_pushes_the_expiry(tmp_path):
    store = JobStore(str(tmp_path))
    a = Lease(store, job="j", ttl_s=1.5).acquire()  # renews every 0.5 s
    first = a.read()["expires_at_epoch"]
    time.sleep(1.2)
    assert a.read()["expires_at_epoch"] > first
    a.check()
    a.release()


def test_racing_for_a_free_lease_exactly_one_wins(tmp_path):
    store = JobStore(str(tmp_path))
    leases = [Lease(store, job="j", ttl_s=30) for _ in range(8)]
    results = [None] * len(leases)
    barrier = threading.Barrier(len(leases))

    def go(i):
        barrier.wait()
        results[i] = leases[i].try_acquire()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    winner = leases[results.index(True)]
    assert json.loads(store.fs.cat_file(store.lease_path))["holder"] == winner.holder
    assert [p.name for p in tmp_path.joinpath("_job").iterdir()] == ["lease.json"]  # no temporaries left
